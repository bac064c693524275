using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;

namespace VirtioFs.Device;

/// <summary>
/// <c>--thread-pool-size</c>: worker threads behind the request queues, as virtiofsd has. The queue thread pops chains
/// and hands them over; a pool thread runs the FUSE request and completes the chain on its ring, so a slow request
/// (a large read, an fsync) does not hold up the ones behind it. Each thread owns its request buffers: the hot path
/// allocates nothing.
/// </summary>
/// <remarks>
/// Hand-off cost matters more than anything else here: a guest waiting on one request at a time pays it on every
/// request. Workers therefore block on a monitor without spinning (SemaphoreSlim spins with sched_yield before it
/// sleeps, which cost more CPU than the FUSE work itself on a busy host), a worker that finds more work queued takes
/// it without being woken, and the driver is interrupted once per drained batch rather than once per chain, the same
/// rule <see cref="Vring.Process"/> applies to chains served inline (virtio spec 1.2, 2.7.10: the device may
/// coalesce used-buffer notifications).
/// </remarks>
internal sealed class RequestPool : IDisposable
{
    private readonly object _gate = new();
    private readonly Queue<(Vring Vring, DescriptorChain Chain)> _work = new(256);
    private readonly Thread[] _threads;
    private readonly FuseServer _server;
    private readonly ILogger _logger;
    private bool _stopping;
    private int _waiting;
    private int _pending;

    public RequestPool(FuseServer server, int threads, ILogger logger)
    {
        _server = server;
        _logger = logger;
        _threads = new Thread[threads];
        for (int i = 0; i < threads; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"vfsd-pool-{i}" };
            _threads[i].Start();
        }
    }

    public void Enqueue(Vring vring, DescriptorChain chain)
    {
        Interlocked.Increment(ref _pending);
        lock (_gate)
        {
            _work.Enqueue((vring, chain));
            // Only a sleeping worker needs a wake-up; a busy one comes back for this chain by itself.
            if (_waiting > 0)
            {
                Monitor.Pulse(_gate);
            }
        }
    }

    private enum Take
    {
        Took,
        Empty,
        Stopped,
    }

    /// <summary>
    /// Next chain to serve. With <paramref name="mayBlock"/> it sleeps (without spinning) until one is queued;
    /// otherwise it reports <see cref="Take.Empty"/> so the caller can first signal what it completed.
    /// </summary>
    private Take TryTake(bool mayBlock, out (Vring Vring, DescriptorChain Chain) item)
    {
        lock (_gate)
        {
            while (!_stopping)
            {
                if (_work.TryDequeue(out item))
                {
                    return Take.Took;
                }
                if (!mayBlock)
                {
                    return Take.Empty;
                }
                _waiting++;
                Monitor.Wait(_gate);
                _waiting--;
            }
            item = default;
            return Take.Stopped;
        }
    }

    private void Run()
    {
        using var buffers = new FuseRequestBuffers(64);
        // Ring with used entries this worker added but has not yet signalled. A worker never sleeps while it holds
        // one: the check for more work and the decision to sleep happen under the same lock, so another worker taking
        // the chain this one saw queued cannot leave a completion unsignalled.
        Vring? unsignalled = null;
        while (true)
        {
            Take took = TryTake(mayBlock: unsignalled is null, out var item);
            if (took != Take.Took)
            {
                unsignalled?.SignalUsedIfNeeded();
                unsignalled = null;
                if (took == Take.Stopped)
                {
                    return;
                }
                continue;
            }
            if (unsignalled is not null && !ReferenceEquals(unsignalled, item.Vring))
            {
                unsignalled.SignalUsedIfNeeded();
            }
            DescriptorChain chain = item.Chain;
            uint length;
            try
            {
                length = VirtioFsDevice.Serve(_server, ref chain, buffers, _logger);
            }
#pragma warning disable CA1031 // A request that throws must still go back to the ring, or the queue stalls.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.PoolRequestFailed(_logger, item.Vring.Index, chain.Head, ex);
                length = 0;
            }
            item.Vring.AddUsed(chain.Head, length);
            unsignalled = item.Vring;
            Interlocked.Decrement(ref _pending);
        }
    }

    /// <summary>
    /// Waits until every handed-over chain has been completed. On reset or disconnect the transport unmaps guest memory
    /// only after the last outstanding chain is done, so the device must not leave any behind.
    /// </summary>
    public bool WaitIdle(TimeSpan timeout)
    {
        return SpinWait.SpinUntil(() => Volatile.Read(ref _pending) == 0, timeout);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        foreach (Thread t in _threads)
        {
            t.Join(TimeSpan.FromSeconds(5));
        }
    }
}
