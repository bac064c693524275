using System.Runtime.InteropServices;
using Tmds.Linux;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser;

/// <summary>The handlers <see cref="VhostUserRequestTable"/> names for features, ownership, rings and config space;
/// each gets a message whose shape its row already checked.</summary>
internal sealed partial class VhostUserConnection
{
    // ---- features and ownership ----

    internal RequestOutcome GetFeatures() => Reply(VhostUserRequest.GetFeatures, _offeredFeatures);

    internal RequestOutcome SetFeatures(ulong features)
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
        return RequestOutcome.Ok;
    }

    internal RequestOutcome GetProtocolFeatures() => Reply(VhostUserRequest.GetProtocolFeatures, _offeredProtocolFeatures);

    internal RequestOutcome SetProtocolFeatures(ulong features)
    {
        if ((features & ~_offeredProtocolFeatures) != 0)
        {
            return Fail(VhostUserRequest.SetProtocolFeatures,
                $"protocol features 0x{features & ~_offeredProtocolFeatures:x} were not offered");
        }
        _ackedProtocolFeatures = features;
        return RequestOutcome.Ok;
    }

    internal RequestOutcome SetOwner()
    {
        _owned = true;
        return RequestOutcome.Ok;
    }

    /// <summary>RESET_OWNER (deprecated; vhost-user.rst recommends disabling the rings) and RESET_DEVICE.</summary>
    internal RequestOutcome Reset(VhostUserRequest request)
    {
        ResetDevice();
        if (request == VhostUserRequest.ResetOwner)
        {
            _owned = false;
        }
        return RequestOutcome.Ok;
    }

    internal RequestOutcome GetQueueNum() => Reply(VhostUserRequest.GetQueueNum, (ulong)_vrings.Length);

    internal RequestOutcome GetMaxMemSlots() => Reply(VhostUserRequest.GetMaxMemSlots, MaxMemSlots);

    internal RequestOutcome GetStatus() => Reply(VhostUserRequest.GetStatus, _status);

    internal RequestOutcome SetStatus(ulong status)
    {
        if (status > 0xff)
        {
            return Fail(VhostUserRequest.SetStatus, $"status 0x{status:x} is not a u8");
        }
        _status = status;
        return RequestOutcome.Ok;
    }

    /// <summary>
    /// Carries VhostUserLog and, with LOG_SHMFD, the log fd. We do not offer LOG_ALL, so dirty logging is never switched
    /// on; keeping the fd keeps the front-end's view coherent. QEMU waits for a reply when LOG_SHMFD is negotiated.
    /// </summary>
    internal RequestOutcome SetLogBase()
    {
        SetOwnedFd(ref _logFd, _fdCount == 1 ? TakeFd(0) : -1);
        return HasProtocol(VhostUserProtocolFeatureBits.LogShmfd) ? Reply(VhostUserRequest.SetLogBase, 0) : RequestOutcome.Ok;
    }

    internal RequestOutcome SetLogFd()
    {
        SetOwnedFd(ref _logFd, TakeFd(0));
        return RequestOutcome.Ok;
    }

    /// <summary>Kept for back-end initiated requests (not used yet by virtio-fs without DAX).</summary>
    internal RequestOutcome SetBackendReqFd()
    {
        SetOwnedFd(ref _backendReqFd, TakeFd(0));
        return RequestOutcome.Ok;
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

    // ---- rings ----

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

    /// <summary>SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE and VRING_KICK: a vring state payload.</summary>
    internal RequestOutcome VringState(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        VhostVringState state = MemoryMarshal.Read<VhostVringState>(payload);
        if (!TryGetVring(state.index, out Vring vring))
        {
            return Fail(request, $"ring index {state.index} out of range");
        }
        uint num = state.num;
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
                return ok ? RequestOutcome.Ok
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
                return RequestOutcome.Ok;
            }
            case VhostUserRequest.GetVringBase:
            {
                // vhost-user.rst: GET_VRING_BASE stops the ring and returns the next avail index to consume.
                vring.StopWorker();
                vring.Stop();
                var reply = new VhostVringState { index = (uint)vring.Index, num = vring.Queue.NextAvail };
                return SendStruct((uint)request, reply) ? RequestOutcome.Replied : RequestOutcome.Failed;
            }
            case VhostUserRequest.SetVringEnable:
                if (num > 1)
                {
                    return Fail(request, $"enable value {num}");
                }
                vring.SetEnabled(num == 1);
                return RequestOutcome.Ok;
            default: // VringKick: an in-band kick.
                if (vring.WorkerRunning)
                {
                    vring.Wake();
                }
                return RequestOutcome.Ok;
        }
    }

    internal RequestOutcome SetVringAddr(VhostUserRequest request, ReadOnlySpan<byte> payload)
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
        return ok || _memory.RegionCount == 0 ? RequestOutcome.Ok : Fail(request, error!);
    }

    /// <summary>SET_VRING_KICK, SET_VRING_CALL and SET_VRING_ERR: a ring index, a no-fd flag and (usually) an eventfd.</summary>
    internal RequestOutcome VringFile(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        ulong u = MemoryMarshal.Read<ulong>(payload);
        uint index = (uint)(u & VhostUserRequestSpec.VringIndexMask);
        bool noFd = (u & VhostUserRequestSpec.VringNoFdFlag) != 0;
        if (!TryGetVring(index, out Vring vring))
        {
            return Fail(request, $"ring index {index} out of range");
        }
        int fd = noFd ? -1 : TakeFd(0);
        if (fd >= 0 && !IsEventFd(fd))
        {
            // vhost-user.rst: kick, call and err fds are eventfds. Anything else (a regular file from a buggy front-end)
            // would read as "always ready" and spin the ring worker; refuse it instead.
            close(fd);
            return Fail(request, $"fd for ring {index} is not an eventfd");
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
        return RequestOutcome.Ok;
    }

    /// <summary>
    /// True when <paramref name="fd"/> can be an eventfd: an anonymous inode (eventfd(2) makes one, with no file type
    /// in its mode), not a regular file, pipe, socket or device a buggy front-end passed instead, which the ring worker
    /// would poll in a busy loop. Checked with fstat, not by reading /proc/self/fd: inside the sandbox "/" is the shared
    /// directory, where that path is the guest's to fill.
    /// </summary>
    internal static unsafe bool IsEventFd(int fd)
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

    // ---- config space ----

    internal RequestOutcome GetConfig(ReadOnlySpan<byte> payload)
    {
        VhostUserConfig config = MemoryMarshal.Read<VhostUserConfig>(payload);
        Span<byte> body = _reply.AsSpan(VhostUserMsgHeader.Size);
        if (!_backend.HasConfig)
        {
            // An empty config payload tells the front-end the read failed.
            config.size = 0;
            MemoryMarshal.Write(body, in config);
            return SendReply((uint)VhostUserRequest.GetConfig, VhostUserConfig.HeaderSize) ? RequestOutcome.Replied : RequestOutcome.Failed;
        }
        MemoryMarshal.Write(body, in config);
        Span<byte> data = body.Slice(VhostUserConfig.HeaderSize, (int)config.size);
        data.Clear();
        _backend.ReadConfig(config.offset, data);
        return SendReply((uint)VhostUserRequest.GetConfig, VhostUserConfig.HeaderSize + (int)config.size)
            ? RequestOutcome.Replied : RequestOutcome.Failed;
    }
}
