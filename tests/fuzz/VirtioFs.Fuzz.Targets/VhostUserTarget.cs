using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Tmds.Linux;
using VirtioFs.TestSupport;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;

namespace VirtioFs.Fuzz;

/// <summary>
/// A vhost-user front-end's message stream, served by the real <see cref="VhostUserServer.ServeConnection"/> over a
/// socketpair: message decoding and validation, feature negotiation, memory tables (the harness attaches a real memfd
/// of 1 MiB guest RAM, so regions map), vring set-up and the ring workers. Each record is a message,
/// <c>u32 request | u32 flags | u32 size | payload</c>, sent with the fds vhost-user.rst gives the request (flags bit 31:
/// one fd too many, bit 30: none; both cleared before sending). Request 0xffffffff is the harness's, not sent: its
/// payload <c>u32 offset | bytes</c> is written into guest RAM (rings and chains for the workers to walk). After the
/// last message the front-end hangs up; the back-end must answer with well-formed replies, end, log no exception,
/// close every fd it was given and stay within the allocation cap on its own thread.
/// </summary>
public sealed unsafe class VhostUserTarget : IFuzzTarget
{
    public const ulong RegionGpa = 0x1000_0000;
    public const ulong RegionSize = 1 << 20;
    private const uint HarnessWriteMemory = 0xffff_ffff;
    private const uint HarnessExtraFd = 1u << 31, HarnessNoFds = 1u << 30;
    private const int MaxMessages = 64;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly TestGuestMemory _memory = TestGuestMemory.Single(RegionSize);
    private readonly int _eventFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    private readonly ExceptionWatch _watch = new();
    private readonly byte[] _replyBuffer = new byte[64 * 1024];
    private int _replies;

    public VhostUserTarget()
    {
        // Warm up once so lazily opened runtime fds are not counted as a leak of the first input.
        var warmUp = new SeedWriter();
        warmUp.Msg(VhostUserRequest.GetQueueNum, []);
        Run(warmUp.ToArray());
        _warm = true;
    }

    /// <summary>Set after the warm-up input: the runtime opens some fds lazily on first use.</summary>
    private readonly bool _warm;

    public string Name => "vhost-user";

    /// <summary>What the last input got the back-end to do (tests check the seeds reach the rings).</summary>
    public (ulong Features, int Chains, int Replies) LastOutcome { get; private set; }

    public int MaxInput => 16 * 1024;

    // ---- seeds: the negotiations QEMU 7.2 and cloud-hypervisor send (VhostUserTestHarness documents both) ----

    private static readonly ulong Features = (1UL << VirtioFeatureBits.Version1) | (1UL << VhostUserFeatureBits.ProtocolFeatures)
        | (1UL << VirtioFeatureBits.EventIdx) | (1UL << VirtioFeatureBits.IndirectDesc);

    private static readonly ulong Protocol = (1UL << VhostUserProtocolFeatureBits.Mq) | (1UL << VhostUserProtocolFeatureBits.ReplyAck)
        | (1UL << VhostUserProtocolFeatureBits.BackendReq) | (1UL << VhostUserProtocolFeatureBits.ConfigureMemSlots)
        | (1UL << VhostUserProtocolFeatureBits.Config);

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        yield return ("qemu72", Qemu72(withChain: false));
        yield return ("qemu72-chain", Qemu72(withChain: true));
        yield return ("cloud-hypervisor", CloudHypervisor());
        var reset = new SeedWriter();
        reset.Bytes(Qemu72(withChain: false));
        reset.Msg(VhostUserRequest.RemMemReg, SingleRegion(), VhostUserFlags.NeedReply);
        reset.Msg(VhostUserRequest.ResetDevice, []);
        reset.Msg(VhostUserRequest.SetMemTable, MemTable(), VhostUserFlags.NeedReply);
        reset.Msg(VhostUserRequest.SetConfig, Config(0, 4), 0);
        reset.Msg(VhostUserRequest.SetLogBase, new byte[16]);
        reset.Msg(VhostUserRequest.ResetOwner, []);
        yield return ("reset", reset.ToArray());
    }

    private static byte[] Qemu72(bool withChain)
    {
        var w = new SeedWriter();
        w.Msg(VhostUserRequest.GetFeatures, []);
        w.Msg(VhostUserRequest.GetProtocolFeatures, []);
        w.Msg(VhostUserRequest.SetProtocolFeatures, U64(Protocol));
        w.Msg(VhostUserRequest.GetQueueNum, []);
        w.Msg(VhostUserRequest.GetMaxMemSlots, []);
        w.Msg(VhostUserRequest.SetBackendReqFd, [], VhostUserFlags.NeedReply);
        w.Msg(VhostUserRequest.SetOwner, []);
        w.Msg(VhostUserRequest.GetFeatures, []);
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringCall, U64(q));
            w.Msg(VhostUserRequest.SetVringErr, U64(q));
        }
        w.Msg(VhostUserRequest.SetFeatures, U64(Features));
        w.Msg(VhostUserRequest.AddMemReg, SingleRegion(), VhostUserFlags.NeedReply);
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringNum, State(q, 256));
            w.Msg(VhostUserRequest.SetVringBase, State(q, 0));
            w.Msg(VhostUserRequest.SetVringAddr, Addr(q));
            w.Msg(VhostUserRequest.SetVringKick, U64(q));
        }
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringEnable, State(q, 1));
        }
        if (withChain)
        {
            // One chain on queue 1: descriptor 0 readable 64 bytes at +0x8000, descriptor 1 writable 64 at +0x9000.
            var table = new byte[32];
            BinaryPrimitives.WriteUInt64LittleEndian(table, RegionGpa + 0x8000);
            BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(8), 64);
            BinaryPrimitives.WriteUInt16LittleEndian(table.AsSpan(12), VirtqDescFlags.Next);
            BinaryPrimitives.WriteUInt16LittleEndian(table.AsSpan(14), 1);
            BinaryPrimitives.WriteUInt64LittleEndian(table.AsSpan(16), RegionGpa + 0x9000);
            BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(24), 64);
            BinaryPrimitives.WriteUInt16LittleEndian(table.AsSpan(28), VirtqDescFlags.Write);
            w.Memory(RingOffset(1), table);
            w.Memory(RingOffset(1) + 0x1000, [0, 0, 1, 0, 0, 0]); // avail: flags 0, idx 1, ring[0] = 0
            w.Msg(VhostUserRequest.VringKick, State(1, 0));
        }
        w.Msg(VhostUserRequest.GetConfig, Config(0, 40));
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringEnable, State(q, 0));
            w.Msg(VhostUserRequest.GetVringBase, State(q, 0));
        }
        return w.ToArray();
    }

    private static byte[] CloudHypervisor()
    {
        var w = new SeedWriter();
        const uint Need = VhostUserFlags.NeedReply;
        w.Msg(VhostUserRequest.SetOwner, []);
        w.Msg(VhostUserRequest.GetFeatures, []);
        w.Msg(VhostUserRequest.GetProtocolFeatures, []);
        w.Msg(VhostUserRequest.SetProtocolFeatures, U64(Protocol & ~(1UL << VhostUserProtocolFeatureBits.Config)));
        w.Msg(VhostUserRequest.GetQueueNum, []);
        w.Msg(VhostUserRequest.SetFeatures, U64(Features), Need);
        w.Msg(VhostUserRequest.SetMemTable, MemTable(), Need);
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringNum, State(q, 256), Need);
        }
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringAddr, Addr(q), Need);
            w.Msg(VhostUserRequest.SetVringBase, State(q, 0), Need);
            w.Msg(VhostUserRequest.SetVringCall, U64(q), Need);
            w.Msg(VhostUserRequest.SetVringKick, U64(q), Need);
        }
        for (uint q = 0; q < 2; q++)
        {
            w.Msg(VhostUserRequest.SetVringEnable, State(q, 1), Need);
        }
        return w.ToArray();
    }

    private static ulong RingOffset(uint q) => 0x10000UL * (q + 1);

    private static byte[] U64(ulong v) => BitConverter.GetBytes(v);

    private static byte[] Struct<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    private static byte[] State(uint index, uint num) => Struct(new VhostVringState { index = index, num = num });

    private static byte[] Addr(uint q)
    {
        ulong user = RegionGpa + TestGuestMemory.UserAddressBias + RingOffset(q);
        return Struct(new VhostVringAddr { index = q, desc_user_addr = user, avail_user_addr = user + 0x1000, used_user_addr = user + 0x2000 });
    }

    private static VhostUserMemoryRegion Region() => new()
    {
        guest_phys_addr = RegionGpa, memory_size = RegionSize, userspace_addr = RegionGpa + TestGuestMemory.UserAddressBias,
    };

    private static byte[] SingleRegion() => Struct(new VhostUserSingleMemoryRegion { region = Region() });

    private static byte[] MemTable() => [.. Struct(new VhostUserMemory { nregions = 1 }), .. Struct(Region())];

    private static byte[] Config(uint offset, uint size) =>
        [.. Struct(new VhostUserConfig { offset = offset, size = size }), .. new byte[size]];

    private sealed class SeedWriter
    {
        private readonly List<byte> _bytes = [];

        public void Msg(VhostUserRequest request, byte[] payload, uint flags = 0)
        {
            _bytes.AddRange(BitConverter.GetBytes((uint)request));
            _bytes.AddRange(BitConverter.GetBytes(VhostUserFlags.Version | flags));
            _bytes.AddRange(BitConverter.GetBytes((uint)payload.Length));
            _bytes.AddRange(payload);
        }

        public void Memory(ulong offset, byte[] data)
        {
            _bytes.AddRange(BitConverter.GetBytes(HarnessWriteMemory));
            _bytes.AddRange(BitConverter.GetBytes(0u));
            _bytes.AddRange(BitConverter.GetBytes((uint)(4 + data.Length)));
            _bytes.AddRange(BitConverter.GetBytes((uint)offset));
            _bytes.AddRange(data);
        }

        public void Bytes(byte[] data) => _bytes.AddRange(data);

        public byte[] ToArray() => [.. _bytes];
    }

    // ---- one input ----

    public void Run(ReadOnlySpan<byte> input)
    {
        int inputLength = input.Length;
        new Span<byte>(_memory.Host(RegionGpa, RegionSize), (int)RegionSize).Clear();
        int fdsBefore = OpenFds.Count(IsOurs);
        int* sv = stackalloc int[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        {
            throw new IOException($"socketpair: errno {errno}");
        }
        int front = sv[0];
        var back = new Socket(new SafeSocketHandle(sv[1], ownsHandle: true));
        var backend = new RecordingBackend(numQueues: 2, maxQueueSize: 1024, config: new byte[40]);
        Exception? serverFailure = null;
        long serverAllocated = 0;
        var server = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                VhostUserServer.ServeConnection(back, backend, _watch);
            }
#pragma warning disable CA1031 // Whatever escapes the server is the finding; it is rethrown on the fuzzer's thread.
            catch (Exception e)
#pragma warning restore CA1031
            {
                serverFailure = e;
            }
            serverAllocated = GC.GetAllocatedBytesForCurrentThread() - before;
        })
        { IsBackground = true, Name = "vhost-user fuzz server" };
        server.Start();
        int messages = 0;
        Span<int> fdBuffer = stackalloc int[10];
        try
        {
            while (input.Length >= 12 && messages++ < MaxMessages)
            {
                uint request = BinaryPrimitives.ReadUInt32LittleEndian(input);
                uint flags = BinaryPrimitives.ReadUInt32LittleEndian(input[4..]);
                uint size = BinaryPrimitives.ReadUInt32LittleEndian(input[8..]);
                int present = (int)Math.Min(size, (uint)(input.Length - 12));
                ReadOnlySpan<byte> message = input[..(12 + present)];
                input = input[(12 + present)..];
                if (request == HarnessWriteMemory)
                {
                    WriteMemory(message[12..]);
                    continue;
                }
                Span<byte> wire = message.ToArray();
                BinaryPrimitives.WriteUInt32LittleEndian(wire[4..], flags & ~(HarnessExtraFd | HarnessNoFds));
                int fdCount = (flags & HarnessNoFds) != 0 ? 0 : FdsFor((VhostUserRequest)request, wire[12..]) + ((flags & HarnessExtraFd) != 0 ? 1 : 0);
                Span<int> fds = fdBuffer[..fdCount];
                bool memory = request is (uint)VhostUserRequest.SetMemTable or (uint)VhostUserRequest.AddMemReg or (uint)VhostUserRequest.RemMemReg;
                fds.Fill(memory ? _memory.Regions[0].Fd : _eventFd);
                if (UnixMessaging.SendWithFds(front, wire, fds) != 0)
                {
                    break; // the back-end hung up (an oversized message); that is its right
                }
            }
            // Hang up; the back-end must end. Its replies (at most 64 small ones) wait in the socket buffer meanwhile.
            shutdown(front, SHUT_WR);
            if (!server.Join(Timeout))
            {
                throw new FuzzFailure("the back-end did not end after the front-end hung up");
            }
            back.Dispose();
            DrainReplies(front);
        }
        finally
        {
            close(front);
            if (!server.IsAlive)
            {
                back.Dispose();
            }
        }
        if (serverFailure is not null)
        {
            throw new FuzzFailure($"ServeConnection threw: {serverFailure}");
        }
        _watch.ThrowIfSwallowed(Name);
        if (serverAllocated > FuzzRunner.AllocationCap(inputLength))
        {
            throw new FuzzFailure($"the back-end allocated {serverAllocated} bytes for one input");
        }
        LastOutcome = (backend.AcknowledgedFeatures, backend.Chains.Count, _replies);
        int fdsAfter = OpenFds.Count(IsOurs);
        if (_warm && fdsAfter > fdsBefore)
        {
            throw new FuzzFailure($"{fdsAfter - fdsBefore} fds leaked by one input; open now: {OpenFds.Describe(IsOurs)}");
        }
    }

    /// <summary>The fds vhost-user.rst attaches to <paramref name="request"/> with this payload.</summary>
    private static int FdsFor(VhostUserRequest request, ReadOnlySpan<byte> payload) => request switch
    {
        VhostUserRequest.SetMemTable => payload.Length >= 4 ? (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(payload), 8u) : 0,
        VhostUserRequest.AddMemReg or VhostUserRequest.SetLogBase or VhostUserRequest.SetLogFd or VhostUserRequest.SetBackendReqFd => 1,
        VhostUserRequest.SetVringKick or VhostUserRequest.SetVringCall or VhostUserRequest.SetVringErr =>
            payload.Length >= 8 && (BinaryPrimitives.ReadUInt64LittleEndian(payload) & 0x100) == 0 ? 1 : 0,
        _ => 0,
    };

    private void WriteMemory(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 4)
        {
            return;
        }
        ulong offset = BinaryPrimitives.ReadUInt32LittleEndian(payload) % RegionSize;
        ReadOnlySpan<byte> data = payload[4..];
        data = data[..(int)Math.Min((ulong)data.Length, RegionSize - offset)];
        data.CopyTo(new Span<byte>(_memory.Host(RegionGpa + offset, (ulong)data.Length), data.Length));
    }

    /// <summary>Reads replies until the back-end closes; each must be a well-formed reply (vhost-user.rst "Header").</summary>
    private void DrainReplies(int fd)
    {
        int length = 0;
        while (true)
        {
            pollfd p = new() { fd = fd, events = POLLIN };
            if (poll(&p, 1, (int)Timeout.TotalMilliseconds) <= 0)
            {
                throw new FuzzFailure("replies did not end after the back-end closed");
            }
            if (length == _replyBuffer.Length)
            {
                throw new FuzzFailure("more reply bytes than 64 messages can ask for");
            }
            int n;
            fixed (byte* b = &_replyBuffer[length])
            {
                n = (int)recv(fd, b, _replyBuffer.Length - length, 0);
            }
            if (n < 0)
            {
                if (errno == EINTR)
                {
                    continue;
                }
                break; // ECONNRESET after an abrupt hang-up
            }
            if (n == 0)
            {
                break;
            }
            length += n;
        }
        ReadOnlySpan<byte> replies = _replyBuffer.AsSpan(0, length);
        _replies = 0;
        while (!replies.IsEmpty)
        {
            _replies++;
            if (replies.Length < VhostUserMsgHeader.Size)
            {
                throw new FuzzFailure($"{replies.Length} stray bytes after the last reply");
            }
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(replies[4..]);
            uint size = BinaryPrimitives.ReadUInt32LittleEndian(replies[8..]);
            if ((flags & VhostUserFlags.Reply) == 0 || (flags & VhostUserFlags.VersionMask) != VhostUserFlags.Version
                || size > VhostUserConfig.HeaderSize + VhostUserConfig.MaxSize || replies.Length < VhostUserMsgHeader.Size + size)
            {
                throw new FuzzFailure($"malformed reply: flags 0x{flags:x}, size {size}, {replies.Length} bytes left");
            }
            replies = replies[(VhostUserMsgHeader.Size + (int)size)..];
        }
    }


    /// <summary>Guest RAM, eventfds and sockets: what the front-end hands the back-end and the back-end must close.</summary>
    private static bool IsOurs(string target) => target.StartsWith("/memfd:vfs-test-guest", StringComparison.Ordinal)
        || target == "anon_inode:[eventfd]" || target.StartsWith("socket:", StringComparison.Ordinal);

    public void Dispose()
    {
        close(_eventFd);
        _memory.Dispose();
    }
}
