using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// The daemon's storage behaviour end to end through <c>vfsd mount</c>: reads are lazy (only the chunks of what is
/// read are fetched), cached (a second read and a restart fetch nothing), checked (a flipped blob byte costs one
/// file; a tampered cache is repaired with --verify=always) and trusted (a wrong root digest is refused at mount).
/// Counts come from the metrics vfsd logs at exit.
/// </summary>
public sealed class ImageStorageTests
{
    private static ImageWorkspace LargeImage(string compressor = "lz4_block")
    {
        var ws = new ImageWorkspace();
        var rnd = new Random(21);
        for (int i = 0; i < 24; i++)
        {
            var data = new byte[4 << 20];
            rnd.NextBytes(data);
            File.WriteAllBytes(ws.S($"large-{i:D2}.bin"), data);
        }
        Directory.CreateDirectory(ws.S("etc"));
        File.WriteAllText(ws.S("etc/small.conf"), "just one small file\n");
        var victim = new byte[3 << 20];
        rnd.NextBytes(victim);
        File.WriteAllBytes(ws.S("victim.bin"), victim);
        ws.Build("--compressor", compressor);
        return ws;
    }

    private static void DropPageCache() => File.WriteAllText("/proc/sys/vm/drop_caches", "1");

    [Fact]
    public void Reading_one_small_file_fetches_only_its_chunk_and_the_cache_serves_it_again_and_after_a_restart()
    {
        using var ws = LargeImage();
        long imageBytes = new FileInfo(ws.BlobPath).Length;
        using (var m = ws.Mount("--cache-dir", ws.CacheDir, "--no-prefetch"))
        {
            Assert.Equal("just one small file\n", File.ReadAllText(m.M("etc/small.conf")));
            DropPageCache();
            Assert.Equal("just one small file\n", File.ReadAllText(m.M("etc/small.conf")));
            var (code, log) = m.Stop();
            Assert.Equal(0, code);
            var first = VfsdMount.Metrics(log);
            Assert.Equal(1, first["backend_reads"]);
            Assert.True(first["backend_bytes"] < 1 << 20, $"fetched {first["backend_bytes"]} of {imageBytes} bytes");
            Assert.True(first["hits"] >= 1, "the second read came from the cache");
        }
        using (var m = ws.Mount("--cache-dir", ws.CacheDir, "--no-prefetch"))
        {
            Assert.Equal("just one small file\n", File.ReadAllText(m.M("etc/small.conf")));
            var (_, log) = m.Stop();
            var again = VfsdMount.Metrics(log);
            Assert.Equal(0, again["backend_reads"]);
            Assert.True(again["hits"] >= 1);
        }
    }

    [Fact]
    public void A_flipped_blob_byte_gives_EIO_for_that_file_only()
    {
        using var ws = LargeImage(compressor: "none");
        byte[] victim = File.ReadAllBytes(ws.S("victim.bin"));
        ImageWorkspace.FlipByteOf(ws.BlobPath, victim.AsSpan((2 << 20) + 1000, 64));
        using var m = ws.Mount("--cache-dir", ws.CacheDir);
        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(m.M("victim.bin")));
        Assert.Contains("Input/output error", e.Message, StringComparison.Ordinal);
        Assert.Equal(File.ReadAllBytes(ws.S("large-03.bin")), File.ReadAllBytes(m.M("large-03.bin")));
        Assert.Equal("just one small file\n", File.ReadAllText(m.M("etc/small.conf")));
        var (_, log) = m.Stop();
        Assert.True(VfsdMount.Metrics(log)["digest_errors"] >= 1);
    }

    [Fact]
    public void A_tampered_cache_file_is_repaired_from_the_backend_with_verify_always()
    {
        using var ws = LargeImage(compressor: "none");
        byte[] victim = File.ReadAllBytes(ws.S("victim.bin"));
        using (var m = ws.Mount("--cache-dir", ws.CacheDir, "--no-prefetch"))
        {
            Assert.Equal(victim, File.ReadAllBytes(m.M("victim.bin")));
            m.Stop();
        }
        ImageWorkspace.FlipByteOf(Path.Combine(ws.CacheDir, ws.BlobId + ".blob.data"), victim.AsSpan((1 << 20) + 77, 64));
        using (var m = ws.Mount("--cache-dir", ws.CacheDir, "--no-prefetch", "--verify=always"))
        {
            Assert.Equal(victim, File.ReadAllBytes(m.M("victim.bin")));
            var (_, log) = m.Stop();
            Assert.True(VfsdMount.Metrics(log)["repairs"] >= 1, log);
        }
    }

    [Fact]
    public void An_image_with_a_wrong_root_digest_is_refused_at_mount_and_over_virtio_fs()
    {
        using var ws = LargeImage();
        string wrong = (ws.RootDigest[0] == '0' ? "1" : "0") + ws.RootDigest[1..];
        string mnt = ws.NewMountPoint();
        using (var p = ProcessRunner.Start(Repo.Vfsd, ["mount", "--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--root-digest", wrong, mnt]))
        {
            Assert.Equal(1, p.WaitForExit(TimeSpan.FromSeconds(30)));
            Assert.Contains("refused", p.Output, StringComparison.Ordinal);
            Assert.False(ImageWorkspace.IsMounted(mnt));
        }
        string socket = Path.Combine(ws.Root, "refused.sock");
        using (var p = ProcessRunner.Start(Repo.Vfsd, ["--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--root-digest", wrong, "--socket-path", socket]))
        {
            Assert.Equal(1, p.WaitForExit(TimeSpan.FromSeconds(30)));
            Assert.False(File.Exists(socket), "no socket for a refused image");
        }
        using var ok = ws.Mount("--root-digest", ws.RootDigest);
        Assert.Equal("just one small file\n", File.ReadAllText(ok.M("etc/small.conf")));
    }

    [Fact]
    public void A_nydusd_json_config_serves_like_the_flags()
    {
        using var ws = LargeImage();
        string config = Path.Combine(ws.Root, "nydusd.json");
        File.WriteAllText(config,
            "{\"device\": {\"backend\": {\"type\": \"localfs\", \"config\": {\"dir\": \"" + ws.BlobDir + "\"}},\n" +
            "            \"cache\": {\"type\": \"blobcache\", \"config\": {\"work_dir\": \"" + ws.CacheDir + "\"}}},\n" +
            " \"mode\": \"direct\", \"digest_validate\": false, \"iostats_files\": false, \"enable_xattr\": true,\n" +
            " \"fs_prefetch\": {\"enable\": false}}\n");
        string mnt = ws.NewMountPoint();
        using var p = ProcessRunner.Start(Repo.Vfsd, ["mount", "--bootstrap", ws.Bootstrap, "--config", config, mnt]);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!ImageWorkspace.IsMounted(mnt) && !p.HasExited && DateTime.UtcNow < deadline) Thread.Sleep(20);
        using var m = new VfsdMount(p, mnt);
        Assert.Equal("just one small file\n", File.ReadAllText(m.M("etc/small.conf")));
        var (code, log) = m.Stop();
        Assert.Equal(0, code);
        Assert.True(Directory.EnumerateFiles(ws.CacheDir).Any(), "the config's work_dir holds the cache");
        Assert.Equal(1, VfsdMount.Metrics(log)["backend_reads"]);
    }
}
