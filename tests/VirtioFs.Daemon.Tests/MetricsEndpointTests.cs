using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Tests.Support;
using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// The metrics endpoints against the real daemon pieces: an image built by the test, mounted through the API into a
/// Vfs that the kernel serves through /dev/fuse, files read through that mount, and /metrics scraped over the API socket.
/// </summary>
public sealed class MetricsEndpointTests : IAsyncLifetime
{
    private const int ChunkSize = 1 << 20;
    // Quote and backslash in a mountpoint exercise the label escaping end to end.
    private const string MountA = "/rafs/c\"1\\x/lowerdir";
    private const string MountB = "/rafs/c2/lowerdir";

    private readonly string _root = Directory.CreateTempSubdirectory("vfs-metrics-").FullName;
    private readonly byte[] _big = new byte[2 * ChunkSize + 12345];
    private ApiDaemon _daemon = null!;
    private HttpClient _http = null!;
    private string Mnt => _daemon.MountPoint;

    private string P(string rel) => Path.Combine(_root, rel);

    public async Task InitializeAsync()
    {
        string src = Directory.CreateDirectory(P("src")).FullName;
        new Random(5).NextBytes(_big);
        await File.WriteAllBytesAsync(Path.Combine(src, "big"), _big);
        Directory.CreateDirectory(P("blobs"));
        ImageBuilder.Build(DirectorySource.Load(src), new BuildOptions
        {
            BlobDir = P("blobs"), Bootstrap = P("bootstrap"), Compressor = Compressor.Lz4Block, ChunkSize = ChunkSize, BuildTime = 1_700_000_000,
        });

        // Readahead well below the chunk size, so a read later in a chunk the kernel has not cached reaches the cache.
        _daemon = new ApiDaemon(_root, new DaemonOptions(), new FuseServerOptions { MaxReadahead = 128 * 1024 });
        _http = _daemon.Client();
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _daemon.DisposeAsync();
    }

    private async Task MountImage(string mountPoint, string cacheDir, params string[] prefetch)
    {
        string config = new JsonObject
        {
            ["device"] = new JsonObject
            {
                ["backend"] = new JsonObject { ["type"] = "localfs", ["config"] = new JsonObject { ["dir"] = P("blobs") } },
                ["cache"] = new JsonObject { ["type"] = "blobcache", ["config"] = new JsonObject { ["work_dir"] = P(cacheDir) } },
            },
        }.ToJsonString();
        var body = new JsonObject { ["source"] = P("bootstrap"), ["fs_type"] = "rafs", ["config"] = config, ["prefetch_files"] = new JsonArray(prefetch.Select(p => (JsonNode)p).ToArray()) };
        using var r = await _http.PostAsync("/api/v1/mount?mountpoint=" + Uri.EscapeDataString(mountPoint),
            new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
    }

    private async Task<List<PromSample>> Scrape()
    {
        using var r = await _http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal("text/plain", r.Content.Headers.ContentType!.MediaType);
        Assert.Contains(r.Content.Headers.ContentType.Parameters, p => p.Name == "version" && p.Value == "0.0.4");
        return PrometheusText.Parse(await r.Content.ReadAsStringAsync());
    }

    private async Task<JsonNode> Json(string url) => JsonNode.Parse(await _http.GetStringAsync(url))!;

    private byte[] ReadAt(string mountPoint, string file, long offset, int length)
    {
        using var h = File.OpenHandle(Path.Combine(Mnt, mountPoint.TrimStart('/'), file));
        var buf = new byte[length];
        Assert.Equal(length, RandomAccess.Read(h, buf, offset));
        return buf;
    }

    [Fact]
    public async Task Reads_move_backend_bytes_misses_and_hits_in_a_valid_exposition()
    {
        await MountImage(MountA, "cache-a");
        List<PromSample> before = await Scrape();
        Assert.Equal(0, before.Value("vfsd_backend_read_bytes_total", "mountpoint", MountA));
        Assert.Equal(1, before.Value("vfsd_image_info", "mountpoint", MountA));
        Assert.Equal("localfs", before.Single(s => s.Name == "vfsd_image_info").Label("backend"));
        Assert.Equal(1, before.Value("vfsd_mounts", "type", "rafs"));

        Assert.Equal(_big.AsSpan(0, 4096).ToArray(), ReadAt(MountA, "big", 0, 4096));
        List<PromSample> afterMiss = await Scrape();
        double bytes = afterMiss.Value("vfsd_backend_read_bytes_total", "mountpoint", MountA);
        double requests = afterMiss.Value("vfsd_backend_read_requests_total", "mountpoint", MountA);
        Assert.True(bytes > 0, "a cold read fetched from the backend");
        Assert.True(requests >= 1);
        Assert.Equal(requests, afterMiss.Value("vfsd_backend_read_duration_seconds_count", "mountpoint", MountA));
        Assert.True(afterMiss.Value("vfsd_cache_misses_total", "mountpoint", MountA) >= 1);
        Assert.Equal(0, afterMiss.Value("vfsd_cache_hits_total", "mountpoint", MountA));
        Assert.True(afterMiss.Value("vfsd_fuse_requests_total", "opcode", "read") >= 1);
        Assert.True(afterMiss.Value("vfsd_fuse_read_bytes_total") >= 4096);
        Assert.True(afterMiss.Value("vfsd_fuse_request_duration_seconds_count", "opcode", "lookup") >= 1);
        Assert.Equal(0, afterMiss.Value("vfsd_backend_read_errors_total", "mountpoint", MountA));

        // Later in the same chunk, beyond the kernel's readahead: the chunk is in the cache now.
        const int Later = 900 * 1024;
        Assert.Equal(_big.AsSpan(Later, 4096).ToArray(), ReadAt(MountA, "big", Later, 4096));
        List<PromSample> afterHit = await Scrape();
        Assert.True(afterHit.Value("vfsd_cache_hits_total", "mountpoint", MountA) >= 1, "a read of a cached chunk is a hit");
        Assert.Equal(bytes, afterHit.Value("vfsd_backend_read_bytes_total", "mountpoint", MountA));
        Assert.True(afterHit.Value("vfsd_cache_reads_total", "mountpoint", MountA) > afterMiss.Value("vfsd_cache_reads_total", "mountpoint", MountA));
        Assert.True(afterHit.Value("vfsd_cache_chunks_ready", "mountpoint", MountA) >= 1);
        Assert.Equal(3, afterHit.Value("vfsd_cache_chunks", "mountpoint", MountA));

        // The nydusd JSON documents carry the same counts.
        JsonNode backend = await Json("/api/v1/metrics/backend?id=" + Uri.EscapeDataString(MountA));
        Assert.Equal("localfs", (string)backend["backend_type"]!);
        Assert.Equal((long)requests, (long)backend["read_count"]!);
        Assert.Equal((long)bytes, (long)backend["read_amount_total"]!);
        JsonArray dist = backend["read_latency_sizes_dist"]!.AsArray();
        Assert.Equal(8, dist.Count);
        Assert.All(dist, row => Assert.Equal(8, row!.AsArray().Count));
        Assert.Equal((long)requests, dist.Sum(row => row!.AsArray().Sum(v => (long)v!)));
        Assert.Equal((long)requests, backend["read_count_block_size_dist"]!.AsArray().Sum(v => (long)v!));
        Assert.True((long)backend["read_latency_p50_us"]! <= (long)backend["read_latency_p99_us"]!);
        Assert.True((long)backend["read_latency_p99_us"]! <= (long)backend["read_latency_max_us"]!);
        JsonNode cache = await Json("/api/v1/metrics/blobcache?id=" + Uri.EscapeDataString(MountA));
        Assert.Equal((long)afterHit.Value("vfsd_cache_hits_total", "mountpoint", MountA), (long)cache["whole_hits"]!);
        Assert.Equal(0L, (long)cache["partial_hits"]!);
        Assert.Equal("none", (string)cache["prefetch_state"]!);
        Assert.False((bool)cache["data_all_ready"]!);
    }

    [Fact]
    public async Task Prefetch_progress_is_reported_per_image_until_finished()
    {
        await MountImage(MountA, "cache-a");
        await MountImage(MountB, "cache-b", "/big");
        JsonNode? cache = null;
        Assert.True(SpinWait.SpinUntil(() =>
        {
            cache = Json("/api/v1/metrics/blobcache?id=" + MountB).GetAwaiter().GetResult();
            return (bool)cache["prefetch_finished"]!;
        }, TimeSpan.FromSeconds(30)), "prefetch finished");
        Assert.Equal("finished", (string)cache!["prefetch_state"]!);
        Assert.Equal(1L, (long)cache["prefetch_files_total"]!);
        Assert.Equal(1L, (long)cache["prefetch_files_done"]!);
        Assert.Equal(3L, (long)cache["prefetch_chunks_total"]!);
        Assert.Equal(3L, (long)cache["prefetch_chunks_done"]! + (long)cache["prefetch_chunks_cached"]!);
        Assert.Equal((long)cache["prefetch_bytes_total"]!, (long)cache["prefetch_bytes_done"]!);
        Assert.Equal(0L, (long)cache["prefetch_errors"]!);
        Assert.True((long)cache["prefetch_end_time_secs"]! >= (long)cache["prefetch_begin_time_secs"]!);
        Assert.True((long)cache["prefetch_begin_time_secs"]! > 1_700_000_000);
        Assert.True((bool)cache["data_all_ready"]!, "the image's only data file is all prefetched");

        List<PromSample> m = await Scrape();
        Assert.Equal(1, m.Value("vfsd_prefetch_finished", "mountpoint", MountB));
        Assert.Equal(0, m.Value("vfsd_prefetch_running", "mountpoint", MountB));
        Assert.Equal(0, m.Value("vfsd_prefetch_finished", "mountpoint", MountA));
        Assert.Equal(3, m.Value("vfsd_prefetch_chunks_queued_total", "mountpoint", MountB));
        Assert.True(m.Value("vfsd_backend_read_bytes_total", "mountpoint", MountB) > 0);
        Assert.Equal(0, m.Value("vfsd_backend_read_bytes_total", "mountpoint", MountA));
        Assert.Equal(2, m.Value("vfsd_mounts", "type", "rafs"));
        // Every series is per image: the two mountpoints each have their own histogram.
        Assert.Equal(2, m.Count(s => s.Name == "vfsd_backend_read_duration_seconds_count"));

        // Unmounted images leave the exposition.
        using (var r = await _http.DeleteAsync("/api/v1/mount?mountpoint=" + MountB))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        List<PromSample> after = await Scrape();
        Assert.DoesNotContain(after, s => s.Label("mountpoint") == MountB);
        Assert.Contains(after, s => s.Label("mountpoint") == MountA);
    }

    [Fact]
    public async Task Only_get_is_allowed_and_a_daemon_without_counters_answers_404()
    {
        using (var r = await _http.DeleteAsync("/metrics"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        }
        List<PromSample> empty = await Scrape(); // nothing mounted yet: daemon-wide families only, still valid
        Assert.DoesNotContain(empty, s => s.Label("mountpoint") is not null);
        Assert.Contains(empty, s => s.Name == "vfsd_uptime_seconds");

        string sock = P("fake.sock");
        await using var server = new ApiServer(sock, new FakeDaemonControl(), NullLogger.Instance);
        server.Start();
        using var http = ApiDaemon.UnixHttpClient(sock);
        using var notFound = await http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.NotFound, notFound.StatusCode);
        using JsonDocument d = JsonDocument.Parse(await notFound.Content.ReadAsStringAsync());
        Assert.Equal("UNDEFINED", d.RootElement.GetProperty("code").GetString());
    }
}
