using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Tmds.Linux;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser;

/// <summary>
/// Serves one vhost-user front-end on a connected socket: reads messages, validates each one, applies it to the guest
/// memory and rings, replies, and on disconnect stops every worker and resets the backend. Shaped after rust-vmm
/// vhost's backend_req_handler (one method per request), written from vhost-user.rst.
/// </summary>
internal sealed unsafe class VhostUserConnection : IDisposable
{
    /// <summary>Largest payload accepted (rust-vmm's MAX_MSG_SIZE).</summary>
    public const int MaxPayload = 0x1000;

    /// <summary>Oversized payloads up to this are read and discarded to keep the stream in sync; beyond, we hang up.</summary>
    private const int MaxDrain = 1 << 20;

    /// <summary>GET_MAX_MEM_SLOTS answer, as vhost-user-backend gives.</summary>
    public const ulong MaxMemSlots = GuestMemory.MaxRegions;

    private readonly int _socket;
    private readonly IVhostUserBackend _backend;
    private readonly ILogger _logger;
    private readonly GuestMemory _memory = new();
    private readonly Vring[] _vrings;
    private readonly byte[] _payload = new byte[MaxPayload];
    private readonly int[] _fds = new int[UnixMessaging.MaxFds];
    private readonly byte[] _reply = new byte[VhostUserMsgHeader.Size + VhostUserConfig.HeaderSize + VhostUserConfig.MaxSize];
    private int _fdCount;
    private readonly ulong _offeredFeatures;
    private readonly ulong _offeredProtocolFeatures;
    private ulong _ackedFeatures;
    private ulong _ackedProtocolFeatures;
    private bool _owned;
    private int _backendReqFd = -1;
    private int _logFd = -1;
    private ulong _status;
    private bool _disposed;

    public VhostUserConnection(int socketFd, IVhostUserBackend backend, ILogger logger)
    {
        if (backend.NumQueues <= 0 || backend.NumQueues > 256)
        {
            // Bits 0-7 of SET_VRING_KICK/CALL/ERR carry the ring index, so 256 is the protocol's ceiling.
            throw new ArgumentOutOfRangeException(nameof(backend), "NumQueues must be 1..256");
        }
        _socket = socketFd;
        _backend = backend;
        _logger = logger;
        _vrings = new Vring[backend.NumQueues];
        for (int i = 0; i < _vrings.Length; i++)
        {
            _vrings[i] = new Vring(i, _memory, logger);
        }
        _offeredFeatures = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.IndirectDesc)
            | (1UL << VirtioFeatureBits.EventIdx) | (1UL << VhostUserFeatureBits.ProtocolFeatures) | backend.DeviceFeatures;
        _offeredProtocolFeatures = (1UL << VhostUserProtocolFeatureBits.Mq) | (1UL << VhostUserProtocolFeatureBits.LogShmfd)
            | (1UL << VhostUserProtocolFeatureBits.ReplyAck) | (1UL << VhostUserProtocolFeatureBits.BackendReq)
            | (1UL << VhostUserProtocolFeatureBits.ResetDevice) | (1UL << VhostUserProtocolFeatureBits.ConfigureMemSlots)
            | (backend.HasConfig ? 1UL << VhostUserProtocolFeatureBits.Config : 0);
        Array.Fill(_fds, -1);
    }

    public IReadOnlyList<Vring> Vrings => _vrings;

    /// <summary>SET_OWNER received (and no RESET_OWNER since).</summary>
    public bool IsOwned => _owned;

    private bool ProtocolFeaturesNegotiated => (_ackedFeatures & (1UL << VhostUserFeatureBits.ProtocolFeatures)) != 0;

    private bool HasProtocol(int bit) => (_ackedProtocolFeatures & (1UL << bit)) != 0;

    private enum Outcome
    {
        Ok,
        Failed,
        Replied,
    }

    /// <summary>Runs until the front-end disconnects (or the socket is shut down), then cleans up.</summary>
    public void Run()
    {
        Log.Connected(_logger);
        string reason = "end of stream";
        try
        {
            while (true)
            {
                VhostUserMsgHeader header;
                int r = ReceiveMessage(out header, out int payloadLength, out string? refusal);
                if (r <= 0)
                {
                    UnixMessaging.CloseAll(_fds.AsSpan(0, _fdCount));
                    _fdCount = 0;
                    reason = r == 0 ? "end of stream" : $"socket error {-r}";
                    break;
                }
                try
                {
                    var request = (VhostUserRequest)header.request;
                    Log.MessageReceived(_logger, request, header.flags, header.size, _fdCount);
                    if (refusal is null)
                    {
                        refusal = VhostUserMessage.ValidateFlags(header.flags);
                    }
                    Outcome outcome;
                    if (refusal is not null)
                    {
                        Log.MessageRefused(_logger, request, refusal);
                        outcome = Outcome.Failed;
                    }
                    else
                    {
                        try
                        {
                            outcome = Dispatch(header, _payload.AsSpan(0, payloadLength));
                        }
                        catch (Exception ex) when (ex is not OutOfMemoryException)
                        {
                            // A bug or a throwing backend must not take the whole device down: fail this request.
                            Log.RequestThrew(_logger, request, ex);
                            outcome = Outcome.Failed;
                        }
                    }
                    // Release unclaimed fds before answering, so a front-end that saw the reply sees them closed.
                    UnixMessaging.CloseAll(_fds.AsSpan(0, _fdCount));
                    if (!FinishReply(header, outcome))
                    {
                        reason = "reply failed";
                        break;
                    }
                }
                finally
                {
                    UnixMessaging.CloseAll(_fds.AsSpan(0, _fdCount));
                    _fdCount = 0;
                }
            }
        }
        finally
        {
            Log.Disconnected(_logger, reason);
            Dispose();
        }
    }

    /// <summary>
    /// Reads one message. Returns 1 with the message (refusal set when it must be refused but the stream is in sync),
    /// 0 at end of stream, -errno on socket errors or when the stream cannot be resynchronised.
    /// </summary>
    private int ReceiveMessage(out VhostUserMsgHeader header, out int payloadLength, out string? refusal)
    {
        header = default;
        payloadLength = 0;
        refusal = null;
        Span<byte> headerBytes = MemoryMarshal.AsBytes(new Span<VhostUserMsgHeader>(ref header));
        // Fds travel with the first bytes of a message (vhost-user.rst "Communication").
        int n = UnixMessaging.ReceiveWithFds(_socket, headerBytes, _fds, out _fdCount, out bool truncated);
        if (n <= 0)
        {
            return n;
        }
        if (n < VhostUserMsgHeader.Size)
        {
            int rest = UnixMessaging.ReceiveExact(_socket, headerBytes[n..]);
            if (rest <= 0)
            {
                return rest == 0 ? -EPIPE : rest;
            }
        }
        if (truncated)
        {
            refusal = $"more than {UnixMessaging.MaxFds} fds";
        }
        if (header.size > MaxPayload)
        {
            refusal = $"payload of {header.size} bytes exceeds {MaxPayload}";
            if (header.size > MaxDrain)
            {
                Log.MessageRefused(_logger, (VhostUserRequest)header.request, refusal + "; hanging up");
                return -EMSGSIZE;
            }
            uint left = header.size;
            while (left > 0)
            {
                int chunk = (int)Math.Min(left, (uint)_payload.Length);
                int r = UnixMessaging.ReceiveExact(_socket, _payload.AsSpan(0, chunk));
                if (r <= 0)
                {
                    return r == 0 ? -EPIPE : r;
                }
                left -= (uint)chunk;
            }
            return 1;
        }
        if (header.size > 0)
        {
            int r = UnixMessaging.ReceiveExact(_socket, _payload.AsSpan(0, (int)header.size));
            if (r <= 0)
            {
                return r == 0 ? -EPIPE : r;
            }
        }
        payloadLength = (int)header.size;
        return 1;
    }

    /// <summary>Requests whose reply carries a body whatever REPLY_ACK says.</summary>
    private bool HasReplyBody(VhostUserRequest request) => request switch
    {
        VhostUserRequest.GetFeatures or VhostUserRequest.GetProtocolFeatures or VhostUserRequest.GetVringBase
            or VhostUserRequest.GetQueueNum or VhostUserRequest.GetConfig or VhostUserRequest.GetMaxMemSlots
            or VhostUserRequest.GetStatus => true,
        VhostUserRequest.SetLogBase => HasProtocol(VhostUserProtocolFeatureBits.LogShmfd),
        _ => false,
    };

    private bool FinishReply(in VhostUserMsgHeader header, Outcome outcome)
    {
        if (outcome == Outcome.Replied)
        {
            return true;
        }
        var request = (VhostUserRequest)header.request;
        if (HasReplyBody(request) && outcome == Outcome.Failed)
        {
            if (request == VhostUserRequest.SetLogBase)
            {
                return SendU64(header.request, 1);
            }
            // The front-end waits for a body; an empty one makes it fail cleanly instead of hanging.
            return SendReply(header.request, 0);
        }
        if (HasReplyBody(request))
        {
            return true;
        }
        if ((header.flags & VhostUserFlags.NeedReply) != 0 && HasProtocol(VhostUserProtocolFeatureBits.ReplyAck))
        {
            // REPLY_ACK: u64 0 on success, non-zero on failure.
            return SendU64(header.request, outcome == Outcome.Ok ? 0UL : 1UL);
        }
        return true;
    }

    private bool SendU64(uint request, ulong value)
    {
        MemoryMarshal.Write(_reply.AsSpan(VhostUserMsgHeader.Size), in value);
        return SendReply(request, sizeof(ulong));
    }

    private bool SendStruct<T>(uint request, in T value) where T : unmanaged
    {
        MemoryMarshal.Write(_reply.AsSpan(VhostUserMsgHeader.Size), in value);
        return SendReply(request, sizeof(T));
    }

    /// <summary>Sends a reply whose body was already written at _reply[12..12+bodyLength].</summary>
    private bool SendReply(uint request, int bodyLength)
    {
        var h = new VhostUserMsgHeader
        {
            request = request,
            flags = VhostUserFlags.Version | VhostUserFlags.Reply,
            size = (uint)bodyLength,
        };
        MemoryMarshal.Write(_reply, in h);
        return UnixMessaging.SendWithFds(_socket, _reply.AsSpan(0, VhostUserMsgHeader.Size + bodyLength), []) == 0;
    }

    private Outcome Reply(uint request, ulong value) => SendU64(request, value) ? Outcome.Replied : Outcome.Failed;

    // ---- dispatch ----

    private Outcome Fail(VhostUserRequest request, string reason)
    {
        Log.RequestFailed(_logger, request, reason);
        return Outcome.Failed;
    }

    /// <summary>
    /// True when <paramref name="fd"/> can be an eventfd: an anonymous inode (eventfd(2) makes one, with no file type
    /// in its mode), not a regular file, pipe, socket or device a buggy front-end passed instead, which the ring worker
    /// would poll in a busy loop. Checked with fstat, not by reading /proc/self/fd: inside the sandbox "/" is the shared
    /// directory, where that path is the guest's to fill.
    /// </summary>
    internal static bool IsEventFd(int fd)
    {
        stat st;
        // SAFETY: st is a local the kernel fills; fstat writes nothing else.
        return fstat(fd, &st) == 0 && ((uint)st.st_mode & (uint)S_IFMT) == 0;
    }

    private int TakeFd(int i)
    {
        int fd = _fds[i];
        _fds[i] = -1;
        return fd;
    }

    private bool TryGetVring(uint index, out Vring vring)
    {
        if (index < (uint)_vrings.Length)
        {
            vring = _vrings[index];
            return true;
        }
        vring = null!;
        return false;
    }

    private Outcome Dispatch(in VhostUserMsgHeader header, ReadOnlySpan<byte> payload)
    {
        var request = (VhostUserRequest)header.request;
        uint id = header.request;
        if (!VhostUserMessage.IsKnown(request))
        {
            Log.UnknownRequest(_logger, header.request);
            return Outcome.Failed;
        }
        if (VhostUserMessage.Validate(request, payload, _fdCount) is { } invalid)
        {
            Log.MessageRefused(_logger, request, invalid);
            return Outcome.Failed;
        }
        switch (request)
        {
            case VhostUserRequest.GetFeatures:
                return Reply(id, _offeredFeatures);

            case VhostUserRequest.SetFeatures:
                return SetFeatures(MemoryMarshal.Read<ulong>(payload));

            case VhostUserRequest.GetProtocolFeatures:
                return Reply(id, _offeredProtocolFeatures);

            case VhostUserRequest.SetProtocolFeatures:
            {
                ulong f = MemoryMarshal.Read<ulong>(payload);
                if ((f & ~_offeredProtocolFeatures) != 0)
                {
                    return Fail(request, $"protocol features 0x{f & ~_offeredProtocolFeatures:x} were not offered");
                }
                _ackedProtocolFeatures = f;
                return Outcome.Ok;
            }

            case VhostUserRequest.SetOwner:
                _owned = true;
                return Outcome.Ok;

            case VhostUserRequest.ResetOwner:
            case VhostUserRequest.ResetDevice:
                ResetDevice();
                if (request == VhostUserRequest.ResetOwner)
                {
                    _owned = false;
                }
                return Outcome.Ok;

            case VhostUserRequest.GetQueueNum:
                return Reply(id, (ulong)_vrings.Length);

            case VhostUserRequest.GetMaxMemSlots:
                return Reply(id, MaxMemSlots);

            case VhostUserRequest.GetStatus:
                return Reply(id, _status);

            case VhostUserRequest.SetStatus:
            {
                ulong status = MemoryMarshal.Read<ulong>(payload);
                if (status > 0xff)
                {
                    return Fail(request, $"status 0x{status:x} is not a u8");
                }
                _status = status;
                return Outcome.Ok;
            }

            case VhostUserRequest.SetMemTable:
                return SetMemTable(request, payload);

            case VhostUserRequest.AddMemReg:
            case VhostUserRequest.RemMemReg:
                return AddRemoveMemReg(request, payload);

            case VhostUserRequest.SetLogBase:
                // Carries VhostUserLog and, with LOG_SHMFD, the log fd. We do not offer LOG_ALL, so dirty logging is
                // never switched on; keeping the fd keeps the front-end's view coherent. QEMU waits for a reply.
                SetOwnedFd(ref _logFd, _fdCount == 1 ? TakeFd(0) : -1);
                return HasProtocol(VhostUserProtocolFeatureBits.LogShmfd) ? Reply(id, 0) : Outcome.Ok;

            case VhostUserRequest.SetLogFd:
                SetOwnedFd(ref _logFd, TakeFd(0));
                return Outcome.Ok;

            case VhostUserRequest.SetBackendReqFd:
                // Kept for back-end initiated requests (not used yet by virtio-fs without DAX).
                SetOwnedFd(ref _backendReqFd, TakeFd(0));
                return Outcome.Ok;

            case VhostUserRequest.SetVringNum:
            case VhostUserRequest.SetVringBase:
            case VhostUserRequest.GetVringBase:
            case VhostUserRequest.SetVringEnable:
            case VhostUserRequest.VringKick:
            {
                VhostVringState state = MemoryMarshal.Read<VhostVringState>(payload);
                if (!TryGetVring(state.index, out Vring vring))
                {
                    return Fail(request, $"ring index {state.index} out of range");
                }
                return VringState(request, vring, state.num);
            }

            case VhostUserRequest.SetVringAddr:
            {
                VhostVringAddr addr = MemoryMarshal.Read<VhostVringAddr>(payload);
                if (!TryGetVring(addr.index, out Vring vring))
                {
                    return Fail(request, $"ring index {addr.index} out of range");
                }
                bool wasRunning = Pause(vring);
                vring.Queue.SetAddresses(addr.desc_user_addr, addr.avail_user_addr, addr.used_user_addr);
                bool ok = TryActivate(vring, out string? error);
                Resume(vring, wasRunning);
                // Without memory yet the ring activates later (at kick or on the memory table).
                return ok || _memory.RegionCount == 0 ? Outcome.Ok : Fail(request, error!);
            }

            case VhostUserRequest.SetVringKick:
            case VhostUserRequest.SetVringCall:
            case VhostUserRequest.SetVringErr:
                return VringFile(request, MemoryMarshal.Read<ulong>(payload));

            case VhostUserRequest.GetConfig:
            case VhostUserRequest.SetConfig:
                return Config(request, payload);

            default:
                Log.UnknownRequest(_logger, header.request);
                return Outcome.Failed;
        }
    }

    private Outcome SetFeatures(ulong features)
    {
        if ((features & ~_offeredFeatures) != 0)
        {
            return Fail(VhostUserRequest.SetFeatures, $"features 0x{features & ~_offeredFeatures:x} were not offered");
        }
        bool eventIdx = (features & (1UL << VirtioFeatureBits.EventIdx)) != 0;
        foreach (Vring v in _vrings)
        {
            bool running = Pause(v);
            v.Queue.EventIdx = eventIdx;
            Resume(v, running);
        }
        _ackedFeatures = features;
        if (!ProtocolFeaturesNegotiated)
        {
            // vhost-user.rst "Ring states": without PROTOCOL_FEATURES rings are enabled as soon as they start.
            foreach (Vring v in _vrings)
            {
                v.SetEnabled(true);
            }
        }
        _backend.AcknowledgeFeatures(features);
        return Outcome.Ok;
    }

    private Outcome VringState(VhostUserRequest request, Vring vring, uint num)
    {
        switch (request)
        {
            case VhostUserRequest.SetVringNum:
            {
                bool running = Pause(vring);
                bool ok = vring.Queue.TrySetSize(num, _backend.MaxQueueSize);
                if (ok)
                {
                    TryActivate(vring, out _);
                }
                Resume(vring, running);
                return ok ? Outcome.Ok
                    : Fail(request, $"queue size {num} is not a power of two in 1..{Math.Min(_backend.MaxQueueSize, SplitQueue.MaxSize)}");
            }
            case VhostUserRequest.SetVringBase:
            {
                if (num > ushort.MaxValue)
                {
                    // Split rings only: packed-ring wrap counters (bit 15 and up) are not supported.
                    return Fail(request, $"base {num} does not fit a split ring index");
                }
                bool running = Pause(vring);
                vring.Queue.SetBase((ushort)num);
                Resume(vring, running);
                return Outcome.Ok;
            }
            case VhostUserRequest.GetVringBase:
            {
                // vhost-user.rst: GET_VRING_BASE stops the ring and returns the next avail index to consume.
                vring.StopWorker();
                vring.Stop();
                var state = new VhostVringState { index = (uint)vring.Index, num = vring.Queue.NextAvail };
                return SendStruct((uint)request, state) ? Outcome.Replied : Outcome.Failed;
            }
            case VhostUserRequest.SetVringEnable:
                if (num > 1)
                {
                    return Fail(request, $"enable value {num}");
                }
                vring.SetEnabled(num == 1);
                return Outcome.Ok;
            default: // VringKick: an in-band kick.
                if (vring.WorkerRunning)
                {
                    vring.Wake();
                }
                return Outcome.Ok;
        }
    }

    private Outcome VringFile(VhostUserRequest request, ulong u)
    {
        bool noFd = (u & 0x100) != 0;
        if (!TryGetVring((uint)(u & 0xff), out Vring vring))
        {
            return Fail(request, $"ring index {u & 0xff} out of range");
        }
        int fd = noFd ? -1 : TakeFd(0);
        if (fd >= 0 && !IsEventFd(fd))
        {
            // vhost-user.rst: kick, call and err fds are eventfds. Anything else (a regular file from a buggy front-end)
            // would read as "always ready" and spin the ring worker; refuse it instead.
            close(fd);
            return Fail(request, $"fd for ring {u & 0xff} is not an eventfd");
        }
        switch (request)
        {
            case VhostUserRequest.SetVringCall:
                vring.SetCallFd(fd);
                break;
            case VhostUserRequest.SetVringErr:
                vring.SetErrFd(fd);
                break;
            default:
                // vhost-user.rst "Ring states": a ring starts on its kick fd.
                vring.StopWorker();
                vring.Start(fd);
                if (!ProtocolFeaturesNegotiated)
                {
                    vring.SetEnabled(true);
                }
                if (!vring.Queue.IsActive && !TryActivate(vring, out string? error))
                {
                    Log.QueueNotActive(_logger, vring.Index, error!);
                }
                vring.StartWorker(_backend);
                break;
        }
        return Outcome.Ok;
    }

    private Outcome Config(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        VhostUserConfig config = MemoryMarshal.Read<VhostUserConfig>(payload);
        if (request == VhostUserRequest.SetConfig)
        {
            // virtio-fs config space is read-only for the driver (virtio spec 1.2 §5.11.4); accept and ignore.
            return Outcome.Ok;
        }
        Span<byte> body = _reply.AsSpan(VhostUserMsgHeader.Size);
        if (!_backend.HasConfig)
        {
            // An empty config payload tells the front-end the read failed.
            config.size = 0;
            MemoryMarshal.Write(body, in config);
            return SendReply((uint)request, VhostUserConfig.HeaderSize) ? Outcome.Replied : Outcome.Failed;
        }
        MemoryMarshal.Write(body, in config);
        Span<byte> data = body.Slice(VhostUserConfig.HeaderSize, (int)config.size);
        data.Clear();
        _backend.ReadConfig(config.offset, data);
        return SendReply((uint)request, VhostUserConfig.HeaderSize + (int)config.size) ? Outcome.Replied : Outcome.Failed;
    }

    // ---- memory ----

    private Outcome SetMemTable(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        ReadOnlySpan<VhostUserMemoryRegion> raw =
            MemoryMarshal.Cast<byte, VhostUserMemoryRegion>(payload[sizeof(VhostUserMemory)..]);
        var regions = new MemoryRegionInfo[raw.Length]; // cold path, at most 8
        for (int i = 0; i < raw.Length; i++)
        {
            regions[i] = ToInfo(raw[i]);
        }
        string? error = null;
        bool ok = false;
        ChangeMemory(() => ok = _memory.TryReplaceRegions(regions, _fds.AsSpan(0, _fdCount), out error));
        // The mappings keep the memory alive; the fds are closed by the caller's CloseAll.
        return ok ? Outcome.Ok : Fail(request, error!);
    }

    private Outcome AddRemoveMemReg(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        bool add = request == VhostUserRequest.AddMemReg;
        string? error = null;
        MemoryRegionInfo info = ToInfo(MemoryMarshal.Read<VhostUserSingleMemoryRegion>(payload).region);
        bool ok = false;
        int fd = _fdCount > 0 ? _fds[0] : -1;
        ChangeMemory(() => ok = add ? _memory.TryAddRegion(info, fd, out error) : _memory.TryRemoveRegion(info, out error));
        return ok ? Outcome.Ok : Fail(request, error!);
    }

    private static MemoryRegionInfo ToInfo(in VhostUserMemoryRegion r) =>
        new(r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset);

    /// <summary>
    /// Applies a memory change with every worker stopped and every ring's completion lock held, then re-translates
    /// the rings, so no thread can use a ring pointer into a mapping that is about to be unmapped. Chains still in
    /// flight keep their buffers mapped through GuestMemory's use count.
    /// </summary>
    private void ChangeMemory(Action change)
    {
        Span<bool> running = stackalloc bool[_vrings.Length];
        for (int i = 0; i < _vrings.Length; i++)
        {
            running[i] = Pause(_vrings[i]);
        }
        int locked = 0;
        try
        {
            for (; locked < _vrings.Length; locked++)
            {
                _vrings[locked].UsedLock.Enter();
            }
            foreach (Vring v in _vrings)
            {
                v.Queue.Deactivate();
            }
            change();
            foreach (Vring v in _vrings)
            {
                if (v.Queue.Size != 0 && !v.Queue.TryActivate(out string? error))
                {
                    Log.QueueNotActive(_logger, v.Index, error!);
                }
            }
        }
        finally
        {
            for (int i = locked - 1; i >= 0; i--)
            {
                _vrings[i].UsedLock.Exit();
            }
        }
        for (int i = 0; i < _vrings.Length; i++)
        {
            Resume(_vrings[i], running[i]);
        }
    }

    private bool TryActivate(Vring vring, out string? error)
    {
        lock (vring.UsedLock)
        {
            return vring.Queue.TryActivate(out error);
        }
    }

    private static bool Pause(Vring vring)
    {
        bool running = vring.WorkerRunning;
        vring.StopWorker();
        return running;
    }

    private void Resume(Vring vring, bool wasRunning)
    {
        if (wasRunning)
        {
            vring.StartWorker(_backend);
        }
    }

    private void ResetDevice()
    {
        foreach (Vring v in _vrings)
        {
            v.StopWorker();
            v.Reset();
        }
        _ackedFeatures = 0;
        _status = 0;
        _backend.Reset();
    }

    private static void SetOwnedFd(ref int slot, int fd)
    {
        if (slot >= 0)
        {
            close(slot);
        }
        slot = fd;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (Vring v in _vrings)
        {
            v.StopWorker();
        }
        try
        {
            _backend.Reset();
        }
        finally
        {
            foreach (Vring v in _vrings)
            {
                v.Dispose();
            }
            SetOwnedFd(ref _backendReqFd, -1);
            SetOwnedFd(ref _logFd, -1);
            _memory.Dispose();
        }
    }
}
