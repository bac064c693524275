using System.Net.Sockets;
using System.Runtime.InteropServices;
using Tmds.Linux;
using VirtioFs.VhostUser;
using static Tmds.Linux.LibC;

namespace VirtioFs.TestSupport;

/// <summary>A reply from the back-end.</summary>
public sealed record VhostUserReply(VhostUserRequest Request, uint Flags, byte[] Body)
{
    public ulong U64 => Body.Length == 8 ? MemoryMarshal.Read<ulong>(Body)
        : throw new InvalidOperationException($"{Request} reply has {Body.Length} bytes, not a u64");
}

/// <summary>The back-end said no (REPLY_ACK with a non-zero status, or a malformed reply).</summary>
public sealed class VhostUserException(string message) : Exception(message);

/// <summary>
/// A vhost-user front-end for tests (the VMM's side of qemu vhost-user.rst): sends real messages with fds over a Unix
/// socket and reads replies. Typed helpers cover every request the back-end implements; <see cref="Send"/> and
/// <see cref="ReadReply"/> let tests send anything, malformed included.
/// </summary>
public sealed unsafe class VhostUserFrontEnd : IDisposable
{
    private readonly Socket _socket;
    private readonly int _fd;

    public VhostUserFrontEnd(Socket socket)
    {
        _socket = socket;
        _fd = (int)socket.Handle;
        ReplyTimeout = TimeSpan.FromSeconds(10);
    }

    /// <summary>Connects to a listening back-end socket.</summary>
    public static VhostUserFrontEnd Connect(string socketPath)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        return new VhostUserFrontEnd(socket);
    }

    /// <summary>Creates a connected socketpair: the front-end and the socket to give the back-end.</summary>
    public static (VhostUserFrontEnd FrontEnd, Socket BackEnd) CreatePair()
    {
        int* sv = stackalloc int[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        {
            throw new IOException($"socketpair failed: errno {errno}");
        }
        var front = new Socket(new SafeSocketHandle(sv[0], ownsHandle: true));
        var back = new Socket(new SafeSocketHandle(sv[1], ownsHandle: true));
        return (new VhostUserFrontEnd(front), back);
    }

    /// <summary>Set NEED_REPLY on every request without a reply body and check the ack, as cloud-hypervisor does once
    /// REPLY_ACK is negotiated.</summary>
    public bool AlwaysNeedReply { get; set; }

    public TimeSpan ReplyTimeout { get; set; }

    // ---- raw ----

    /// <summary>Sends a message. <paramref name="sizeOverride"/> lies about the payload size in the header.</summary>
    public void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default,
        uint flags = VhostUserFlags.Version, uint? sizeOverride = null)
    {
        byte[] message = new byte[VhostUserMsgHeader.Size + payload.Length];
        var header = new VhostUserMsgHeader { request = (uint)request, flags = flags, size = sizeOverride ?? (uint)payload.Length };
        MemoryMarshal.Write(message, in header);
        payload.CopyTo(message.AsSpan(VhostUserMsgHeader.Size));
        int r = UnixMessaging.SendWithFds(_fd, message, fds);
        if (r != 0)
        {
            throw new IOException($"send failed: errno {-r}");
        }
    }

    public void Send<T>(VhostUserRequest request, in T payload, ReadOnlySpan<int> fds = default, uint flags = VhostUserFlags.Version)
        where T : unmanaged =>
        Send(request, MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in payload)), fds, flags);

    /// <summary>Reads one reply; throws TimeoutException if none arrives within <see cref="ReplyTimeout"/>.</summary>
    public VhostUserReply ReadReply() => TryReadReply(ReplyTimeout) ?? throw new TimeoutException("no reply from the back-end");

    /// <summary>Reads one reply or returns null when none arrives within <paramref name="timeout"/>.</summary>
    public VhostUserReply? TryReadReply(TimeSpan timeout)
    {
        pollfd p = new() { fd = _fd, events = POLLIN };
        if (poll(&p, 1, (int)timeout.TotalMilliseconds) <= 0)
        {
            return null;
        }
        VhostUserMsgHeader header = default;
        int r = UnixMessaging.ReceiveExact(_fd, MemoryMarshal.AsBytes(new Span<VhostUserMsgHeader>(ref header)));
        if (r <= 0)
        {
            throw new IOException(r == 0 ? "back-end closed the connection" : $"recv failed: errno {-r}");
        }
        if (header.size > 0x1000)
        {
            throw new VhostUserException($"reply of {header.size} bytes");
        }
        byte[] body = new byte[header.size];
        if (body.Length > 0 && UnixMessaging.ReceiveExact(_fd, body) <= 0)
        {
            throw new IOException("truncated reply");
        }
        if ((header.flags & VhostUserFlags.Reply) == 0 || (header.flags & VhostUserFlags.VersionMask) != VhostUserFlags.Version)
        {
            throw new VhostUserException($"reply flags 0x{header.flags:x}");
        }
        return new VhostUserReply((VhostUserRequest)header.request, header.flags, body);
    }

    /// <summary>True once the back-end closed its end (reads see end of stream).</summary>
    public bool IsClosedByPeer(TimeSpan timeout)
    {
        pollfd p = new() { fd = _fd, events = POLLIN };
        if (poll(&p, 1, (int)timeout.TotalMilliseconds) <= 0)
        {
            return false;
        }
        byte b;
        return recv(_fd, &b, 1, MSG_PEEK) == 0;
    }

    // ---- typed requests ----

    private ulong GetU64(VhostUserRequest request)
    {
        Send(request, ReadOnlySpan<byte>.Empty);
        VhostUserReply reply = ReadReply();
        if (reply.Request != request)
        {
            throw new VhostUserException($"expected a {request} reply, got {reply.Request}");
        }
        return reply.U64;
    }

    /// <summary>Sends a request without a reply body; with <see cref="AlwaysNeedReply"/> (or needReply) waits for the ack.</summary>
    public void Set(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default, bool? needReply = null)
    {
        bool wantAck = needReply ?? AlwaysNeedReply;
        Send(request, payload, fds, VhostUserFlags.Version | (wantAck ? VhostUserFlags.NeedReply : 0));
        if (wantAck)
        {
            VhostUserReply reply = ReadReply();
            if (reply.Request != request || reply.U64 != 0)
            {
                throw new VhostUserException($"{request} was refused (ack {reply.U64})");
            }
        }
    }

    private void Set<T>(VhostUserRequest request, in T payload, ReadOnlySpan<int> fds = default) where T : unmanaged =>
        Set(request, MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in payload)), fds);

    public ulong GetFeatures() => GetU64(VhostUserRequest.GetFeatures);
    public void SetFeatures(ulong features) => Set(VhostUserRequest.SetFeatures, features);
    public ulong GetProtocolFeatures() => GetU64(VhostUserRequest.GetProtocolFeatures);
    public void SetProtocolFeatures(ulong features) => Set(VhostUserRequest.SetProtocolFeatures, features);
    public ulong GetQueueNum() => GetU64(VhostUserRequest.GetQueueNum);
    public ulong GetMaxMemSlots() => GetU64(VhostUserRequest.GetMaxMemSlots);
    public ulong GetStatus() => GetU64(VhostUserRequest.GetStatus);
    public void SetStatus(byte status) => Set(VhostUserRequest.SetStatus, (ulong)status);
    public void SetOwner() => Set(VhostUserRequest.SetOwner, ReadOnlySpan<byte>.Empty);
    public void ResetOwner() => Set(VhostUserRequest.ResetOwner, ReadOnlySpan<byte>.Empty);
    public void ResetDevice() => Set(VhostUserRequest.ResetDevice, ReadOnlySpan<byte>.Empty);

    /// <summary>SET_MEM_TABLE with every region of <paramref name="memory"/> (at most 8).</summary>
    public void SetMemTable(TestGuestMemory memory) => SetMemTable(memory.Regions);

    public void SetMemTable(IReadOnlyList<TestRegion> regions)
    {
        byte[] payload = new byte[8 + 32 * regions.Count];
        MemoryMarshal.Write(payload, new VhostUserMemory { nregions = (uint)regions.Count });
        int[] fds = new int[regions.Count];
        for (int i = 0; i < regions.Count; i++)
        {
            MemoryMarshal.Write(payload.AsSpan(8 + 32 * i), ToWire(regions[i]));
            fds[i] = regions[i].Fd;
        }
        Set(VhostUserRequest.SetMemTable, payload, fds);
    }

    public void AddMemReg(TestRegion region) =>
        Set(VhostUserRequest.AddMemReg, new VhostUserSingleMemoryRegion { region = ToWire(region) }, [region.Fd]);

    public void RemMemReg(TestRegion region) =>
        Set(VhostUserRequest.RemMemReg, new VhostUserSingleMemoryRegion { region = ToWire(region) });

    private static VhostUserMemoryRegion ToWire(TestRegion r) => new()
    {
        guest_phys_addr = r.GuestPhysAddr,
        memory_size = r.Size,
        userspace_addr = r.UserspaceAddr,
        mmap_offset = r.MmapOffset,
    };

    public void SetVringNum(int index, uint num) => Set(VhostUserRequest.SetVringNum, new VhostVringState { index = (uint)index, num = num });
    public void SetVringBase(int index, uint num) => Set(VhostUserRequest.SetVringBase, new VhostVringState { index = (uint)index, num = num });
    public void SetVringEnable(int index, bool enable) =>
        Set(VhostUserRequest.SetVringEnable, new VhostVringState { index = (uint)index, num = enable ? 1u : 0u });
    public void VringKick(int index) => Set(VhostUserRequest.VringKick, new VhostVringState { index = (uint)index });

    /// <summary>GET_VRING_BASE: stops the ring; returns the next avail index the back-end would consume.</summary>
    public uint GetVringBase(int index)
    {
        Send(VhostUserRequest.GetVringBase, new VhostVringState { index = (uint)index });
        VhostUserReply reply = ReadReply();
        if (reply.Request != VhostUserRequest.GetVringBase || reply.Body.Length != 8)
        {
            throw new VhostUserException($"bad GET_VRING_BASE reply ({reply.Request}, {reply.Body.Length} bytes)");
        }
        VhostVringState state = MemoryMarshal.Read<VhostVringState>(reply.Body);
        return state.num;
    }

    public void SetVringAddr(MockSplitQueue queue) =>
        SetVringAddr(queue.Index, queue.DescUserAddr, queue.AvailUserAddr, queue.UsedUserAddr);

    public void SetVringAddr(int index, ulong descUserAddr, ulong availUserAddr, ulong usedUserAddr) =>
        Set(VhostUserRequest.SetVringAddr, new VhostVringAddr
        {
            index = (uint)index,
            desc_user_addr = descUserAddr,
            avail_user_addr = availUserAddr,
            used_user_addr = usedUserAddr,
        });

    /// <summary>SET_VRING_KICK/CALL/ERR with an fd, or with bit 8 (no fd) when fd is -1.</summary>
    public void SetVringFile(VhostUserRequest request, int index, int fd)
    {
        ulong u = (ulong)(uint)index | (fd < 0 ? 0x100UL : 0);
        Set(request, MemoryMarshal.AsBytes(new ReadOnlySpan<ulong>(in u)), fd < 0 ? [] : [fd]);
    }

    public void SetVringKick(int index, int fd) => SetVringFile(VhostUserRequest.SetVringKick, index, fd);
    public void SetVringCall(int index, int fd) => SetVringFile(VhostUserRequest.SetVringCall, index, fd);
    public void SetVringErr(int index, int fd) => SetVringFile(VhostUserRequest.SetVringErr, index, fd);

    public void SetBackendReqFd(int fd, bool? needReply = null) => Set(VhostUserRequest.SetBackendReqFd, ReadOnlySpan<byte>.Empty, [fd], needReply);

    /// <summary>GET_CONFIG; returns the config bytes (empty when the back-end refused).</summary>
    public byte[] GetConfig(uint offset, uint size)
    {
        byte[] payload = new byte[VhostUserConfig.HeaderSize + size];
        MemoryMarshal.Write(payload, new VhostUserConfig { offset = offset, size = size });
        Send(VhostUserRequest.GetConfig, payload);
        VhostUserReply reply = ReadReply();
        if (reply.Body.Length < VhostUserConfig.HeaderSize)
        {
            return [];
        }
        VhostUserConfig back = MemoryMarshal.Read<VhostUserConfig>(reply.Body);
        return reply.Body.AsSpan(VhostUserConfig.HeaderSize, (int)Math.Min(back.size, (uint)(reply.Body.Length - VhostUserConfig.HeaderSize))).ToArray();
    }

    // ---- whole sequences ----

    /// <summary>Starts one queue the way QEMU 7.2 does (vhost_virtqueue_start): NUM, BASE, ADDR, KICK, then CALL
    /// (QEMU sends the call fd again once guest notifiers are set up, after SET_VRING_ENABLE).</summary>
    public void StartQueueLikeQemu(MockSplitQueue queue, ushort baseIndex = 0)
    {
        SetVringNum(queue.Index, queue.Size);
        SetVringBase(queue.Index, baseIndex);
        SetVringAddr(queue);
        SetVringKick(queue.Index, queue.KickFd);
        SetVringCall(queue.Index, queue.CallFd);
    }

    /// <summary>Starts one queue the way cloud-hypervisor does: ADDR, BASE, CALL, KICK (NUM was sent before).</summary>
    public void StartQueueLikeCloudHypervisor(MockSplitQueue queue, ushort baseIndex = 0)
    {
        SetVringAddr(queue);
        SetVringBase(queue.Index, baseIndex);
        SetVringCall(queue.Index, queue.CallFd);
        SetVringKick(queue.Index, queue.KickFd);
    }

    public void Dispose() => _socket.Dispose();
}
