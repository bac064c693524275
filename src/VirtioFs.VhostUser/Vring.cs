using Microsoft.Extensions.Logging;
using Tmds.Linux;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser;

/// <summary>
/// One virtqueue as the device sees it: the split queue in guest memory plus its kick/call eventfds and worker.
/// Popping and notification toggling happen on the queue's worker thread; completing chains
/// (<see cref="AddUsed"/>, <see cref="Complete"/>, <see cref="SignalUsedIfNeeded"/>) is safe from any thread.
/// </summary>
public sealed class Vring : IDisposable
{
    /// <summary>Returned by <see cref="IChainHandler.Handle"/> when the handler completes the chain later itself.</summary>
    public const uint Deferred = uint.MaxValue;

    /// <summary>Poll period when the front-end gave no kick fd (SET_VRING_KICK bit 8: the back-end must poll).</summary>
    private const int PollingIntervalMs = 10;

    private readonly ILogger _logger;
    private readonly Lock _usedLock = new();
    private readonly int _wakeFd;
    private int _kickFd = -1;
    private int _callFd = -1;
    private int _errFd = -1;
    private int _inflight;
    private bool _started;
    private volatile bool _enabled;
    private volatile bool _stopRequested;
    private bool _reportedBroken;
    private Thread? _worker;
    private bool _disposed;

    internal Vring(int index, GuestMemory memory, ILogger logger)
    {
        Index = index;
        Queue = new SplitQueue(memory);
        _logger = logger;
        _wakeFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (_wakeFd < 0)
        {
            throw new IOException($"eventfd failed: errno {errno}");
        }
    }

    /// <summary>Queue index (virtio-fs: 0 = hiprio, 1.. = request queues).</summary>
    public int Index { get; }

    /// <summary>The split queue state (sizes, indices). Mutate it only through the transport.</summary>
    public SplitQueue Queue { get; }

    /// <summary>The guest memory the chains point into.</summary>
    public GuestMemory Memory => Queue.Memory;

    /// <summary>Queue size Q.</summary>
    public int QueueSize => Queue.Size;

    /// <summary>Started (kick fd received, not stopped by GET_VRING_BASE).</summary>
    public bool IsStarted
    {
        get
        {
            lock (_usedLock)
            {
                return _started;
            }
        }
    }

    /// <summary>Enabled by SET_VRING_ENABLE 1 (or at start when PROTOCOL_FEATURES is not negotiated).</summary>
    public bool IsEnabled => _enabled;

    /// <summary>Chains popped and not yet completed.</summary>
    public int InFlight => Volatile.Read(ref _inflight);

    /// <summary>Pops the next chain (worker thread only). The chain's buffers stay mapped until it is completed.</summary>
    public bool TryPopChain(out DescriptorChain chain)
    {
        if (!Queue.TryPopChain(out chain))
        {
            if (Queue.IsBroken && !_reportedBroken)
            {
                _reportedBroken = true;
                Log.QueueBroken(_logger, Index);
            }
            return false;
        }
        Memory.EnterUse();
        Interlocked.Increment(ref _inflight);
        return true;
    }

    /// <summary>
    /// Puts a chain on the used ring (thread-safe). After GET_VRING_BASE stopped the ring the completion is dropped:
    /// the front-end owns the ring again and must not see late writes.
    /// </summary>
    public void AddUsed(ushort head, uint length)
    {
        lock (_usedLock)
        {
            if (_started)
            {
                Queue.AddUsed(head, length);
            }
        }
        if (Interlocked.Decrement(ref _inflight) >= 0)
        {
            Memory.ExitUse();
        }
        else
        {
            // More completions than pops: a device bug; keep the counter sane rather than unbalancing memory users.
            Interlocked.Increment(ref _inflight);
        }
    }

    /// <summary><see cref="AddUsed"/> then <see cref="SignalUsedIfNeeded"/>: for chains completed from another thread.</summary>
    public void Complete(ushort head, uint length)
    {
        AddUsed(head, length);
        SignalUsedIfNeeded();
    }

    /// <summary>Interrupts the driver through the call eventfd when it asked for it (EVENT_IDX or NO_INTERRUPT).
    /// Returns whether a notification was sent.</summary>
    public unsafe bool SignalUsedIfNeeded()
    {
        lock (_usedLock)
        {
            if (!_started || !Queue.NeedsNotification() || _callFd < 0)
            {
                return false;
            }
            ulong one = 1;
            // SAFETY: writes 8 bytes from a local to an eventfd we own.
            write(_callFd, &one, sizeof(ulong));
            return true;
        }
    }

    /// <summary>Ask for kicks again; true when more chains arrived meanwhile (process them). Worker thread only.</summary>
    public bool EnableNotification() => Queue.EnableNotification();

    /// <summary>Suppress kicks while draining the queue. Worker thread only.</summary>
    public void DisableNotification() => Queue.DisableNotification();

    /// <summary>
    /// The standard loop: with notifications disabled pop every chain, let the handler fill it and put it on the used
    /// ring, signal once if the driver wants it, re-enable notifications and go round again if more arrived meanwhile.
    /// A throwing handler completes its chain with length 0 so the queue never stalls.
    /// </summary>
    public void Process(IChainHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        do
        {
            DisableNotification();
            bool added = false;
            while (TryPopChain(out DescriptorChain chain))
            {
                uint length;
                try
                {
                    length = handler.Handle(ref chain);
                }
                catch (Exception ex)
                {
                    Log.ChainHandlerFailed(_logger, Index, chain.Head, ex);
                    length = 0;
                }
                if (length != Deferred)
                {
                    AddUsed(chain.Head, length);
                    added = true;
                }
            }
            // Chains handed to another thread are signalled by whoever completes them; checking here as well would
            // only contend for the used-ring lock with that thread.
            if (added)
            {
                SignalUsedIfNeeded();
            }
        }
        while (EnableNotification());
    }

    // ---- transport side (connection thread) ----

    internal Lock UsedLock => _usedLock;

    internal void SetCallFd(int fd)
    {
        lock (_usedLock)
        {
            CloseFd(ref _callFd);
            _callFd = fd;
        }
    }

    internal void SetErrFd(int fd)
    {
        CloseFd(ref _errFd);
        _errFd = fd;
    }

    /// <summary>Installs the kick fd (or -1 for polling) and starts the ring. The worker must be stopped.</summary>
    internal void Start(int kickFd)
    {
        CloseFd(ref _kickFd);
        _kickFd = kickFd;
        lock (_usedLock)
        {
            _started = true;
        }
    }

    /// <summary>GET_VRING_BASE: the ring is stopped and its kick fd released. The worker must be stopped.</summary>
    internal void Stop()
    {
        lock (_usedLock)
        {
            _started = false;
        }
        CloseFd(ref _kickFd);
    }

    internal void SetEnabled(bool enabled)
    {
        _enabled = enabled;
        if (enabled)
        {
            // A kick that came while disabled was consumed without processing (rust-vmm/vhost #247): look again now.
            Wake();
        }
    }

    internal bool WorkerRunning => _worker is not null;

    internal void StartWorker(IVhostUserBackend backend)
    {
        if (_worker is not null)
        {
            return;
        }
        _stopRequested = false;
        _worker = new Thread(() => WorkerLoop(backend))
        {
            IsBackground = true,
            Name = $"vhost-user-vq{Index}",
        };
        _worker.Start();
        // Process whatever the driver queued before we were listening.
        Wake();
    }

    internal void StopWorker()
    {
        Thread? worker = _worker;
        if (worker is null)
        {
            return;
        }
        _stopRequested = true;
        Wake();
        worker.Join();
        _worker = null;
    }

    internal unsafe void Wake()
    {
        ulong one = 1;
        // SAFETY: 8-byte write from a local to our own eventfd.
        write(_wakeFd, &one, sizeof(ulong));
    }

    /// <summary>Back to power-on state (RESET_DEVICE / disconnect). The worker must be stopped.</summary>
    internal void Reset()
    {
        lock (_usedLock)
        {
            _started = false;
            Queue.Reset();
            CloseFd(ref _callFd);
        }
        CloseFd(ref _kickFd);
        CloseFd(ref _errFd);
        _enabled = false;
        _reportedBroken = false;
    }

    private unsafe void WorkerLoop(IVhostUserBackend backend)
    {
        pollfd* fds = stackalloc pollfd[2];
        ulong counter;
        while (!_stopRequested)
        {
            int kick = _kickFd;
            fds[0].fd = _wakeFd;
            fds[0].events = POLLIN;
            fds[0].revents = 0;
            fds[1].fd = kick; // poll ignores negative fds
            fds[1].events = POLLIN;
            fds[1].revents = 0;
            // SAFETY: fds points at two initialised pollfd on our stack.
            int r = poll(fds, 2, kick < 0 ? PollingIntervalMs : -1);
            if (r < 0)
            {
                int e = errno;
                if (e == EINTR)
                {
                    continue;
                }
                Log.WorkerPollFailed(_logger, Index, e);
                return;
            }
            if (_stopRequested)
            {
                return;
            }
            if ((fds[0].revents & POLLIN) != 0)
            {
                // SAFETY: 8-byte read into a local from our non-blocking eventfd.
                read(_wakeFd, &counter, sizeof(ulong));
            }
            if ((fds[1].revents & POLLIN) != 0)
            {
                // POLLIN means the counter is non-zero and we are its only reader, so this does not block.
                // SAFETY: 8-byte read into a local.
                read(kick, &counter, sizeof(ulong));
            }
            if ((fds[1].revents & (POLLERR | POLLNVAL)) != 0)
            {
                Log.WorkerPollFailed(_logger, Index, EBADF);
                return;
            }
            // Kicks while disabled are drained but remembered by the wake in SetEnabled(true).
            if (_enabled && Queue.IsActive)
            {
                try
                {
                    backend.HandleQueue(Index, this);
                }
                catch (Exception ex)
                {
                    Log.QueueHandlerFailed(_logger, Index, ex);
                }
            }
        }
    }

    private static void CloseFd(ref int fd)
    {
        if (fd >= 0)
        {
            close(fd);
            fd = -1;
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        StopWorker();
        Reset();
        close(_wakeFd);
    }
}
