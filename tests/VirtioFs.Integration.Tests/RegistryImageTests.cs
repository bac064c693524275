using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using VirtioFs.Integration.Tests.Infrastructure;
using VirtioFs.Oci.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Images served from a real registry (Debian's docker-registry on 127.0.0.1), end to end: built with out/vfs-image,
/// pushed with <c>vfs-image push</c>, served with <c>vfsd --image</c> / <c>vfsd mount --image</c> and through the
/// nydusd mount API. Covers what lazy pulling is for (a shell starts from a large image after fetching a small part of
/// it, counted on the wire) and what it must survive: a registry that goes away after prefetch, before a read (EIO
/// within the configured retries, then success once it is back), and during a daemon restart (the cached bootstrap).
/// Registry configs use short timeouts and one retry so failure paths take seconds.
/// </summary>
public sealed class RegistryImageTests(ITestOutputHelper output)
{
    /// <summary>nydusd config with short deadlines: a failed chunk costs about a second, not minutes.</summary>
    private static string ShortConfig(string dir, string cacheDir, string? host = null, string? repo = null)
    {
        var backend = new JsonObject { ["timeout"] = 2, ["connect_timeout"] = 1, ["retry_limit"] = 1 };
        if (host is not null) backend["host"] = host;
        if (repo is not null) backend["repo"] = repo;
        var config = new JsonObject
        {
            ["device"] = new JsonObject
            {
                ["backend"] = new JsonObject { ["type"] = "registry", ["config"] = backend },
                ["cache"] = new JsonObject { ["type"] = "blobcache", ["config"] = new JsonObject { ["work_dir"] = cacheDir } },
            },
        };
        string path = Path.Combine(dir, $"nydusd-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    private static void DropPageCache() => File.WriteAllText("/proc/sys/vm/drop_caches", "3");

    /// <summary>A few MiB of random files plus small ones: enough chunks that "every file" is a real prefetch.</summary>
    private static ImageWorkspace SmallImage(int seed)
    {
        var ws = new ImageWorkspace();
        var rnd = new Random(seed);
        Directory.CreateDirectory(ws.S("data"));
        for (int i = 0; i < 6; i++)
        {
            var bytes = new byte[(1 << 20) + i * 4099];
            rnd.NextBytes(bytes);
            File.WriteAllBytes(ws.S($"data/part-{i}.bin"), bytes);
        }
        Directory.CreateDirectory(ws.S("etc"));
        File.WriteAllText(ws.S("etc/motd"), "served from a registry\n");
        ws.Build("--compressor", "lz4_block");
        return ws;
    }

    private static void AssertSameFiles(string src, string mnt)
    {
        var diffs = TreeCompare.Differences(src, mnt);
        Assert.True(diffs.Count == 0, string.Join("\n", diffs.Take(40)));
    }

    [Fact]
    public void Host_mount_of_an_image_reference_shows_the_source_tree()
    {
        using var registry = RegistryServer.Start();
        using var ws = new ImageWorkspace();
        using (var tree = TestTree.Generate(seed: 5))
        {
            Directory.Move(tree.Root, ws.S("tree"));
        }
        ws.Build("--compressor", "lz4_block");
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "tree/host:v1");

        using var m = ws.MountWith("--image", reference, "--cache-dir", ws.CacheDir);
        AssertSameFiles(ws.Src, m.MountPoint);
        var (code, log) = m.Stop();
        output.WriteLine(log);
        Assert.Equal(0, code);
        Assert.Equal(0, VfsdMount.Metrics(log)["read_errors"]);
        Assert.Contains("is manifest sha256:", log, StringComparison.Ordinal);
        // The bootstrap was installed under the manifest digest, beside a record of the tag for offline restarts.
        Assert.Single(Directory.GetFiles(Path.Combine(ws.CacheDir, "images"), "*.boot"));
        Assert.Single(Directory.GetFiles(Path.Combine(ws.CacheDir, "images"), "*.ref"));
    }

    [Fact]
    public void Bad_references_missing_images_and_a_down_registry_without_cache_are_clear_errors()
    {
        using var registry = RegistryServer.Start();
        using var ws = SmallImage(3);
        registry.Push(ws.Bootstrap, ws.BlobDir, "small/img:v1");
        string mnt = ws.NewMountPoint();

        (int? Code, string Output) Run(params string[] args)
        {
            using var p = ProcessRunner.Start(Repo.Vfsd, ["mount", .. args, mnt]);
            return (p.WaitForExit(TimeSpan.FromSeconds(60)), p.Output);
        }

        var bad = Run("--image", "no-host-here", "--cache-dir", ws.CacheDir);
        Assert.Equal(2, bad.Code);
        Assert.Contains("--image 'no-host-here'", bad.Output, StringComparison.Ordinal);

        var both = Run("--image", $"{registry.Host}/small/img:v1", "--bootstrap", ws.Bootstrap, "--cache-dir", ws.CacheDir);
        Assert.Equal(2, both.Code);
        Assert.Contains("cannot be used together", both.Output, StringComparison.Ordinal);

        var missing = Run("--image", $"{registry.Host}/small/img:nope", "--cache-dir", ws.CacheDir);
        Assert.Equal(1, missing.Code);
        Assert.Contains("not found in the registry", missing.Output, StringComparison.Ordinal);

        var platform = Run("--image", $"{registry.Host}/small/img:v1", "--platform", "linux/arm64", "--cache-dir", ws.CacheDir);
        Assert.Equal(1, platform.Code);
        Assert.Contains("no manifest for platform linux/arm64", platform.Output, StringComparison.Ordinal);

        registry.Stop();
        var clock = Stopwatch.StartNew();
        var down = Run("--image", $"{registry.Host}/small/img:v1", "--cache-dir", ws.CacheDir, "--config", ShortConfig(ws.Root, ws.CacheDir));
        Assert.Equal(1, down.Code);
        Assert.Contains("registry unreachable", down.Output, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"gave up after {clock.Elapsed}");
        Assert.False(ImageWorkspace.IsMounted(mnt));
    }

    [Fact]
    public void Starting_a_shell_from_a_large_image_pulls_a_small_fraction_of_it_over_the_wire()
    {
        using var registry = RegistryServer.Start();
        using var proxy = new CountingProxy(registry.Port);
        using var ws = new ImageWorkspace();
        Directory.CreateDirectory(ws.S("bin"));
        File.Copy(BusyboxPath(), ws.S("bin/busybox"));
        File.SetUnixFileMode(ws.S("bin/busybox"), (UnixFileMode)Convert.ToInt32("755", 8));
        File.CreateSymbolicLink(ws.S("bin/sh"), "busybox");
        Directory.CreateDirectory(ws.S("payload"));
        var rnd = new Random(64);
        for (int i = 0; i < 4; i++)
        {
            var bytes = new byte[16 << 20];
            rnd.NextBytes(bytes);
            File.WriteAllBytes(ws.S($"payload/blob-{i}.bin"), bytes);
        }
        ws.Build("--compressor", "lz4_block");
        registry.Push(ws.Bootstrap, ws.BlobDir, "lazy/busybox:v1");
        long blobBytes = new FileInfo(ws.BlobPath).Length;

        // The daemon talks to the registry through the proxy, which counts what crosses the wire.
        proxy.Reset();
        using var m = ws.MountWith("--image", $"{proxy.Host}/lazy/busybox:v1", "--cache-dir", ws.CacheDir);
        using (var chroot = ProcessRunner.Start("chroot", [m.MountPoint, "/bin/sh", "-c", "echo ok"]))
        {
            Assert.Equal(0, chroot.WaitForExit(TimeSpan.FromSeconds(60)));
            Assert.Equal("ok", chroot.Output.Trim());
        }
        long pulled = proxy.BytesFromRegistry;
        var (code, log) = m.Stop();
        output.WriteLine($"pulled {pulled} of {blobBytes} blob bytes\n{log}");
        Assert.Equal(0, code);
        Assert.True(pulled > 0, "the manifest, bootstrap and busybox chunks came through the proxy");
        Assert.True(pulled < blobBytes / 10, $"pulled {pulled} bytes for a {blobBytes}-byte blob");
    }

    [Fact]
    public void After_prefetch_the_image_keeps_working_with_the_registry_stopped_and_a_restart_starts_from_the_cache()
    {
        using var registry = RegistryServer.Start();
        using var ws = SmallImage(7);
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "survive/prefetch:v1");
        string config = ShortConfig(ws.Root, ws.CacheDir);

        using (var m = ws.MountWith("--image", reference, "--cache-dir", ws.CacheDir, "--config", config, "--prefetch-all"))
        {
            var clock = Stopwatch.StartNew();
            while (!m.Process.Output.Contains("prefetch finished", StringComparison.Ordinal))
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), "prefetch did not finish:\n" + m.Process.Output);
                Thread.Sleep(50);
            }
            Assert.Contains("0 errors", m.Process.Output, StringComparison.Ordinal);
            registry.Stop();
            DropPageCache();
            AssertSameFiles(ws.Src, m.MountPoint);
            var (code, log) = m.Stop();
            Assert.Equal(0, code);
            Assert.Equal(0, VfsdMount.Metrics(log)["read_errors"]);
        }

        // A restart while the registry is still down resolves the tag from the cache's record, and the chunk cache
        // holds every file, so nothing needs the network.
        using (var m = ws.MountWith("--image", reference, "--cache-dir", ws.CacheDir, "--config", config))
        {
            DropPageCache();
            AssertSameFiles(ws.Src, m.MountPoint);
            var (code, log) = m.Stop();
            output.WriteLine(log);
            Assert.Equal(0, code);
            Assert.Contains("serving image", log, StringComparison.Ordinal);
            Assert.Contains("cached bootstrap", log, StringComparison.Ordinal);
            Assert.Equal(0, VfsdMount.Metrics(log)["backend_reads"]);
        }
    }

    [Fact]
    public void Without_prefetch_an_unfetched_read_fails_with_EIO_in_bounded_time_and_works_once_the_registry_is_back()
    {
        using var registry = RegistryServer.Start();
        using var ws = SmallImage(9);
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "survive/lazy:v1");
        using var m = ws.MountWith("--image", reference, "--cache-dir", ws.CacheDir, "--config", ShortConfig(ws.Root, ws.CacheDir), "--no-prefetch");

        Assert.Equal("served from a registry\n", File.ReadAllText(m.M("etc/motd")));
        registry.Stop();
        var clock = Stopwatch.StartNew();
        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(m.M("data/part-3.bin")));
        clock.Stop();
        Assert.Contains("Input/output error", e.Message, StringComparison.Ordinal);
        // One retry, 1 s connect and 2 s request deadlines: a refused connection fails at once, a hang within seconds.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"EIO took {clock.Elapsed}");

        registry.Resume();
        Assert.Equal(File.ReadAllBytes(ws.S("data/part-3.bin")), File.ReadAllBytes(m.M("data/part-3.bin")));
        var (code, log) = m.Stop();
        output.WriteLine(log);
        Assert.Equal(0, code);
        Assert.True(VfsdMount.Metrics(log)["read_errors"] >= 1, "the failed read was counted");
    }

    [Fact]
    public async Task An_api_mount_of_a_reference_reports_its_registry_traffic_in_the_backend_metrics()
    {
        using var registry = RegistryServer.Start();
        using var ws = new ImageWorkspace();
        var bytes = new byte[3 << 20];
        new Random(5).NextBytes(bytes);
        File.WriteAllBytes(ws.S("payload.bin"), bytes);
        ws.Build("--compressor", "lz4_block");
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "api/metrics:v1");

        string apiSocket = Path.Combine(Path.GetTempPath(), $"vfsd-api-{Guid.NewGuid():N}.sock");
        string vhostSocket = Path.Combine(Path.GetTempPath(), $"vfsd-{Guid.NewGuid():N}.sock");
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["--apisock", apiSocket, "--socket-path", vhostSocket]);
        try
        {
            VfsdApi.WaitFor(() => File.Exists(apiSocket) && File.Exists(vhostSocket), vfsd);
            using var http = VfsdApi.Client(apiSocket);
            // Prefetch every file so traffic happens without a guest; the metrics count it per mountpoint.
            string config = RegistryImageGuestTests.JsonConfig(ws.CacheDir, null, null, prefetchAll: true);
            await VfsdApi.Mount(http, "/rafs/c1/lowerdir", "rafs", reference, config);
            using (var bad = await http.PostAsync(new Uri("http://vfsd/api/v1/mount?mountpoint=/rafs/c2/lowerdir"),
                VfsdApi.Body("rafs", $"{registry.Host}/api/absent:v1", config)))
            {
                Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
                Assert.Contains("not found in the registry", await bad.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }
            var clock = Stopwatch.StartNew();
            long read = 0;
            while (read < bytes.Length / 2 && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                var m = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/backend?id=/rafs/c1/lowerdir")))!;
                read = (long)m["read_amount_total"]!;
                Thread.Sleep(100);
            }
            Assert.True(read >= bytes.Length / 2, $"backend read {read} bytes");
            using var exit = await http.PutAsync(new Uri("http://vfsd/api/v1/daemon/exit"), null);
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            output.WriteLine(vfsd.Output);
            File.Delete(apiSocket);
            File.Delete(vhostSocket);
        }
    }

    internal static string BusyboxPath()
    {
        foreach (string p in new[] { "/bin/busybox", "/usr/bin/busybox" })
            if (File.Exists(p)) return p;
        throw new InvalidOperationException("busybox is missing: run tests/setup.sh (package busybox-static)");
    }
}

/// <summary>
/// The guest side: <c>vfsd --image</c> as the virtio-fs device of a QEMU guest, and Kata's nydus arrangement (an API
/// mount of a bootstrap with a registry backend config, as the snapshotter sends it, beside an API mount whose source is
/// the image reference) read by the guest while a host <c>vfsd mount --image</c> of the same image reads too.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class RegistryImageGuestTests(ITestOutputHelper output)
{
    [Fact]
    public void A_guest_sees_an_image_served_with_vfsd_image_exactly_as_the_source_tree()
    {
        using var registry = RegistryServer.Start();
        using var ws = new ImageWorkspace();
        IReadOnlyList<string> manifest;
        using (var tree = TestTree.Generate(seed: 3))
        {
            manifest = tree.ExpectedManifest;
            Directory.Move(tree.Root, ws.S("tree"));
        }
        ws.Build("--compressor", "lz4_block");
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "guest/tree:v1");

        using var vfsd = Vfsd.Start("--image", reference, "--cache-dir", ws.CacheDir, "--tag", "vfs", "--thread-pool-size", "2");
        var result = Guest.Run(TestTree.GuestManifestScript("/mnt/vfs/tree"), [("vfs", vfsd.SocketPath)], output);
        Assert.Equal(0, result.ExitCode);
        PassthroughGuestTests.AssertSameManifest(manifest, result.Lines("M"));
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains("is manifest sha256:", vfsd.Process.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Kata_api_mounts_of_a_registry_image_serve_the_guest_while_a_host_mount_reads_it()
    {
        using var registry = RegistryServer.Start();
        using var ws = new ImageWorkspace();
        var rnd = new Random(17);
        var files = new Dictionary<string, string>();
        for (int i = 0; i < 4; i++)
        {
            var bytes = new byte[(2 << 20) + i * 777];
            rnd.NextBytes(bytes);
            File.WriteAllBytes(ws.S($"f{i}.bin"), bytes);
            files[$"f{i}.bin"] = Convert.ToHexStringLower(SHA256.HashData(bytes));
        }
        ws.Build("--compressor", "lz4_block");
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "kata/image:v1");
        using var shared = new TestTree();
        File.SetUnixFileMode(shared.Root, (UnixFileMode)Convert.ToInt32("755", 8));

        string apiSocket = Path.Combine(Path.GetTempPath(), $"vfsd-api-{Guid.NewGuid():N}.sock");
        string vhostSocket = Path.Combine(Path.GetTempPath(), $"vfsd-{Guid.NewGuid():N}.sock");
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["--apisock", apiSocket, "--socket-path", vhostSocket, "--thread-pool-size", "2"]);
        try
        {
            VfsdApi.WaitFor(() => File.Exists(apiSocket) && File.Exists(vhostSocket), vfsd);
            using var http = VfsdApi.Client(apiSocket);
            await VfsdApi.Mount(http, "/containers", "passthrough_fs", shared.Root, "");
            // What nydus-snapshotter sends for Kata: the bootstrap file it unpacked and a registry backend config.
            string registryConfig = JsonConfig(ws.CacheDir + "-c1", registry.Host, "kata/image");
            await VfsdApi.Mount(http, "/rafs/c1/lowerdir", "rafs", ws.Bootstrap, registryConfig);
            // The reference itself as the source: vfsd fetches the bootstrap into the config's cache directory.
            await VfsdApi.Mount(http, "/rafs/c2/lowerdir", "rafs", reference, JsonConfig(ws.CacheDir + "-c2", null, null));

            var sums = string.Join("\n", files.Keys.Select(f =>
                $"echo \"@@SUM c1 {f} $(sha256sum /mnt/vfs/rafs/c1/lowerdir/{f} | cut -d' ' -f1)\"\n" +
                $"echo \"@@SUM c2 {f} $(sha256sum /mnt/vfs/rafs/c2/lowerdir/{f} | cut -d' ' -f1)\""));
            var guest = Task.Run(() => Guest.Run(sums, [("vfs", vhostSocket)], output));

            // Meanwhile the host serves the same image from its own daemon and cache.
            using (var m = ws.MountWith("--image", reference, "--cache-dir", ws.CacheDir + "-host"))
            {
                do
                {
                    foreach (var (name, sum) in files)
                        Assert.Equal(sum, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(m.M(name)))));
                    DropCaches();
                }
                while (!guest.IsCompleted);
                Assert.Equal(0, m.Stop().ExitCode);
            }

            GuestResult result = await guest;
            Assert.Equal(0, result.ExitCode);
            var expected = files.SelectMany(kv => new[] { $"c1 {kv.Key} {kv.Value}", $"c2 {kv.Key} {kv.Value}" }).Order(StringComparer.Ordinal);
            Assert.Equal(expected, result.Lines("SUM").Order(StringComparer.Ordinal));
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            output.WriteLine(vfsd.Output);
            File.Delete(apiSocket);
            File.Delete(vhostSocket);
        }
    }

    private static void DropCaches() => File.WriteAllText("/proc/sys/vm/drop_caches", "3");

    internal static string JsonConfig(string cacheDir, string? host, string? repo, bool prefetchAll = false)
    {
        var backend = new JsonObject { ["timeout"] = 5, ["connect_timeout"] = 2, ["retry_limit"] = 2 };
        if (host is not null) backend["host"] = host;
        if (repo is not null) backend["repo"] = repo;
        var config = new JsonObject
        {
            ["device"] = new JsonObject
            {
                ["backend"] = new JsonObject { ["type"] = "registry", ["config"] = backend },
                ["cache"] = new JsonObject { ["type"] = "blobcache", ["config"] = new JsonObject { ["work_dir"] = cacheDir } },
            },
            ["mode"] = "direct",
            ["digest_validate"] = false,
        };
        if (prefetchAll) config["fs_prefetch"] = new JsonObject { ["enable"] = true, ["prefetch_all"] = true };
        return config.ToJsonString();
    }
}
