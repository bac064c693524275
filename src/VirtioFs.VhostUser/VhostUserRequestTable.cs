using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VirtioFs.VhostUser;

/// <summary>The shape a request's payload must have (vhost-user.rst "Payload" and "Front-end message types").</summary>
public enum PayloadRule
{
    /// <summary>No payload.</summary>
    Empty,
    /// <summary>A single u64.</summary>
    U64,
    /// <summary>A vring state description (index, num).</summary>
    VringState,
    /// <summary>A vring address description.</summary>
    VringAddress,
    /// <summary>A u64 whose bits 0-7 are the ring index and bit 8 says "no fd"; the other bits are zero.</summary>
    VringFile,
    /// <summary>A memory regions description: a count of 1..8, then that many regions.</summary>
    MemoryTable,
    /// <summary>A single memory region description.</summary>
    SingleRegion,
    /// <summary>A log description (size and offset of the log in the attached fd).</summary>
    Log,
    /// <summary>Nothing but the fd; an (ignored) u64 some front-ends send along is tolerated.</summary>
    FdOnly,
    /// <summary>A device config space header and exactly <c>size</c> bytes, inside VHOST_USER_MAX_CONFIG_SIZE.</summary>
    Config,
}

/// <summary>How many file descriptors travel with a request (vhost-user.rst "Communication", per-request text).</summary>
public enum FdRule
{
    None,
    /// <summary>Exactly one.</summary>
    One,
    /// <summary>Zero or one: REM_MEM_REG ("MAY accept ... one file descriptor", which is closed unused) and SET_LOG_BASE
    /// (the fd comes only with LOG_SHMFD).</summary>
    Optional,
    /// <summary>One per region of the memory table, in the same order.</summary>
    OnePerRegion,
    /// <summary>One, unless bit 8 of the payload (the invalid-FD flag) says there is none.</summary>
    OneUnlessNoFdFlag,
}

/// <summary>What the back-end sends back (vhost-user.rst "Communication" and <c>:reply payload:</c>).</summary>
public enum ReplyShape
{
    /// <summary>No reply, except the u64 status of REPLY_ACK when the request carries NEED_REPLY.</summary>
    AckIfAsked,
    /// <summary>Always a u64.</summary>
    U64,
    /// <summary>Always a vring state description.</summary>
    VringState,
    /// <summary>Always a device config space (header and the bytes read; size 0 means failure).</summary>
    Config,
    /// <summary>A u64 when VHOST_USER_PROTOCOL_F_LOG_SHMFD was negotiated, else as <see cref="AckIfAsked"/>.</summary>
    U64IfLogShmfd,
}

/// <summary>What became of one request: applied, refused, or applied and already answered with its reply body.</summary>
internal enum RequestOutcome
{
    Ok,
    Failed,
    Replied,
}

/// <summary>Applies one validated request to a connection.</summary>
internal delegate RequestOutcome RequestHandler(VhostUserConnection connection, VhostUserRequest request, ReadOnlySpan<byte> payload);

/// <summary>One row of <see cref="VhostUserRequestTable"/>: everything the transport knows about a request.</summary>
public sealed class VhostUserRequestSpec
{
    internal VhostUserRequestSpec(VhostUserRequest request, string specName, PayloadRule payload, FdRule fds, ReplyShape reply,
        RequestHandler handler)
    {
        Request = request;
        SpecName = specName;
        Payload = payload;
        Fds = fds;
        Reply = reply;
        Handler = handler;
    }

    public VhostUserRequest Request { get; }

    /// <summary>The name vhost-user.rst gives it (VHOST_USER_...).</summary>
    public string SpecName { get; }

    public PayloadRule Payload { get; }
    public FdRule Fds { get; }
    public ReplyShape Reply { get; }

    internal RequestHandler Handler { get; }

    /// <summary>Null when <paramref name="payload"/> and <paramref name="fdCount"/> have this request's shape, else why not.</summary>
    public string? Validate(ReadOnlySpan<byte> payload, int fdCount)
    {
        int expectedFds;
        switch (Payload)
        {
            case PayloadRule.Empty:
                return Exactly(payload, 0, fdCount);
            case PayloadRule.U64:
                return Exactly(payload, sizeof(ulong), fdCount);
            case PayloadRule.VringState:
                return Exactly(payload, Unsafe.SizeOf<VhostVringState>(), fdCount);
            case PayloadRule.VringAddress:
                return Exactly(payload, Unsafe.SizeOf<VhostVringAddr>(), fdCount);
            case PayloadRule.SingleRegion:
                return Exactly(payload, Unsafe.SizeOf<VhostUserSingleMemoryRegion>(), fdCount);
            case PayloadRule.Log:
                return Exactly(payload, Unsafe.SizeOf<VhostUserLog>(), fdCount);
            case PayloadRule.FdOnly:
                return payload.Length is 0 or sizeof(ulong) ? CheckFds(fdCount, 1) : $"payload of {payload.Length} bytes, expected 0 or 8";
            case PayloadRule.VringFile:
            {
                if (payload.Length != sizeof(ulong))
                {
                    return $"payload of {payload.Length} bytes, expected 8";
                }
                ulong u = MemoryMarshal.Read<ulong>(payload);
                if ((u & ~VringFileMask) != 0)
                {
                    return $"reserved bits set in 0x{u:x}";
                }
                expectedFds = (u & VringNoFdFlag) != 0 ? 0 : 1;
                return CheckFds(fdCount, expectedFds);
            }
            case PayloadRule.MemoryTable:
            {
                int header = Unsafe.SizeOf<VhostUserMemory>();
                if (payload.Length < header)
                {
                    return $"payload of {payload.Length} bytes";
                }
                uint n = MemoryMarshal.Read<VhostUserMemory>(payload).nregions;
                if (n == 0 || n > VhostUserMemory.MaxRegions)
                {
                    return $"{n} regions (1..{VhostUserMemory.MaxRegions})";
                }
                if (payload.Length != header + (int)n * Unsafe.SizeOf<VhostUserMemoryRegion>())
                {
                    return $"payload of {payload.Length} bytes for {n} regions";
                }
                return CheckFds(fdCount, (int)n);
            }
            case PayloadRule.Config:
            {
                if (payload.Length < VhostUserConfig.HeaderSize)
                {
                    return $"payload of {payload.Length} bytes";
                }
                VhostUserConfig c = MemoryMarshal.Read<VhostUserConfig>(payload);
                if (c.size > VhostUserConfig.MaxSize || c.offset > VhostUserConfig.MaxSize - c.size)
                {
                    return $"config range {c.offset}+{c.size} exceeds {VhostUserConfig.MaxSize}";
                }
                if (payload.Length != VhostUserConfig.HeaderSize + (int)c.size)
                {
                    return $"payload of {payload.Length} bytes for {c.size} config bytes";
                }
                return CheckFds(fdCount, 0);
            }
            default:
                return $"no payload rule for {Request}";
        }
    }

    /// <summary>Bits 0-7 of a vring file payload: the ring index.</summary>
    internal const ulong VringIndexMask = 0xff;

    /// <summary>Bit 8 of a vring file payload: no fd is attached (vhost-user.rst "invalid FD flag").</summary>
    internal const ulong VringNoFdFlag = 0x100;

    private const ulong VringFileMask = VringIndexMask | VringNoFdFlag;

    private string? Exactly(ReadOnlySpan<byte> payload, int size, int fdCount) =>
        payload.Length == size ? CheckFds(fdCount, -1) : $"payload of {payload.Length} bytes, expected {size}";

    /// <summary>Checks the fd count against <see cref="Fds"/>; <paramref name="expected"/> is the count the payload
    /// demands where the rule depends on it.</summary>
    private string? CheckFds(int fdCount, int expected)
    {
        (int min, int max) = Fds switch
        {
            FdRule.None => (0, 0),
            FdRule.One => (1, 1),
            FdRule.Optional => (0, 1),
            _ => (expected, expected), // OnePerRegion, OneUnlessNoFdFlag
        };
        return fdCount >= min && fdCount <= max ? null
            : min == max ? $"{fdCount} fds, expected {min}" : $"{fdCount} fds, expected {min}..{max}";
    }
}

/// <summary>
/// The one description of the front-end requests this back-end implements (the single dispatcher over one request
/// enum of rust-vmm's backend_req_handler.rs, written from qemu docs/interop/vhost-user.rst "Front-end message types"):
/// per request its payload rule, its fds, its reply and the handler that applies it. The connection validates, applies
/// and answers every message from this table alone; a request that is not in it is refused.
/// </summary>
public static class VhostUserRequestTable
{
    private static readonly VhostUserRequestSpec[] Rows =
    [
        new(VhostUserRequest.GetFeatures, "VHOST_USER_GET_FEATURES", PayloadRule.Empty, FdRule.None, ReplyShape.U64,
            static (c, _, _) => c.GetFeatures()),
        new(VhostUserRequest.SetFeatures, "VHOST_USER_SET_FEATURES", PayloadRule.U64, FdRule.None, ReplyShape.AckIfAsked,
            static (c, _, p) => c.SetFeatures(MemoryMarshal.Read<ulong>(p))),
        new(VhostUserRequest.SetOwner, "VHOST_USER_SET_OWNER", PayloadRule.Empty, FdRule.None, ReplyShape.AckIfAsked,
            static (c, _, _) => c.SetOwner()),
        new(VhostUserRequest.ResetOwner, "VHOST_USER_RESET_OWNER", PayloadRule.Empty, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, _) => c.Reset(r)),
        new(VhostUserRequest.SetMemTable, "VHOST_USER_SET_MEM_TABLE", PayloadRule.MemoryTable, FdRule.OnePerRegion, ReplyShape.AckIfAsked,
            static (c, r, p) => c.SetMemTable(r, p)),
        new(VhostUserRequest.SetLogBase, "VHOST_USER_SET_LOG_BASE", PayloadRule.Log, FdRule.Optional, ReplyShape.U64IfLogShmfd,
            static (c, _, _) => c.SetLogBase()),
        new(VhostUserRequest.SetLogFd, "VHOST_USER_SET_LOG_FD", PayloadRule.FdOnly, FdRule.One, ReplyShape.AckIfAsked,
            static (c, _, _) => c.SetLogFd()),
        new(VhostUserRequest.SetVringNum, "VHOST_USER_SET_VRING_NUM", PayloadRule.VringState, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringState(r, p)),
        new(VhostUserRequest.SetVringAddr, "VHOST_USER_SET_VRING_ADDR", PayloadRule.VringAddress, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, p) => c.SetVringAddr(r, p)),
        new(VhostUserRequest.SetVringBase, "VHOST_USER_SET_VRING_BASE", PayloadRule.VringState, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringState(r, p)),
        new(VhostUserRequest.GetVringBase, "VHOST_USER_GET_VRING_BASE", PayloadRule.VringState, FdRule.None, ReplyShape.VringState,
            static (c, r, p) => c.VringState(r, p)),
        new(VhostUserRequest.SetVringKick, "VHOST_USER_SET_VRING_KICK", PayloadRule.VringFile, FdRule.OneUnlessNoFdFlag, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringFile(r, p)),
        new(VhostUserRequest.SetVringCall, "VHOST_USER_SET_VRING_CALL", PayloadRule.VringFile, FdRule.OneUnlessNoFdFlag, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringFile(r, p)),
        new(VhostUserRequest.SetVringErr, "VHOST_USER_SET_VRING_ERR", PayloadRule.VringFile, FdRule.OneUnlessNoFdFlag, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringFile(r, p)),
        new(VhostUserRequest.GetProtocolFeatures, "VHOST_USER_GET_PROTOCOL_FEATURES", PayloadRule.Empty, FdRule.None, ReplyShape.U64,
            static (c, _, _) => c.GetProtocolFeatures()),
        new(VhostUserRequest.SetProtocolFeatures, "VHOST_USER_SET_PROTOCOL_FEATURES", PayloadRule.U64, FdRule.None, ReplyShape.AckIfAsked,
            static (c, _, p) => c.SetProtocolFeatures(MemoryMarshal.Read<ulong>(p))),
        new(VhostUserRequest.GetQueueNum, "VHOST_USER_GET_QUEUE_NUM", PayloadRule.Empty, FdRule.None, ReplyShape.U64,
            static (c, _, _) => c.GetQueueNum()),
        new(VhostUserRequest.SetVringEnable, "VHOST_USER_SET_VRING_ENABLE", PayloadRule.VringState, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringState(r, p)),
        // SET_SLAVE_REQ_FD in older copies of the spec.
        new(VhostUserRequest.SetBackendReqFd, "VHOST_USER_SET_BACKEND_REQ_FD", PayloadRule.FdOnly, FdRule.One, ReplyShape.AckIfAsked,
            static (c, _, _) => c.SetBackendReqFd()),
        new(VhostUserRequest.GetConfig, "VHOST_USER_GET_CONFIG", PayloadRule.Config, FdRule.None, ReplyShape.Config,
            static (c, _, p) => c.GetConfig(p)),
        // virtio-fs config space is read-only for the driver (virtio spec 1.2 §5.11.4): accepted and ignored.
        new(VhostUserRequest.SetConfig, "VHOST_USER_SET_CONFIG", PayloadRule.Config, FdRule.None, ReplyShape.AckIfAsked,
            static (_, _, _) => RequestOutcome.Ok),
        new(VhostUserRequest.ResetDevice, "VHOST_USER_RESET_DEVICE", PayloadRule.Empty, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, _) => c.Reset(r)),
        new(VhostUserRequest.VringKick, "VHOST_USER_VRING_KICK", PayloadRule.VringState, FdRule.None, ReplyShape.AckIfAsked,
            static (c, r, p) => c.VringState(r, p)),
        new(VhostUserRequest.GetMaxMemSlots, "VHOST_USER_GET_MAX_MEM_SLOTS", PayloadRule.Empty, FdRule.None, ReplyShape.U64,
            static (c, _, _) => c.GetMaxMemSlots()),
        new(VhostUserRequest.AddMemReg, "VHOST_USER_ADD_MEM_REG", PayloadRule.SingleRegion, FdRule.One, ReplyShape.AckIfAsked,
            static (c, r, p) => c.AddRemoveMemReg(r, p)),
        new(VhostUserRequest.RemMemReg, "VHOST_USER_REM_MEM_REG", PayloadRule.SingleRegion, FdRule.Optional, ReplyShape.AckIfAsked,
            static (c, r, p) => c.AddRemoveMemReg(r, p)),
        new(VhostUserRequest.SetStatus, "VHOST_USER_SET_STATUS", PayloadRule.U64, FdRule.None, ReplyShape.AckIfAsked,
            static (c, _, p) => c.SetStatus(MemoryMarshal.Read<ulong>(p))),
        new(VhostUserRequest.GetStatus, "VHOST_USER_GET_STATUS", PayloadRule.Empty, FdRule.None, ReplyShape.U64,
            static (c, _, _) => c.GetStatus()),
    ];

    /// <summary>The rows indexed by request id (ids are small: 1..40).</summary>
    private static readonly VhostUserRequestSpec?[] ById = IndexById();

    /// <summary>Every request this back-end implements, in id order.</summary>
    public static IReadOnlyList<VhostUserRequestSpec> All => Rows;

    /// <summary>The row for <paramref name="request"/>, or false for a request this back-end does not implement.</summary>
    public static bool TryGet(VhostUserRequest request, out VhostUserRequestSpec spec)
    {
        spec = (uint)request < (uint)ById.Length ? ById[(int)request]! : null!;
        return spec is not null;
    }

    private static VhostUserRequestSpec?[] IndexById()
    {
        var byId = new VhostUserRequestSpec?[(int)Rows.Max(r => r.Request) + 1];
        foreach (VhostUserRequestSpec row in Rows)
        {
            if (byId[(int)row.Request] is not null)
            {
                throw new InvalidOperationException($"{row.Request} is in the request table twice");
            }
            byId[(int)row.Request] = row;
        }
        return byId;
    }
}
