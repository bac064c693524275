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

/// <summary>Snapshot of a backend's counters (nydus exposes the same at /api/v1/metrics/backend).</summary>
public sealed record BackendMetrics(long Requests, long Bytes, long Errors, TimeSpan TotalLatency, TimeSpan MaxLatency)
{
    public TimeSpan AverageLatency => Requests == 0 ? TimeSpan.Zero : TotalLatency / Requests;
}

/// <summary>Thread-safe counters a backend updates per read; <see cref="Snapshot"/> gives a <see cref="BackendMetrics"/>.</summary>
public sealed class BackendCounters
{
    private long _requests, _bytes, _errors, _latencyTicks, _maxLatencyTicks;

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
    }

    public BackendMetrics Snapshot() => new(Volatile.Read(ref _requests), Volatile.Read(ref _bytes), Volatile.Read(ref _errors),
        TimeSpan.FromTicks(Volatile.Read(ref _latencyTicks)), TimeSpan.FromTicks(Volatile.Read(ref _maxLatencyTicks)));
}
