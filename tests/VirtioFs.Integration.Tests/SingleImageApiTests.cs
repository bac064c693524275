using System.Net;
using System.Text.Json.Nodes;
using VirtioFs.Daemon.Tests;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// <c>vfsd mount --bootstrap ... --apisock S</c>, as nydus-snapshotter runs a dedicated nydusd: the API reports the one
/// image (daemon state, backend and cache metrics, Prometheus text), refuses run-time mounts with 501, and
/// PUT /api/v1/daemon/exit stops the daemon, which unmounts.
/// </summary>
public sealed class SingleImageApiTests
{
    /// <summary>
    /// GET /api/v1/daemon until it says RUNNING: the API socket exists before the mount is served (state INIT), and
    /// nydus-snapshotter polls for RUNNING (pkg/daemon/daemon.go WaitUntilState: retry-go, 20 attempts from a 100 ms
    /// delay that backs off); here the delay doubles up to 1 s. Returns the last answer, RUNNING or not.
    /// </summary>
    private static async Task<string> DaemonInfoOnceRunning(HttpClient http)
    {
        string body = await http.GetStringAsync(new Uri("http://unix/api/v1/daemon"));
        for (int attempt = 1; attempt < 20 && (string?)JsonNode.Parse(body)!["state"] != "RUNNING"; attempt++)
        {
            await Task.Delay(Math.Min(100 << Math.Min(attempt - 1, 4), 1000));
            body = await http.GetStringAsync(new Uri("http://unix/api/v1/daemon"));
        }
        return body;
    }

    [Fact]
    public async Task The_api_of_a_single_image_daemon_reports_it_and_refuses_mounts()
    {
        using var ws = new ImageWorkspace();
        var data = new byte[300_000];
        new Random(3).NextBytes(data);
        File.WriteAllBytes(ws.S("file"), data);
        ws.Build("--compressor", "lz4_block");
        string api = Path.Combine(ws.Root, "api.sock");
        using var m = ws.Mount("--cache-dir", ws.CacheDir, "--apisock", api);
        VfsdApi.WaitFor(() => File.Exists(api), m.Process);
        using var http = VfsdApi.Client(api);

        var daemon = JsonNode.Parse(await DaemonInfoOnceRunning(http))!;
        Assert.Equal("RUNNING", (string?)daemon["state"]);
        Assert.Equal("rafs", (string?)daemon["backend_collection"]!["/"]!["backend_type"]);

        Assert.Equal(data, File.ReadAllBytes(m.M("file")));
        var backend = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/backend?id=/")))!;
        Assert.True((long)backend["read_amount_total"]! >= data.Length / 2, backend.ToJsonString()); // lz4 of random data: about its size
        var cache = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/blobcache")))!;
        Assert.Equal("/", (string?)cache["id"]); // without an id: the only image's document, as nydusd answers
        string prom = await http.GetStringAsync(new Uri("http://vfsd/metrics"));
        Assert.Contains("vfsd_image_info{mountpoint=\"/\"", prom, StringComparison.Ordinal);
        Assert.DoesNotContain("vfsd_fuse_requests_total", prom, StringComparison.Ordinal); // no Vfs: only the image's counters

        using (var refused = await http.PostAsync(new Uri("http://vfsd/api/v1/mount?mountpoint=/rafs/x"), VfsdApi.Body("rafs", ws.Bootstrap, "")))
            Assert.Equal(HttpStatusCode.NotImplemented, refused.StatusCode);

        using (var exit = await http.PutAsync(new Uri("http://vfsd/api/v1/daemon/exit"), null))
            Assert.Equal(HttpStatusCode.NoContent, exit.StatusCode);
        Assert.Equal(0, m.Process.WaitForExit(TimeSpan.FromSeconds(20)));
        Assert.False(ImageWorkspace.IsMounted(m.MountPoint), "exit through the API unmounts");
        Assert.False(File.Exists(api), "the API socket is removed");
    }

    /// <summary>
    /// nydus-snapshotter's calls to a dedicated daemon (pkg/daemon/client.go; pkg/metrics/serve.go passes no id to a
    /// dedicated daemon): out/vfsd started with <c>--id</c>, each answer decoded into the snapshotter's own types
    /// (pkg/daemon/types/types.go) strictly.
    /// </summary>
    [Fact]
    public async Task A_dedicated_daemon_answers_the_snapshotter_calls_in_its_types()
    {
        using var ws = new ImageWorkspace();
        var data = new byte[200_000];
        new Random(4).NextBytes(data);
        File.WriteAllBytes(ws.S("file"), data);
        ws.Build();
        string api = Path.Combine(ws.Root, "api.sock");
        using var m = ws.Mount("--cache-dir", ws.CacheDir, "--apisock", api, "--id", "snapshotter-daemon-7");
        VfsdApi.WaitFor(() => File.Exists(api), m.Process);
        using var http = VfsdApi.Client(api);

        var info = ClientJson.Decode<SnapshotterDaemonInfo>(await DaemonInfoOnceRunning(http));
        Assert.Equal("snapshotter-daemon-7", info.ID);
        Assert.Equal("RUNNING", info.State);

        Assert.Equal(data, File.ReadAllBytes(m.M("file")));
        var fs = ClientJson.Decode<SnapshotterFsMetrics>(await http.GetStringAsync(new Uri("http://unix/api/v1/metrics")));
        Assert.Equal(15, fs.FopHits.Length);
        Assert.Equal(8, fs.BlockCountRead.Length);
        Assert.Equal(8, fs.ReadLatencyDist.Length);
        Assert.True(fs.FopHits[4] >= 1, "reads are counted at StatsFop::Read");
        Assert.True(fs.DataRead >= (ulong)data.Length);

        var cache = ClientJson.Decode<SnapshotterCacheMetrics>(await http.GetStringAsync(new Uri("http://unix/api/v1/metrics/blobcache")));
        string blob = Assert.Single(cache.UnderlyingFiles);
        Assert.True(File.Exists(Path.Combine(cache.StorePath, blob)), $"{cache.StorePath}/{blob}");
        Assert.EndsWith(".blob.data", blob, StringComparison.Ordinal);

        using (var inflight = await http.GetAsync(new Uri("http://unix/api/v1/metrics/inflight")))
            Assert.Equal(HttpStatusCode.NoContent, inflight.StatusCode);
        using (var exit = await http.PutAsync(new Uri("http://unix/api/v1/daemon/exit"), null))
            Assert.Equal(HttpStatusCode.NoContent, exit.StatusCode);
        Assert.Equal(0, m.Process.WaitForExit(TimeSpan.FromSeconds(20)));
    }
}
