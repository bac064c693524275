using System.Diagnostics;

namespace VirtioFs.Storage.Backend;

// Overview: a blob backend is where an image's data blobs live (a local directory now, an OCI registry later). It only
// reads byte ranges of a blob named by its id (the blob digest, as nydus names blob files and registry layers); it knows
// nothing about chunks, compression or digests, which are the cache's business (nydus storage/src/backend/mod.rs splits
// BlobBackend / BlobReader the same way). Backends may be remote, slow and failing, so a read reports failure as an
// errno result, never as an exception, and every read is counted in the backend's metrics.

/// <summary>
/// Reads ranges of data blobs. Implementations are thread-safe; many chunk fetches may call <see cref="ReadAt"/> at once.
/// A remote implementation bounds its own latency (timeouts, retries) and returns an errno when it gives up.
/// </summary>
public interface IBlobBackend : IDisposable
{
    /// <summary>
    /// Reads exactly <c>destination.Length</c> bytes of blob <paramref name="blobId"/> at <paramref name="offset"/>.
    /// Returns 0, or a positive errno: ENOENT (no such blob), EIO (read failed or the blob is shorter than asked),
    /// EINVAL (bad id or range), ETIMEDOUT and so on for remote backends.
    /// </summary>
    int ReadAt(string blobId, ulong offset, Span<byte> destination);

    /// <summary>A point-in-time copy of the backend's counters.</summary>
    BackendMetrics Metrics { get; }
}

/// <summary>
/// Snapshot of a backend's counters (nydus exposes the same at /api/v1/metrics/backend). Latency is kept as a histogram
/// per request-size class: <see cref="SizeLatencyBuckets"/> holds, for each of the <see cref="SizeClasses"/> size
/// classes (nydus's block-size classes), <see cref="LatencyBucketCount"/> non-cumulative counts whose upper bounds are
/// <see cref="LatencyBoundsMicros"/> (the last bucket is open-ended). The bounds include nydus's millisecond ranges
/// (1, 20, 50, 100, 500, 1000, 2000 ms), so nydus's coarser distribution can be derived from them.
/// </summary>
public sealed record BackendMetrics(long Requests, long Bytes, long Errors, TimeSpan TotalLatency, TimeSpan MaxLatency)
{
    /// <summary>Upper bounds of the latency buckets in microseconds (inclusive); one more bucket holds the rest.</summary>
    public static readonly IReadOnlyList<long> LatencyBoundsMicros =
        [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000];

    /// <summary>Number of latency buckets: one per bound plus the open-ended one.</summary>
    public static int LatencyBucketCount => LatencyBoundsMicros.Count + 1;

    /// <summary>Request-size classes, as nydus's metrics split them: &lt;1K, 1K.., 4K.., 16K.., 64K.., 128K.., 512K.., 1M...</summary>
    public const int SizeClasses = 8;

    /// <summary>Lower bounds (bytes) of the size classes.</summary>
    public static readonly IReadOnlyList<long> SizeClassLowerBounds = [0, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 512 << 10, 1 << 20];

    /// <summary>Counts per (size class, latency bucket), row-major: index <c>size * LatencyBucketCount + bucket</c>.</summary>
    public IReadOnlyList<long> SizeLatencyBuckets { get; init; } = new long[SizeClasses * LatencyBucketCount];

    /// <summary>Cumulative latency per size class.</summary>
    public IReadOnlyList<TimeSpan> SizeLatencyTotal { get; init; } = new TimeSpan[SizeClasses];

    public TimeSpan AverageLatency => Requests == 0 ? TimeSpan.Zero : TotalLatency / Requests;

    /// <summary>Non-cumulative counts per latency bucket over all size classes.</summary>
    public long[] LatencyBuckets()
    {
        var all = new long[LatencyBucketCount];
        for (int sizeClass = 0; sizeClass < SizeClasses; sizeClass++)
            for (int bucket = 0; bucket < all.Length; bucket++) all[bucket] += SizeLatencyBuckets[sizeClass * LatencyBucketCount + bucket];
        return all;
    }

    /// <summary>Requests per size class.</summary>
    public long[] RequestsPerSizeClass()
    {
        var per = new long[SizeClasses];
        for (int sizeClass = 0; sizeClass < SizeClasses; sizeClass++)
            for (int bucket = 0; bucket < LatencyBucketCount; bucket++) per[sizeClass] += SizeLatencyBuckets[sizeClass * LatencyBucketCount + bucket];
        return per;
    }

    /// <summary>
    /// Estimated latency quantile <paramref name="q"/> (0..1) from the histogram: linear interpolation inside the bucket
    /// that holds it, as Prometheus's histogram_quantile does; the open-ended bucket reports the maximum seen.
    /// Zero when nothing was recorded.
    /// </summary>
    public TimeSpan Quantile(double q)
    {
        if (!(q >= 0 && q <= 1)) throw new ArgumentOutOfRangeException(nameof(q));
        long[] buckets = LatencyBuckets();
        long total = 0;
        foreach (long n in buckets) total += n;
        if (total == 0) return TimeSpan.Zero;
        double rank = q * total;
        long seen = 0;
        for (int bucket = 0; bucket < buckets.Length; bucket++)
        {
            if (buckets[bucket] == 0 || seen + buckets[bucket] < rank) { seen += buckets[bucket]; continue; }
            if (bucket == buckets.Length - 1) return MaxLatency;
            double lower = bucket == 0 ? 0 : LatencyBoundsMicros[bucket - 1], upper = LatencyBoundsMicros[bucket];
            double us = lower + (upper - lower) * ((rank - seen) / buckets[bucket]);
            return TimeSpan.FromMicroseconds(Math.Min(us, MaxLatency.TotalMicroseconds));
        }
        return MaxLatency;
    }

    /// <summary>Size class of a request of <paramref name="bytes"/> bytes.</summary>
    public static int SizeClassOf(long bytes)
    {
        int sizeClass = SizeClasses - 1;
        while (sizeClass > 0 && bytes < SizeClassLowerBounds[sizeClass]) sizeClass--;
        return sizeClass;
    }
}

/// <summary>
/// Thread-safe counters a backend updates per read; <see cref="Snapshot"/> gives a <see cref="BackendMetrics"/>.
/// A read costs a few interlocked adds and no allocation.
/// </summary>
public sealed class BackendCounters
{
    private static readonly long[] BoundsTicks = BackendMetrics.LatencyBoundsMicros.Select(us => us * TimeSpan.TicksPerMicrosecond).ToArray();
    private long _requests, _bytes, _errors, _latencyTicks, _maxLatencyTicks;
    private readonly long[] _dist = new long[BackendMetrics.SizeClasses * BackendMetrics.LatencyBucketCount];
    private readonly long[] _sizeTicks = new long[BackendMetrics.SizeClasses];

    /// <summary>Starts timing one request; pass the result to <see cref="Complete"/>.</summary>
    public static long Start() => Stopwatch.GetTimestamp();

    /// <summary>Records one finished request of <paramref name="bytes"/> bytes (counted only when it succeeded).</summary>
    public void Complete(long startTimestamp, long bytes, bool ok)
    {
        long ticks = Stopwatch.GetElapsedTime(startTimestamp).Ticks;
        Interlocked.Increment(ref _requests);
        if (ok) Interlocked.Add(ref _bytes, bytes);
        else Interlocked.Increment(ref _errors);
        Interlocked.Add(ref _latencyTicks, ticks);
        long max = Volatile.Read(ref _maxLatencyTicks);
        while (ticks > max)
        {
            long seen = Interlocked.CompareExchange(ref _maxLatencyTicks, ticks, max);
            if (seen == max) break;
            max = seen;
        }
        // Failed requests are timed too (a timeout is exactly the latency worth seeing), classed by the size asked for.
        int size = BackendMetrics.SizeClassOf(bytes);
        int bucket = 0;
        while (bucket < BoundsTicks.Length && ticks > BoundsTicks[bucket]) bucket++;
        Interlocked.Increment(ref _dist[size * BackendMetrics.LatencyBucketCount + bucket]);
        Interlocked.Add(ref _sizeTicks[size], ticks);
    }

    public BackendMetrics Snapshot()
    {
        var dist = new long[_dist.Length];
        for (int i = 0; i < dist.Length; i++) dist[i] = Volatile.Read(ref _dist[i]);
        var sizeTotal = new TimeSpan[_sizeTicks.Length];
        for (int i = 0; i < sizeTotal.Length; i++) sizeTotal[i] = TimeSpan.FromTicks(Volatile.Read(ref _sizeTicks[i]));
        return new(Volatile.Read(ref _requests), Volatile.Read(ref _bytes), Volatile.Read(ref _errors),
            TimeSpan.FromTicks(Volatile.Read(ref _latencyTicks)), TimeSpan.FromTicks(Volatile.Read(ref _maxLatencyTicks)))
        {
            SizeLatencyBuckets = dist,
            SizeLatencyTotal = sizeTotal,
        };
    }
}
