using VirtioFs.Storage.Backend;
using VirtioFs.Vfs;

namespace VirtioFs.Daemon.Api;

/// <summary>
/// GET /metrics: the daemon's counters as one Prometheus text exposition. Daemon-wide FUSE counters are labelled by
/// opcode; every image series carries <c>mountpoint</c>. Latencies are histograms in seconds, counters end in _total,
/// everything is prefixed vfsd_. Families are written one after another, each with all of its series, as the format asks.
/// </summary>
public static class MetricsExposition
{
    /// <param name="fuse">The FUSE request counters of the API's Vfs; null when one image is served without a Vfs
    /// (<c>--bootstrap</c>/<c>--image</c> with <c>--apisock</c>), which has only its image counters.</param>
    public static string Render(VfsMetrics? fuse, IReadOnlyList<ImageMetrics> images, IReadOnlyDictionary<string, int> mountsByType)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(mountsByType);
        var w = new PrometheusWriter(4096 + images.Count * 6144);
        if (fuse is not null) WriteFuse(w, fuse);

        w.Family("vfsd_mounts", "gauge", "Filesystems mounted through the API, by type.");
        foreach (var (type, n) in mountsByType.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.Sample(new Labels("type", type), n);

        WriteImages(w, images);
        return w.ToString();
    }

    private static void WriteFuse(PrometheusWriter w, VfsMetrics fuse)
    {
        IReadOnlyList<VfsOpStats> ops = fuse.Snapshot();
        w.Family("vfsd_uptime_seconds", "gauge", "Seconds since the daemon's filesystem was created.");
        w.Sample(Labels.None, Math.Round(fuse.Uptime.TotalSeconds, 3));
        w.Family("vfsd_fuse_read_bytes_total", "counter", "Bytes returned by FUSE READ requests.");
        w.Sample(Labels.None, fuse.BytesRead);
        w.Family("vfsd_fuse_written_bytes_total", "counter", "Bytes accepted by FUSE WRITE requests.");
        w.Sample(Labels.None, fuse.BytesWritten);

        w.Family("vfsd_fuse_requests_total", "counter", "FUSE requests completed, by opcode.");
        foreach (VfsOpStats s in ops) w.Sample(Op(s), s.Count);
        w.Family("vfsd_fuse_errors_total", "counter", "FUSE requests answered with an error, by opcode.");
        foreach (VfsOpStats s in ops) w.Sample(Op(s), s.Errors);
        w.Family("vfsd_fuse_requests_in_flight", "gauge", "FUSE requests inside a filesystem now, by opcode.");
        foreach (VfsOpStats s in ops) w.Sample(Op(s), s.InFlight);

        var bounds = Seconds(VfsMetrics.LatencyBucketBoundsMicros);
        w.Family("vfsd_fuse_request_duration_seconds", "histogram", "Time a FUSE request spent in the filesystem, by opcode.");
        foreach (VfsOpStats s in ops) w.Histogram(Op(s), bounds, s.LatencyBuckets, Math.Round(s.TotalLatencyMicros / 1e6, 9));
    }

    private static void WriteImages(PrometheusWriter w, IReadOnlyList<ImageMetrics> images)
    {
        w.Family("vfsd_image_info", "gauge", "A mounted image and the kind of backend its blobs come from (always 1).");
        foreach (ImageMetrics i in images) w.Sample(new Labels("mountpoint", i.MountPoint, "backend", i.BackendType), 1L);

        Counter(w, images, "vfsd_backend_read_requests_total", "Reads issued to the image's blob backend.", i => i.Backend.Requests);
        Counter(w, images, "vfsd_backend_read_errors_total", "Backend reads that failed.", i => i.Backend.Errors);
        Counter(w, images, "vfsd_backend_read_bytes_total", "Bytes the backend returned in successful reads.", i => i.Backend.Bytes);
        var bounds = Seconds(BackendMetrics.LatencyBoundsMicros);
        w.Family("vfsd_backend_read_duration_seconds", "histogram", "Latency of backend reads, failed ones included.");
        foreach (ImageMetrics i in images)
            w.Histogram(Mp(i), bounds, i.Backend.LatencyBuckets(), i.Backend.TotalLatency.TotalSeconds);

        Counter(w, images, "vfsd_cache_reads_total", "File reads served through the image's chunk cache.", i => i.Cache.Reads);
        Counter(w, images, "vfsd_cache_read_errors_total", "File reads that failed (EIO).", i => i.Cache.ReadErrors);
        Counter(w, images, "vfsd_cache_hits_total", "Chunks found in the cache.", i => i.Cache.CacheHits);
        Counter(w, images, "vfsd_cache_misses_total", "Chunks that had to be fetched from the backend.", i => i.Cache.CacheMisses);
        Counter(w, images, "vfsd_cache_pending_waits_total", "Reads that waited for a chunk another reader was fetching.", i => i.Cache.PendingWaits);
        Counter(w, images, "vfsd_cache_digest_errors_total", "Chunks that failed to decompress or to match their digest.", i => i.Cache.DigestErrors);
        Counter(w, images, "vfsd_cache_repairs_total", "Cached chunks found corrupt and fetched again.", i => i.Cache.CacheRepairs);
        Gauge(w, images, "vfsd_cache_chunks_ready", "Chunks present in the cache.", i => i.Cache.ReadyChunks);
        Gauge(w, images, "vfsd_cache_chunks", "Chunks in the image's blobs.", i => i.Cache.TotalChunks);

        Counter(w, images, "vfsd_prefetch_files_queued_total", "Files the prefetch has taken from its list.", i => i.Prefetch.FilesQueued);
        Counter(w, images, "vfsd_prefetch_files_done_total", "Files the prefetch has finished.", i => i.Prefetch.FilesDone);
        Counter(w, images, "vfsd_prefetch_chunks_queued_total", "Data chunks of the files the prefetch has taken.", i => i.Prefetch.ChunksQueued);
        Counter(w, images, "vfsd_prefetch_chunks_fetched_total", "Chunks the prefetch fetched into the cache.", i => i.Prefetch.ChunksFetched);
        Counter(w, images, "vfsd_prefetch_chunks_cached_total", "Chunks the prefetch found already cached.", i => i.Prefetch.ChunksAlreadyCached);
        Counter(w, images, "vfsd_prefetch_bytes_queued_total", "Compressed bytes of the chunks the prefetch has taken.", i => i.Prefetch.BytesQueued);
        Counter(w, images, "vfsd_prefetch_bytes_fetched_total", "Compressed bytes the prefetch fetched.", i => i.Prefetch.BytesFetched);
        Counter(w, images, "vfsd_prefetch_errors_total", "Chunks the prefetch failed to fetch.", i => i.Prefetch.Errors);
        Gauge(w, images, "vfsd_prefetch_running", "1 while a prefetch runs.", i => i.Prefetch.State == Storage.Cache.PrefetchState.Running ? 1 : 0);
        Gauge(w, images, "vfsd_prefetch_finished", "1 once a prefetch went through its whole list.", i => i.Prefetch.Finished ? 1 : 0);
    }

    private static void Counter(PrometheusWriter w, IReadOnlyList<ImageMetrics> images, string name, string help, Func<ImageMetrics, long> value)
    {
        w.Family(name, "counter", help);
        foreach (ImageMetrics i in images) w.Sample(Mp(i), value(i));
    }

    private static void Gauge(PrometheusWriter w, IReadOnlyList<ImageMetrics> images, string name, string help, Func<ImageMetrics, long> value)
    {
        w.Family(name, "gauge", help);
        foreach (ImageMetrics i in images) w.Sample(Mp(i), value(i));
    }

    private static Labels Mp(ImageMetrics i) => new("mountpoint", i.MountPoint);

    private static Labels Op(VfsOpStats s) => new("opcode", s.Opcode.ToString().ToLowerInvariant());

    private static double[] Seconds(IReadOnlyList<long> micros)
    {
        var s = new double[micros.Count];
        for (int i = 0; i < s.Length; i++) s[i] = micros[i] / 1e6;
        return s;
    }
}
