using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// nydus-snapshotter (containerd/nydus-snapshotter, fusedev driver, runc containers) launching <c>out/vfsd</c> as it
/// launches nydusd, and waiting as it waits:
/// <list type="bullet">
/// <item>argv from pkg/manager/daemon_adaptor.go BuildDaemonCommand through pkg/daemon/command/command.go BuildCommand
/// ("fuse" first, then "--name value" pairs in DaemonCommand field order; the failover flags --upgrade, --id,
/// --supervisor and --failover-policy belong to the failover work and are left out here);</item>
/// <item>readiness from pkg/manager/daemon_adaptor.go StartDaemon: pkg/daemon/client.go WaitUntilSocketExisted (stat
/// every 100 ms until the API path is a socket), then pkg/daemon/daemon.go WaitUntilState(RUNNING) (GET /api/v1/daemon
/// every 100 ms, 20 attempts); the image is used as soon as that returns, so the mount must already be there;</item>
/// <item>for the shared daemon, pkg/daemon/daemon.go sharedFusedevMount → pkg/daemon/client.go Mount: POST
/// /api/v1/mount?mountpoint=%2F&lt;snapshot id&gt; (url.Values.Encode) with {"fs_type":"rafs","source":BOOTSTRAP,
/// "config":JSON} (pkg/daemon/types/types.go MountRequest), and Umount: DELETE with the same query.</item>
/// </list>
/// </summary>
public sealed class SnapshotterLaunchTests
{
    /// <summary>
    /// The config the snapshotter writes for a fusedev image (config/daemonconfig/fuse.go FuseDaemonConfig marshalled by
    /// encoding/json, from misc/snapshotter/nydusd-config-localfs.json after Supplement: device.id, cache work_dir).
    /// </summary>
    private static string SnapshotterConfig(string snapshotId, string blobDir, string cacheDir) =>
        "{\"device\":{\"id\":" + JsonSerializer.Serialize("/" + snapshotId) + ",\"backend\":{\"type\":\"localfs\",\"config\":{\"dir\":"
        + JsonSerializer.Serialize(blobDir) + ",\"readahead\":false,\"proxy\":{\"fallback\":false}}},\"cache\":{\"type\":\"blobcache\","
        + "\"config\":{\"work_dir\":" + JsonSerializer.Serialize(cacheDir) + ",\"disable_indexed_map\":false}}},\"mode\":\"direct\","
        + "\"digest_validate\":false,\"enable_xattr\":true,\"amplify_io\":1048576,\"fs_prefetch\":{\"enable\":true,\"prefetch_all\":false,\"threads_count\":2}}";

    /// <summary>
    /// StartDaemon's wait: the API socket (WaitUntilSocketExisted: 100 × 100 ms there; more here, as the test machine
    /// is shared), then state RUNNING within WaitUntilState's own budget of 20 × 100 ms. Returns the daemon info.
    /// </summary>
    private static async Task<JsonNode> WaitAsSnapshotter(string apiSock, ProcessRunner vfsd)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!(File.Exists(apiSock) && IsSocket(apiSock)))
        {
            if (vfsd.HasExited || DateTime.UtcNow > deadline) throw new InvalidOperationException($"no API socket; vfsd output:\n{vfsd.Output}");
            await Task.Delay(100);
        }
        using var http = VfsdApi.Client(apiSock);
        string last = "";
        for (int attempt = 0; attempt < 20; attempt++)
        {
            try
            {
                last = await http.GetStringAsync(new Uri("http://unix/api/v1/daemon"));
                // pkg/daemon/types/types.go DaemonInfo: id (string), version (BuildTimeInfo), state (string).
                JsonNode info = JsonNode.Parse(last)!;
                if ((string?)info["state"] == "RUNNING") return info;
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            await Task.Delay(100);
        }
        throw new InvalidOperationException($"not RUNNING after 20 polls: {last}\nvfsd output:\n{vfsd.Output}");
    }

    /// <summary>Go's os.ModeSocket check: S_ISSOCK of lstat.</summary>
    private static bool IsSocket(string path) => (VirtioFs.Tests.Shared.HostSyscalls.Lstat(path).stx_mode & 0xF000) == 0xC000;

    /// <summary>The FUSE reader threads of <paramref name="pid"/> (FuseDeviceSession names them fuse-dev-N).</summary>
    private static int FuseReaderThreads(int pid) =>
        Directory.GetDirectories($"/proc/{pid}/task").Count(t => File.ReadAllText(Path.Combine(t, "comm")).StartsWith("fuse-dev-", StringComparison.Ordinal));

    [Fact]
    public async Task A_dedicated_daemon_started_with_the_snapshotters_argv_serves_the_image_at_the_mountpoint_once_running()
    {
        using var ws = new ImageWorkspace();
        using (var tree = TestTree.Generate())
        {
            Directory.Move(tree.Root, ws.S("tree"));
        }
        Directory.CreateDirectory(ws.S("not-prefetched"));
        for (int i = 0; i < 50; i++) File.WriteAllText(ws.S($"not-prefetched/n{i}"), $"outside the prefetch list {i}\n");
        ws.Build();
        // The snapshotter's per-daemon layout: <root>/snapshots/<id>/mnt, socket/<daemon>/api.sock, logs/<daemon>/nydusd.log.
        string mnt = Directory.CreateDirectory(Path.Combine(ws.Root, "snapshots", "7", "mnt")).FullName;
        string apiSock = Path.Combine(Directory.CreateDirectory(Path.Combine(ws.Root, "socket", "d1")).FullName, "api.sock");
        string logFile = Path.Combine(ws.Root, "logs", "d1", "nydusd.log");
        string config = Path.Combine(Directory.CreateDirectory(Path.Combine(ws.Root, "config", "d1")).FullName, "config.json");
        File.WriteAllText(config, SnapshotterConfig("7", ws.BlobDir, ws.CacheDir));
        Directory.CreateDirectory(ws.CacheDir);
        string prefetch = Path.Combine(ws.Root, "prefetch.list");
        File.WriteAllText(prefetch, "/tree/docs\n\n  /tree/deep  \n");

        // daemon_adaptor.go BuildDaemonCommand for a dedicated fusedev daemon with threads_number = 4,
        // log_rotation_size = 100, log_to_stdout = false and a prefetch list from the NRI plugin.
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["fuse", "--thread-num", "4", "--config", config, "--bootstrap", ws.Bootstrap,
            "--mountpoint", mnt, "--apisock", apiSock, "--log-level", "info", "--log-rotation-size", "100", "--log-file", logFile,
            "--prefetch-files", prefetch]);
        try
        {
            JsonNode info = await WaitAsSnapshotter(apiSock, vfsd);
            Assert.True(ImageWorkspace.IsMounted(mnt), "the mount is in place when RUNNING is reported");
            Assert.Equal(JsonValueKind.Object, info["version"]!.GetValueKind());

            var diffs = TreeCompare.Differences(ws.Src, mnt);
            Assert.True(diffs.Count == 0, string.Join('\n', diffs));
            Assert.Equal(4, FuseReaderThreads(vfsd.Id));

            // --prefetch-files: the listed directories' files, and only those, are queued for prefetch (nydusd reads the
            // file's lines, trimmed, blank ones skipped).
            using (var http = VfsdApi.Client(apiSock))
            {
                var cache = JsonNode.Parse(await http.GetStringAsync(new Uri("http://unix/api/v1/metrics/blobcache?id=/")))!;
                int listed = Directory.EnumerateFiles(ws.S("tree/docs"), "*", SearchOption.AllDirectories).Count()
                    + Directory.EnumerateFiles(ws.S("tree/deep"), "*", SearchOption.AllDirectories).Count();
                Assert.InRange((long)cache["prefetch_files_total"]!, 200, listed);
            }

            // --log-file: the log goes there, not to stderr.
            Assert.True(File.Exists(logFile), "log file created");
            Assert.Contains("] INFO ", File.ReadAllText(logFile), StringComparison.Ordinal);
            Assert.DoesNotContain("serving", vfsd.Output, StringComparison.Ordinal);

            using (var http = VfsdApi.Client(apiSock))
            using (var exit = await http.PutAsync(new Uri("http://unix/api/v1/daemon/exit"), null))
            {
                Assert.Equal(HttpStatusCode.NoContent, exit.StatusCode);
            }
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
            Assert.False(ImageWorkspace.IsMounted(mnt));
        }
        finally
        {
            ImageWorkspace.umount2(mnt, 2);
        }
    }

    [Fact]
    public async Task A_shared_daemon_mounts_two_images_through_the_api_as_the_snapshotter_sends_them_and_unmounts_one()
    {
        using var ws1 = new ImageWorkspace();
        using var ws2 = new ImageWorkspace();
        using (var tree = TestTree.Generate(seed: 1))
        {
            Directory.Move(tree.Root, ws1.S("tree"));
        }
        File.WriteAllText(ws2.S("only-in-two.txt"), "second image\n");
        Directory.CreateDirectory(ws2.S("etc"));
        File.WriteAllBytes(ws2.S("etc/blob.bin"), Enumerable.Range(0, 300_000).Select(i => (byte)(i * 31)).ToArray());
        ws1.Build();
        ws2.Build();
        // decideDaemonMountpoint for a shared daemon: the root mountpoint (<root>/mnt); images at <root>/mnt/<snapshot id>.
        string mnt = Directory.CreateDirectory(Path.Combine(ws1.Root, "mnt")).FullName;
        string apiSock = Path.Combine(ws1.Root, "shared-api.sock");
        Directory.CreateDirectory(ws1.CacheDir);
        Directory.CreateDirectory(ws2.CacheDir);

        // daemon_adaptor.go, shared daemon: no --config, no --bootstrap; log_to_stdout = true (no --log-file).
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["fuse", "--thread-num", "4", "--mountpoint", mnt, "--log-level", "info", "--apisock", apiSock]);
        try
        {
            await WaitAsSnapshotter(apiSock, vfsd);
            Assert.True(ImageWorkspace.IsMounted(mnt), "the shared mount is in place when RUNNING is reported");
            Assert.Empty(Directory.GetFileSystemEntries(mnt));

            using var http = VfsdApi.Client(apiSock);
            async Task<HttpStatusCode> Send(HttpMethod method, string snapshotId, ImageWorkspace? ws)
            {
                // client.go Mount/Umount: query.Add("mountpoint", rafs.RelaMountpoint()) → "?mountpoint=%2F12".
                var uri = new Uri("http://unix/api/v1/mount?mountpoint=" + Uri.EscapeDataString("/" + snapshotId));
                using var request = new HttpRequestMessage(method, uri);
                if (ws is not null)
                {
                    // types.go MountRequest in field order; the config is the daemon config as a JSON string.
                    string body = "{\"fs_type\":\"rafs\",\"source\":" + JsonSerializer.Serialize(ws.Bootstrap) + ",\"config\":"
                        + JsonSerializer.Serialize(SnapshotterConfig(snapshotId, ws.BlobDir, ws.CacheDir)) + "}";
                    request.Content = new StringContent(body, Encoding.UTF8, "application/json");
                }
                using var response = await http.SendAsync(request);
                Assert.True(response.IsSuccessStatusCode, $"{method} /{snapshotId}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
                return response.StatusCode;
            }

            Assert.Equal(HttpStatusCode.NoContent, await Send(HttpMethod.Post, "12", ws1));
            Assert.Equal(HttpStatusCode.NoContent, await Send(HttpMethod.Post, "13", ws2));
            var first = TreeCompare.Differences(ws1.Src, Path.Combine(mnt, "12"));
            Assert.True(first.Count == 0, string.Join('\n', first));
            var second = TreeCompare.Differences(ws2.Src, Path.Combine(mnt, "13"));
            Assert.True(second.Count == 0, string.Join('\n', second));
            Assert.Equal(4, FuseReaderThreads(vfsd.Id));

            var daemon = JsonNode.Parse(await http.GetStringAsync(new Uri("http://unix/api/v1/daemon")))!;
            Assert.NotNull(daemon["backend_collection"]!["/12"]);
            Assert.NotNull(daemon["backend_collection"]!["/13"]);

            Assert.Equal(HttpStatusCode.NoContent, await Send(HttpMethod.Delete, "12", null));
            // The kernel may keep the pseudo directory's entry for its timeout (1 s, VfsOptions.PseudoEntryTimeout).
            var gone = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (Directory.Exists(Path.Combine(mnt, "12")) && DateTime.UtcNow < gone) await Task.Delay(100);
            Assert.False(Directory.Exists(Path.Combine(mnt, "12")), "the unmounted image is gone");
            Assert.Equal("second image\n", File.ReadAllText(Path.Combine(mnt, "13", "only-in-two.txt")));

            ProcessKill(vfsd.Id);
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
            Assert.False(ImageWorkspace.IsMounted(mnt), "SIGTERM unmounts");
        }
        finally
        {
            ImageWorkspace.umount2(mnt, 2);
        }
    }

    [Fact]
    public async Task The_log_file_rotates_at_the_size_given()
    {
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("f"), "x\n");
        ws.Build();
        string mnt = ws.NewMountPoint();
        string apiSock = Path.Combine(ws.Root, "api.sock");
        string logDir = Directory.CreateDirectory(Path.Combine(ws.Root, "logs")).FullName;
        string logFile = Path.Combine(logDir, "nydusd.log");
        // --log-rotation-size is in MiB (nydusd: rotation_size * 1024 * 1024). At debug every API request is a log line,
        // so the test makes its MiB of log through the API.
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["fuse", "--thread-num", "2", "--bootstrap", ws.Bootstrap, "--localfs-dir", ws.BlobDir,
            "--mountpoint", mnt, "--apisock", apiSock, "--log-level", "debug", "--log-rotation-size", "1", "--log-file", logFile]);
        try
        {
            await WaitAsSnapshotter(apiSock, vfsd);
            using var http = VfsdApi.Client(apiSock);
            var longPath = new Uri("http://unix/api/v1/" + new string('x', 2000));
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
            while (Directory.GetFiles(logDir, "nydusd_r*.log.gz").Length < 2)
            {
                Assert.True(DateTime.UtcNow < deadline, $"no rotation; log is {new FileInfo(logFile).Length} bytes");
                for (int i = 0; i < 100; i++)
                {
                    using var response = await http.GetAsync(longPath); // 404, logged with its path: about 2 KiB a line
                }
            }
            ProcessKill(vfsd.Id);
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
            foreach (string gz in Directory.GetFiles(logDir, "nydusd_r*.log.gz"))
            {
                using var z = new System.IO.Compression.GZipStream(File.OpenRead(gz), System.IO.Compression.CompressionMode.Decompress);
                using var text = new MemoryStream();
                z.CopyTo(text);
                Assert.InRange(text.Length, (1L << 20) + 1, (1L << 20) + 4096); // just past 1 MiB: rotated after the line that crossed it
            }
            Assert.InRange(new FileInfo(logFile).Length, 1, 1L << 20);
            Assert.Empty(Directory.GetFiles(logDir, "nydusd_r*.log")); // rotated files are compressed
        }
        finally
        {
            ImageWorkspace.umount2(mnt, 2);
        }
    }

    private static void ProcessKill(int pid) => System.Diagnostics.Process.Start("kill", ["-TERM", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
}
