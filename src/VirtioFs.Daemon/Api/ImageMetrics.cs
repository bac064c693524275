using System.Text.Json.Nodes;
using VirtioFs.RafsFs;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Backend.Registry;
using VirtioFs.Storage.Cache;

namespace VirtioFs.Daemon.Api;

/// <summary>One mounted image's counters, read once per request so every document is built from one snapshot.</summary>
public sealed record ImageMetrics(string MountPoint, string BackendType, BackendMetrics Backend, CacheMetrics Cache, PrefetchProgress Prefetch)
{
    /// <summary>The cache directory ("" without one), nydus's <c>store_path</c>.</summary>
    public string StorePath { get; init; } = "";

    /// <summary>The cache's data files by name, nydus's <c>underlying_files</c>.</summary>
    public IReadOnlyList<string> UnderlyingFiles { get; init; } = [];

    public static ImageMetrics Of(string mountPoint, RafsMount image)
    {
        ArgumentNullException.ThrowIfNull(image);
        return new ImageMetrics(mountPoint, BackendTypeOf(image.Backend), image.Backend.Metrics, image.Cache.Metrics, image.Cache.PrefetchProgress)
        {
            StorePath = image.Cache.CacheDir is { } dir ? Path.GetFullPath(dir) : "",
            UnderlyingFiles = image.Cache.DataFileNames,
        };
    }

    /// <summary>nydus's backend_type names where they exist ("localfs", "registry", "s3", "oss").</summary>
    public static string BackendTypeOf(IBlobBackend backend) => backend switch
    {
        LocalDirectoryBackend => "localfs",
        RegistryBackend => "registry",
        RemoteBlobBackend remote => remote.Service,     // "s3", "oss"
        _ => backend.GetType().Name.Replace("Backend", "", StringComparison.Ordinal).ToLowerInvariant(),
    };

    /// <summary>nydus's latency ranges for read_latency_sizes_dist, in ms: &lt;=1, &lt;=20, &lt;=50, &lt;=100, &lt;=500, &lt;=1000, &lt;=2000, more.</summary>
    private static readonly long[] NydusLatencyBoundsMicros = [1_000, 20_000, 50_000, 100_000, 500_000, 1_000_000, 2_000_000];

    /// <summary>
    /// GET /api/v1/metrics/backend for this image: nydus's BackendMetrics fields (nydus-utils metrics.rs), then the finer
    /// histogram and quantile estimates vfsd adds. Unlike nydus, read_amount_total counts successful reads only.
    /// </summary>
    public JsonObject BackendJson()
    {
        BackendMetrics m = Backend;
        int nb = BackendMetrics.LatencyBucketCount;
        var countBySize = new JsonArray();
        var millisBySize = new JsonArray();
        var sizeLatency = new JsonArray();
        for (int s = 0; s < BackendMetrics.SizeClasses; s++)
        {
            long n = 0;
            var coarse = new long[NydusLatencyBoundsMicros.Length + 1];
            for (int b = 0; b < nb; b++)
            {
                long c = m.SizeLatencyBuckets[s * nb + b];
                n += c;
                coarse[NydusRange(b)] += c;
            }
            countBySize.Add((JsonNode)JsonValue.Create(n));
            millisBySize.Add((JsonNode)JsonValue.Create((long)m.SizeLatencyTotal[s].TotalMilliseconds));
            sizeLatency.Add((JsonNode)Array(coarse));
        }
        var bounds = new JsonArray();
        foreach (long b in BackendMetrics.LatencyBoundsMicros) bounds.Add((JsonNode)JsonValue.Create(b));
        return new JsonObject
        {
            ["id"] = MountPoint, // not in nydus's serialisation (its id is skipped); says which image this is
            ["backend_type"] = BackendType,
            ["read_count"] = m.Requests,
            ["read_errors"] = m.Errors,
            ["read_amount_total"] = m.Bytes,
            ["read_cumulative_latency_millis_total"] = (long)m.TotalLatency.TotalMilliseconds,
            ["read_cumulative_latency_millis_dist"] = millisBySize,
            ["read_count_block_size_dist"] = countBySize,
            ["read_latency_sizes_dist"] = sizeLatency,
            ["read_latency_total_us"] = (long)m.TotalLatency.TotalMicroseconds,
            ["read_latency_avg_us"] = (long)m.AverageLatency.TotalMicroseconds,
            ["read_latency_max_us"] = (long)m.MaxLatency.TotalMicroseconds,
            ["read_latency_p50_us"] = (long)m.Quantile(0.50).TotalMicroseconds,
            ["read_latency_p90_us"] = (long)m.Quantile(0.90).TotalMicroseconds,
            ["read_latency_p99_us"] = (long)m.Quantile(0.99).TotalMicroseconds,
            ["read_latency_dist"] = Array(m.LatencyBuckets()),
            ["read_latency_dist_bounds_us"] = bounds,
        };
    }

    /// <summary>
    /// GET /api/v1/metrics/blobcache for this image: every field of nydus's BlobcacheMetrics (nydus-utils metrics.rs) as
    /// nydus-snapshotter decodes them (pkg/daemon/types/types.go CacheMetrics, all unsigned), then vfsd's own counters and
    /// the prefetch progress. Chunks are cached whole, so every hit is a whole hit and partial_hits stays 0; total counts
    /// read requests (as nydus does) while whole_hits and misses count chunks. Fetches are not merged into buffers apart
    /// from the read that needs them, so buffered_backend_size and prefetch_unmerged_chunks stay 0. nydus does not
    /// serialise its id; the mountpoint is given here.
    /// </summary>
    public JsonObject CacheJson()
    {
        CacheMetrics m = Cache;
        PrefetchProgress p = Prefetch;
        var files = new JsonArray();
        foreach (string f in UnderlyingFiles) files.Add((JsonNode)JsonValue.Create(f));
        long prefetchMillis = p.Began is { } pb ? (long)Math.Max(0, ((p.Ended ?? DateTimeOffset.UtcNow) - pb).TotalMilliseconds) : 0;
        return new JsonObject
        {
            ["id"] = MountPoint,
            ["underlying_files"] = files,
            ["store_path"] = StorePath,
            ["prefetch_unmerged_chunks"] = 0,
            ["prefetch_cumulative_time_millis"] = prefetchMillis,
            ["buffered_backend_size"] = 0,
            ["total"] = m.Reads,
            ["partial_hits"] = 0,
            ["whole_hits"] = m.CacheHits,
            ["entries_count"] = m.ReadyChunks,
            ["prefetch_data_amount"] = m.PrefetchBytes,
            ["prefetch_requests_count"] = m.PrefetchChunks,
            ["prefetch_workers"] = p.Workers,
            ["prefetch_begin_time_secs"] = p.Began is { } b ? b.ToUnixTimeSeconds() : 0,
            ["prefetch_begin_time_millis"] = p.Began is { } b2 ? b2.Millisecond : 0,
            ["prefetch_end_time_secs"] = p.Ended is { } e ? e.ToUnixTimeSeconds() : 0,
            ["prefetch_end_time_millis"] = p.Ended is { } e2 ? e2.Millisecond : 0,
            ["data_all_ready"] = m.TotalChunks > 0 && m.ReadyChunks >= m.TotalChunks,
            ["misses"] = m.CacheMisses,
            ["pending_waits"] = m.PendingWaits,
            ["read_errors"] = m.ReadErrors,
            ["total_chunks"] = m.TotalChunks,
            ["chunks_fetched"] = m.ChunksFetched,
            ["backend_reads"] = m.BackendReads,
            ["backend_bytes"] = m.BackendBytes,
            ["digest_errors"] = m.DigestErrors,
            ["cache_repairs"] = m.CacheRepairs,
            ["prefetch_state"] = p.State.ToString().ToLowerInvariant(),
            ["prefetch_finished"] = p.Finished,
            ["prefetch_files_total"] = p.FilesQueued,
            ["prefetch_files_done"] = p.FilesDone,
            ["prefetch_chunks_total"] = p.ChunksQueued,
            ["prefetch_chunks_done"] = p.ChunksFetched,
            ["prefetch_chunks_cached"] = p.ChunksAlreadyCached,
            ["prefetch_bytes_total"] = p.BytesQueued,
            ["prefetch_bytes_done"] = p.BytesFetched,
            ["prefetch_errors"] = p.Errors,
        };
    }

    private static int NydusRange(int fineBucket)
    {
        if (fineBucket >= BackendMetrics.LatencyBoundsMicros.Count) return NydusLatencyBoundsMicros.Length;
        long upper = BackendMetrics.LatencyBoundsMicros[fineBucket];
        int k = 0;
        while (k < NydusLatencyBoundsMicros.Length && upper > NydusLatencyBoundsMicros[k]) k++;
        return k;
    }

    private static JsonArray Array(long[] values)
    {
        var a = new JsonArray();
        foreach (long v in values) a.Add((JsonNode)JsonValue.Create(v));
        return a;
    }
}
