using System.Net;
using System.Text.Json.Nodes;
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

        var daemon = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/daemon")))!;
        Assert.Equal("RUNNING", (string?)daemon["state"]);
        Assert.Equal("rafs", (string?)daemon["backend_collection"]!["/"]!["backend_type"]);

        Assert.Equal(data, File.ReadAllBytes(m.M("file")));
        var backend = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/backend?id=/")))!;
        Assert.True((long)backend["read_amount_total"]! >= data.Length / 2, backend.ToJsonString()); // lz4 of random data: about its size
        var cache = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/blobcache")))!;
        Assert.NotNull(cache["/"]);
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
}
