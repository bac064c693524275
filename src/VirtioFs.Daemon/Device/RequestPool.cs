using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;

namespace VirtioFs.Daemon.Device;

/// <summary>
/// <c>--thread-pool-size</c>: worker threads behind the request queues, as virtiofsd has. The queue thread pops chains
/// and hands them over; a pool thread runs the FUSE request and completes the chain on its ring, so a slow request
/// (a large read, an fsync) does not hold up the ones behind it. Each thread owns its request buffers: the hot path
/// allocates nothing.
/// </summary>
internal sealed class RequestPool : IDisposable
{
    private readonly ConcurrentQueue<(Vring Vring, DescriptorChain Chain)> _work = new();
    private readonly SemaphoreSlim _available = new(0);
    private readonly Thread[] _threads;
    private readonly FuseServer _server;
    private readonly ILogger _logger;
    private volatile bool _stopping;
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
        _work.Enqueue((vring, chain));
        _available.Release();
    }

    private void Run()
    {
        using var buffers = new FuseRequestBuffers(64);
        while (true)
        {
            _available.Wait();
            if (_stopping)
            {
                return;
            }
            if (!_work.TryDequeue(out var item))
            {
                continue;
            }
            DescriptorChain chain = item.Chain;
            uint length = VirtioFsDevice.Serve(_server, ref chain, buffers, _logger);
            item.Vring.Complete(chain.Head, length);
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
        _stopping = true;
        _available.Release(_threads.Length);
        foreach (Thread t in _threads)
        {
            t.Join(TimeSpan.FromSeconds(5));
        }
        _available.Dispose();
    }
}
