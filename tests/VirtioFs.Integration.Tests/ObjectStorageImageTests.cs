using System.Text.Json.Nodes;
using VirtioFs.Integration.Tests.Infrastructure;
using VirtioFs.Oci.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// An image whose blobs live in S3, end to end with the real binaries and a real S3 server (s3rver on 127.0.0.1):
/// <c>vfs-image push --backend-type s3</c> uploads the blob, <c>vfsd mount --config</c> with a nydusd config whose
/// backend is <c>"type": "s3"</c> serves it, and a byte-counting proxy between vfsd and the server shows that a small
/// first read moves a small part of the blob (lazy pulling), then every file reads back exactly.
/// </summary>
public sealed class ObjectStorageImageTests(ITestOutputHelper output)
{
    private static string Config(string path, JsonObject backend, string? cacheDir)
    {
        var device = new JsonObject { ["backend"] = new JsonObject { ["type"] = "s3", ["config"] = backend } };
        if (cacheDir is not null) device["cache"] = new JsonObject { ["type"] = "blobcache", ["config"] = new JsonObject { ["work_dir"] = cacheDir } };
        File.WriteAllText(path, new JsonObject { ["device"] = device, ["fs_prefetch"] = new JsonObject { ["enable"] = false } }.ToJsonString());
        return path;
    }

    private static JsonObject Bucket(string endpoint) => new()
    {
        // nydus api/src/config.rs S3Config keys.
        ["scheme"] = "http", ["endpoint"] = endpoint, ["region"] = "us-east-1", ["bucket_name"] = S3Server.Bucket,
        ["object_prefix"] = "nydus/", ["access_key_id"] = S3Server.KeyId, ["access_key_secret"] = S3Server.Secret,
        ["timeout"] = 5, ["connect_timeout"] = 2, ["retry_limit"] = 2,
    };

    [Fact]
    public void An_image_pushed_to_s3_mounts_with_a_config_reads_lazily_and_reads_back_exactly()
    {
        using var s3 = new S3Server();
        using var ws = new ImageWorkspace();
        var rnd = new Random(12);
        Directory.CreateDirectory(ws.S("data"));
        for (int i = 0; i < 8; i++)
        {
            var bytes = new byte[(1 << 20) + i * 4099];
            rnd.NextBytes(bytes);
            File.WriteAllBytes(ws.S($"data/part-{i}.bin"), bytes);
        }
        Directory.CreateDirectory(ws.S("etc"));
        File.WriteAllText(ws.S("etc/motd"), "served from a bucket\n");
        ws.Build("--compressor", "lz4_block");
        long blobSize = new FileInfo(ws.BlobPath).Length;

        // Push: the blob goes in parts (threshold below its size), a second push finds it there.
        string pushConfig = Config(Path.Combine(ws.Root, "push.json"), Bucket(s3.Endpoint), null);
        (int? Code, string Output) Push()
        {
            using var p = ProcessRunner.Start(Repo.VfsImage, ["push", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--backend-type", "s3",
                "--backend-config", pushConfig, "--multipart-threshold", "6M", "--chunk-size", "5M"]);
            return (p.WaitForExit(TimeSpan.FromSeconds(120)), p.Output);
        }
        var first = Push();
        output.WriteLine(first.Output);
        Assert.True(first.Code == 0, first.Output);
        Assert.Contains("uploaded in parts", first.Output, StringComparison.Ordinal);
        var again = Push();
        Assert.True(again.Code == 0, again.Output);
        Assert.Contains("already present", again.Output, StringComparison.Ordinal);
        Assert.Contains("(0 uploaded)", again.Output, StringComparison.Ordinal);

        // Mount through a byte-counting proxy.
        using var counter = new FaultProxy(s3.Port);
        string mountConfig = Config(Path.Combine(ws.Root, "mount.json"), Bucket(counter.Host), ws.CacheDir);
        using var m = ws.MountWith("--bootstrap", ws.Bootstrap, "--config", mountConfig);
        Assert.Equal("served from a bucket\n", File.ReadAllText(m.M("etc/motd")));
        long moved = counter.BytesToClient;
        output.WriteLine($"first small read moved {moved} of the blob's {blobSize} bytes");
        Assert.True(moved > 0 && moved < blobSize / 4, $"first read moved {moved} of {blobSize} bytes");

        var diffs = TreeCompare.Differences(ws.Src, m.MountPoint);
        Assert.True(diffs.Count == 0, string.Join("\n", diffs.Take(40)));
        var (code, log) = m.Stop();
        output.WriteLine(log);
        Assert.Equal(0, code);
        Assert.Equal(0, VfsdMount.Metrics(log)["read_errors"]);
        Assert.Contains("credentials from the config", log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_api_mount_whose_config_names_s3_serves_the_image()
    {
        // A shared fusedev daemon as nydus-snapshotter starts it, and POST /api/v1/mount with a config naming s3 (the
        // path Kata's virtio-fs-nydus and the snapshotter take with an object storage backend).
        using var s3 = new S3Server();
        using var ws = new ImageWorkspace();
        using (var tree = TestTree.Generate(seed: 9))
        {
            Directory.Move(tree.Root, ws.S("tree"));
        }
        ws.Build();
        string pushConfig = Config(Path.Combine(ws.Root, "push.json"), Bucket(s3.Endpoint), null);
        using (var p = ProcessRunner.Start(Repo.VfsImage, ["push", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--backend-type", "s3", "--backend-config", pushConfig]))
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)) == 0, p.Output);
        string mnt = Directory.CreateDirectory(Path.Combine(ws.Root, "mnt")).FullName;
        string apiSock = Path.Combine(ws.Root, "api.sock");
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["fuse", "--mountpoint", mnt, "--apisock", apiSock, "--log-level", "info"]);
        try
        {
            VfsdApi.WaitFor(() => File.Exists(apiSock) && ImageWorkspace.IsMounted(mnt), vfsd);
            using var http = VfsdApi.Client(apiSock);
            string config = File.ReadAllText(Config(Path.Combine(ws.Root, "api.json"), Bucket(s3.Endpoint), ws.CacheDir));
            await VfsdApi.Mount(http, "/s3", "rafs", ws.Bootstrap, config);
            var diffs = TreeCompare.Differences(ws.Src, Path.Combine(mnt, "s3"));
            Assert.True(diffs.Count == 0, string.Join("\n", diffs.Take(40)));
            var backend = JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/backend?id=/s3")))!;
            output.WriteLine(backend.ToJsonString());
            Assert.Equal("s3", (string?)backend["backend_type"]);
        }
        finally
        {
            ImageWorkspace.umount2(mnt, 2);
        }
    }

    [Theory]
    [InlineData("AKIANOTKNOWN", S3Server.Secret, "InvalidAccessKeyId", "bucket 'vfs-test' does not know access key id 'AKIANOTKNOWN'")]
    // The right key id with a wrong secret: refused by the signature check (tests/s3rver/s3rver-sigv4.js).
    [InlineData(S3Server.KeyId, "not-the-secret", "SignatureDoesNotMatch", "bucket 'vfs-test' refused the secret given with access key id 'S3RVER'")]
    public void Wrong_credentials_give_EIO_and_a_log_naming_bucket_and_key_id(string keyId, string secret, string code, string logged)
    {
        using var s3 = new S3Server();
        using var ws = new ImageWorkspace();
        Directory.CreateDirectory(ws.S("etc"));
        File.WriteAllText(ws.S("etc/motd"), "secret\n");
        ws.Build();
        string pushConfig = Config(Path.Combine(ws.Root, "push.json"), Bucket(s3.Endpoint), null);
        using (var p = ProcessRunner.Start(Repo.VfsImage, ["push", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--backend-type", "s3", "--backend-config", pushConfig]))
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)) == 0, p.Output);
        var wrong = Bucket(s3.Endpoint);
        wrong["access_key_id"] = keyId;
        wrong["access_key_secret"] = secret;
        string mountConfig = Config(Path.Combine(ws.Root, "wrong.json"), wrong, null);
        using var m = ws.MountWith("--bootstrap", ws.Bootstrap, "--config", mountConfig);
        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllText(m.M("etc/motd")));
        output.WriteLine(e.Message);
        var (_, log) = m.Stop();
        output.WriteLine(log);
        Assert.Contains("HTTP 403 Forbidden " + code, log, StringComparison.Ordinal);
        Assert.Contains(logged, log, StringComparison.Ordinal);
        Assert.DoesNotContain("not-the-secret", log, StringComparison.Ordinal);
    }
}
