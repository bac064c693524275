using System.Diagnostics;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

/// <summary>Counters for one FUSE opcode (a snapshot).</summary>
public readonly record struct VfsOpStats(FuseOpcode Opcode, long Count, long Errors, long InFlight, double TotalLatencyMicros,
    double MaxLatencyMicros, long[] LatencyBuckets);

/// <summary>
/// Global FUSE operation counters in the spirit of nydusd's /api/v1/metrics (fop hits, errors, cumulative latency and a
/// latency histogram) plus what is in flight right now (/api/v1/metrics/inflight). Lock-free: two timestamps and a
/// few interlocked adds per request, no allocation.
/// </summary>
public sealed class VfsMetrics
{
    /// <summary>Upper bounds of the latency histogram buckets, in microseconds; the last bucket is open-ended.</summary>
    public static readonly IReadOnlyList<long> LatencyBucketBoundsMicros = [10, 50, 100, 500, 1_000, 10_000, 100_000, 1_000_000];

    private const int Opcodes = 64;
    private static readonly long[] BoundsTicks = LatencyBucketBoundsMicros.Select(us => us * Stopwatch.Frequency / 1_000_000).ToArray();

    private readonly long[] _count = new long[Opcodes];
    private readonly long[] _errors = new long[Opcodes];
    private readonly long[] _inflight = new long[Opcodes];
    private readonly long[] _ticks = new long[Opcodes];
    private readonly long[] _maxTicks = new long[Opcodes];
    private readonly long[] _buckets = new long[Opcodes * (8 + 1)];
    private long _bytesRead;
    private long _bytesWritten;
    private readonly long _started = Stopwatch.GetTimestamp();

    internal long Start(FuseOpcode op)
    {
        Interlocked.Increment(ref _inflight[Index(op)]);
        return Stopwatch.GetTimestamp();
    }

    internal int Stop(FuseOpcode op, long start, int err)
    {
        long elapsed = Stopwatch.GetTimestamp() - start;
        int i = Index(op);
        Interlocked.Decrement(ref _inflight[i]);
        Interlocked.Increment(ref _count[i]);
        if (err != 0) Interlocked.Increment(ref _errors[i]);
        Interlocked.Add(ref _ticks[i], elapsed);
        long max = Volatile.Read(ref _maxTicks[i]);
        while (elapsed > max)
        {
            long seen = Interlocked.CompareExchange(ref _maxTicks[i], elapsed, max);
            if (seen == max) break;
            max = seen;
        }
        int b = 0;
        while (b < BoundsTicks.Length && elapsed > BoundsTicks[b]) b++;
        Interlocked.Increment(ref _buckets[i * (BoundsTicks.Length + 1) + b]);
        return err;
    }

    internal void AddRead(int bytes) => Interlocked.Add(ref _bytesRead, bytes);
    internal void AddWritten(int bytes) => Interlocked.Add(ref _bytesWritten, bytes);

    private static int Index(FuseOpcode op) => (int)((uint)op & (Opcodes - 1));

    public long BytesRead => Volatile.Read(ref _bytesRead);
    public long BytesWritten => Volatile.Read(ref _bytesWritten);
    public TimeSpan Uptime => Stopwatch.GetElapsedTime(_started);

    /// <summary>Opcodes seen at least once (or in flight now).</summary>
    public IReadOnlyList<VfsOpStats> Snapshot()
    {
        var list = new List<VfsOpStats>();
        double usPerTick = 1_000_000.0 / Stopwatch.Frequency;
        int nb = BoundsTicks.Length + 1;
        for (int i = 0; i < Opcodes; i++)
        {
            long count = Volatile.Read(ref _count[i]);
            long inflight = Volatile.Read(ref _inflight[i]);
            if (count == 0 && inflight == 0) continue;
            var buckets = new long[nb];
            for (int b = 0; b < nb; b++) buckets[b] = Volatile.Read(ref _buckets[i * nb + b]);
            list.Add(new VfsOpStats((FuseOpcode)i, count, Volatile.Read(ref _errors[i]), inflight,
                Volatile.Read(ref _ticks[i]) * usPerTick, Volatile.Read(ref _maxTicks[i]) * usPerTick, buckets));
        }
        return list;
    }

    /// <summary>Requests inside a filesystem right now, per opcode.</summary>
    public IReadOnlyList<(FuseOpcode Opcode, long Count)> InFlight()
    {
        var list = new List<(FuseOpcode, long)>();
        for (int i = 0; i < Opcodes; i++)
        {
            long n = Volatile.Read(ref _inflight[i]);
            if (n > 0) list.Add(((FuseOpcode)i, n));
        }
        return list;
    }
}
