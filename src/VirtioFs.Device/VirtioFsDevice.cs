using System.Buffers.Binary;
using System.Text;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;

namespace VirtioFs.Device;

/// <summary>
/// The virtio-fs device (virtio spec 1.2, 5.11) on top of the vhost-user transport: queue 0 is the hiprio queue
/// (FORGET, BATCH_FORGET, INTERRUPT), queues 1..N are request queues. Every descriptor chain carries one FUSE request:
/// readable buffers hold <c>fuse_in_header</c> and arguments, writable ones receive <c>fuse_out_header</c> and the
/// reply (5.11.6.1). The FUSE server works on the guest's buffers in place; nothing is copied here.
/// </summary>
public sealed class VirtioFsDevice : IVhostUserBackend, IDisposable
{
    /// <summary>virtio spec 1.2, 5.11.4: <c>char tag[36]; le32 num_request_queues;</c>.</summary>
    private const int TagSize = 36;
    private const int ConfigSize = TagSize + 4;

    private readonly FuseServer _server;
    private readonly ILogger _logger;
    private readonly byte[] _config = new byte[ConfigSize];
    private readonly QueueHandler[] _handlers;
    private readonly RequestPool? _pool;

    /// <param name="server">The FUSE server that answers every request.</param>
    /// <param name="tag">The mount tag reported through GET_CONFIG, or null to let the front-end supply it.</param>
    /// <param name="requestQueues">Number of request queues (the hiprio queue comes on top).</param>
    /// <param name="threadPoolSize">Threads behind the request queues; 0 serves requests in the queue's own thread, and so
    /// does 1 with a single request queue (the same serialisation without a hand-off per request).</param>
    public VirtioFsDevice(FuseServer server, string? tag, int requestQueues, int threadPoolSize, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(requestQueues, 1);
        _server = server;
        _logger = logger;
        if (tag is not null)
        {
            int written = Encoding.UTF8.GetBytes(tag, _config.AsSpan(0, TagSize));
            if (written == 0)
            {
                throw new ArgumentException("tag must not be empty", nameof(tag));
            }
        }
        BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(TagSize), (uint)requestQueues);
        HasConfig = tag is not null;
        NumQueues = 1 + requestQueues;
        // A pool of one thread behind one request queue adds no concurrency: requests are served one at a time in ring
        // order either way. It only adds a hand-off (a wake-up of the pool thread, and the completion on another thread)
        // to every request: about a fifth of the daemon's CPU on a file-per-request workload under Kata's default
        // --thread-pool-size=1. So that configuration serves in the queue thread; two or more threads, or more
        // queues, keep the pool.
        if (threadPoolSize > 1 || (threadPoolSize == 1 && requestQueues > 1))
        {
            _pool = new RequestPool(server, threadPoolSize, logger);
        }
        _handlers = new QueueHandler[NumQueues];
        for (int i = 0; i < NumQueues; i++)
        {
            // FORGETs are cheap and ordered: the hiprio queue is always served inline.
            _handlers[i] = new QueueHandler(server, i == 0 ? null : _pool, logger);
        }
    }

    public int NumQueues { get; }

    /// <summary>Whether request queues hand their chains to a worker pool (false: served in the queue thread).</summary>
    public bool UsesPool => _pool is not null;

    /// <summary>Rust virtiofsd accepts queues up to 32768 descriptors (the split-ring maximum); so do we.</summary>
    public int MaxQueueSize => SplitQueue.MaxSize;

    /// <summary>No device-specific features: VIRTIO_FS_F_NOTIFICATION (bit 0) is not offered.</summary>
    public ulong DeviceFeatures => 0;

    public bool HasConfig { get; }

    public void ReadConfig(uint offset, Span<byte> destination)
    {
        destination.Clear();
        if (offset < ConfigSize)
        {
            ReadOnlySpan<byte> source = _config.AsSpan((int)offset);
            source[..Math.Min(source.Length, destination.Length)].CopyTo(destination);
        }
    }

    public void AcknowledgeFeatures(ulong features) => Log.FeaturesAcknowledged(_logger, features);

    public void HandleQueue(int queueIndex, Vring vring)
    {
        if ((uint)queueIndex >= (uint)_handlers.Length)
        {
            return;
        }
        QueueHandler handler = _handlers[queueIndex];
        handler.Vring = vring;
        vring.Process(handler);
    }

    public void Reset()
    {
        Log.DeviceReset(_logger);
        _pool?.WaitIdle(TimeSpan.FromSeconds(30));
    }

    public void Dispose()
    {
        _pool?.Dispose();
        foreach (QueueHandler h in _handlers)
        {
            h.Dispose();
        }
    }

    /// <summary>Collects a chain into the FUSE server's segment lists; false when the chain is malformed.</summary>
    internal static unsafe bool TryFill(ref DescriptorChain chain, FuseRequestBuffers buffers, ILogger logger)
    {
        // SAFETY: each descriptor's pointer is guest memory the chain walk translated and bounds-checked
        // (GuestMemory.TryTranslate) for its full length; it stays mapped while the chain is outstanding, which is
        // until Serve's reply has been put on the used ring.
        buffers.Clear();
        // The enumerator that walked the chain is the one that knows why it stopped: a fresh one would report None.
        ChainEnumerator walk = chain.GetEnumerator();
        while (walk.MoveNext())
        {
            ChainDescriptor d = walk.Current;
            if (d.IsWritable)
            {
                buffers.AddWritable(d.Pointer, d.Length);
            }
            else
            {
                buffers.AddReadable(d.Pointer, d.Length);
            }
        }
        ChainError error = walk.Error;
        if (error != ChainError.None)
        {
            Log.BadChain(logger, chain.Head, error);
            return false;
        }
        return true;
    }

    /// <summary>Serves one queue; runs on that queue's worker thread.</summary>
    private sealed class QueueHandler(FuseServer server, RequestPool? pool, ILogger logger) : IChainHandler, IDisposable
    {
        private readonly FuseRequestBuffers _buffers = new(64);

        public Vring? Vring { get; set; }

        public uint Handle(ref DescriptorChain chain)
        {
            if (pool is not null && Vring is { } vring)
            {
                pool.Enqueue(vring, chain);
                return VirtioFs.VhostUser.Vring.Deferred;
            }
            return Serve(server, ref chain, _buffers, logger);
        }

        public void Dispose() => _buffers.Dispose();
    }

    internal static uint Serve(FuseServer server, ref DescriptorChain chain, FuseRequestBuffers buffers, ILogger logger)
    {
        if (!TryFill(ref chain, buffers, logger))
        {
            // A chain that cannot be parsed still goes back to the used ring (length 0) so the queue keeps moving.
            return 0;
        }
        FuseReply reply = server.Handle(buffers);
        return reply.HasReply ? (uint)reply.Length : 0;
    }
}
