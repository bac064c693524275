using System.Collections.Concurrent;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;

namespace VirtioFs.TestSupport;

/// <summary>Handles one chain of queue <paramref name="queueIndex"/>; returns the used length (or Vring.Deferred).</summary>
public delegate uint ChainCallback(int queueIndex, Vring vring, ref DescriptorChain chain);

/// <summary>
/// A small device for transport tests: records what the transport tells it and, by default, echoes each chain's
/// readable bytes into its writable buffers (used length = bytes copied; malformed chains get 0).
/// </summary>
public sealed class RecordingBackend : IVhostUserBackend
{
    private readonly byte[] _config;
    private int _handleQueueCalls;
    private int _resetCount;

    public RecordingBackend(int numQueues = 2, int maxQueueSize = 1024, ulong deviceFeatures = 0, byte[]? config = null)
    {
        NumQueues = numQueues;
        MaxQueueSize = maxQueueSize;
        DeviceFeatures = deviceFeatures;
        _config = config ?? [];
        OnChain = (int q, Vring _, ref DescriptorChain c) => EchoCore(q, ref c, this);
    }

    public int NumQueues { get; }
    public int MaxQueueSize { get; }
    public ulong DeviceFeatures { get; }
    public bool HasConfig => _config.Length > 0;

    /// <summary>Chain handler; defaults to an echo that records into <see cref="Chains"/>.</summary>
    public ChainCallback OnChain { get; set; }

    /// <summary>Features from the last SET_FEATURES.</summary>
    public ulong AcknowledgedFeatures { get; private set; }

    public int HandleQueueCalls => Volatile.Read(ref _handleQueueCalls);
    public int ResetCount => Volatile.Read(ref _resetCount);

    /// <summary>Every chain handled: queue, head and how parsing went.</summary>
    public ConcurrentQueue<(int Queue, ushort Head, ChainError Error)> Chains { get; } = new();

    public void ReadConfig(uint offset, Span<byte> destination)
    {
        ReadOnlySpan<byte> src = offset < _config.Length ? _config.AsSpan((int)offset) : [];
        src[..Math.Min(src.Length, destination.Length)].CopyTo(destination);
    }

    /// <summary>Called from SET_FEATURES (e.g. to make the device refuse by throwing).</summary>
    public Action<ulong>? OnAcknowledgeFeatures { get; set; }

    public void AcknowledgeFeatures(ulong features)
    {
        OnAcknowledgeFeatures?.Invoke(features);
        AcknowledgedFeatures = features;
    }

    public void HandleQueue(int queueIndex, Vring vring)
    {
        Interlocked.Increment(ref _handleQueueCalls);
        vring.Process(new Handler(this, queueIndex, vring));
    }

    public void Reset() => Interlocked.Increment(ref _resetCount);

    private sealed class Handler(RecordingBackend owner, int queue, Vring vring) : IChainHandler
    {
        public uint Handle(ref DescriptorChain chain) => owner.OnChain(queue, vring, ref chain);
    }

    /// <summary>Copies the readable bytes into the writable buffers; records the parse result.</summary>
    public static uint Echo(int queueIndex, Vring vring, ref DescriptorChain chain) => EchoCore(queueIndex, ref chain, null);

    /// <summary>The default handler: echo and record into <see cref="Chains"/>.</summary>
    public uint RecordingEcho(int queueIndex, ref DescriptorChain chain) => EchoCore(queueIndex, ref chain, this);

    private static unsafe uint EchoCore(int queueIndex, ref DescriptorChain chain, RecordingBackend? recorder)
    {
        Span<IoSegment> readable = stackalloc IoSegment[64];
        Span<IoSegment> writable = stackalloc IoSegment[64];
        ChainError error = chain.TryCollect(readable, writable, out int nr, out int nw);
        recorder?.Chains.Enqueue((queueIndex, chain.Head, error));
        if (error != ChainError.None)
        {
            return 0;
        }
        uint written = 0;
        int wi = 0, wo = 0;
        for (int r = 0; r < nr; r++)
        {
            Span<byte> src = readable[r].AsSpan();
            while (!src.IsEmpty && wi < nw)
            {
                Span<byte> dst = writable[wi].AsSpan()[wo..];
                int n = Math.Min(src.Length, dst.Length);
                src[..n].CopyTo(dst);
                src = src[n..];
                wo += n;
                written += (uint)n;
                if (wo == writable[wi].Length)
                {
                    wi++;
                    wo = 0;
                }
            }
        }
        return written;
    }
}
