using System.Text.Json.Nodes;
using VirtioFs.Integration.Tests.Infrastructure;
using VirtioFs.Oci.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// <c>vfs-image convert --backend-type s3</c> end to end with the real binaries, Debian's docker-registry and a real S3
/// server (s3rver): an OCI image with two layers (overwrite, whiteouts) is converted, the data blob lands in the bucket
/// and the registry gets a bootstrap-only nydus manifest (as nydusify writes it with --backend-type, docs/nydusify.md);
/// the bootstrap pulled from the registry then mounts with <c>vfsd mount --config</c> whose backend is the bucket, and
/// the tree reads back exactly; so it does with <c>vfsd mount --image REF --config</c> (bootstrap from the registry,
/// blobs from the bucket), as nydus-snapshotter mounts such an image.
/// </summary>
public sealed class ConvertObjectStorageImageTests(ITestOutputHelper output)
{
    [Fact]
    public async Task An_image_converted_with_backend_type_s3_mounts_from_the_bucket_and_reads_back_exactly()
    {
        using var s3 = new S3Server();
        using var registry = RegistryServer.Start();
        var (lower, upper) = RegistryAuthImageTests.TreeLayers();
        var image = new OciTestImage().Layer(lower).Layer(upper);
        await image.PushAsync(registry.Options("src/app"), "v1");
        using var ws = new ImageWorkspace();

        // nydus api/src/config.rs S3Config keys; convert takes the backend's config object, vfsd a whole nydusd config.
        var bucket = new JsonObject
        {
            ["scheme"] = "http", ["endpoint"] = s3.Endpoint, ["region"] = "us-east-1", ["bucket_name"] = S3Server.Bucket,
            ["object_prefix"] = "converted/", ["access_key_id"] = S3Server.KeyId, ["access_key_secret"] = S3Server.Secret,
            ["timeout"] = 5, ["connect_timeout"] = 2, ["retry_limit"] = 2,
        };
        string backendConfig = Path.Combine(ws.Root, "backend.json");
        File.WriteAllText(backendConfig, bucket.ToJsonString());
        using (var p = ProcessRunner.Start(Repo.VfsImage, ["convert", $"{registry.Host}/src/app:v1", $"{registry.Host}/nydus/app:v1",
                   "--backend-type", "s3", "--backend-config", backendConfig]))
        {
            int? code = p.WaitForExit(TimeSpan.FromMinutes(3));
            output.WriteLine(p.Output);
            Assert.True(code == 0, p.Output);
            Assert.Contains($"data blobs in s3://{S3Server.Bucket}/converted/ (1 uploaded)", p.Output, StringComparison.Ordinal);
        }

        // The registry holds the bootstrap only: pull finds no data blob to fetch.
        string boot = Path.Combine(ws.Root, "pulled.boot");
        using (var p = ProcessRunner.Start(Repo.VfsImage, ["pull", $"{registry.Host}/nydus/app:v1", "--bootstrap", boot, "--blob-dir", Path.Combine(ws.Root, "pulled-blobs"), "--json"]))
        {
            Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)) == 0, p.Output);
            var report = JsonNode.Parse(p.Output[p.Output.IndexOf('{', StringComparison.Ordinal)..])!;
            Assert.Empty(report["blobs"]!.AsArray());
        }

        string mountConfig = Path.Combine(ws.Root, "mount.json");
        File.WriteAllText(mountConfig, new JsonObject
        {
            ["device"] = new JsonObject
            {
                ["backend"] = new JsonObject { ["type"] = "s3", ["config"] = bucket.DeepClone() },
                ["cache"] = new JsonObject { ["type"] = "blobcache", ["config"] = new JsonObject { ["work_dir"] = ws.CacheDir } },
            },
        }.ToJsonString());
        using (var m = ws.MountWith("--bootstrap", boot, "--config", mountConfig))
        {
            Assert.Equal("upper\n", File.ReadAllText(m.M("etc/hostname")));
            AssertServedExactlyFromTheBucket(m, image);
        }

        // vfsd --image with the bucket's config, cold cache: the bootstrap is resolved from the registry's
        // bootstrap-only manifest, the data from the bucket.
        string imageCache = Path.Combine(ws.Root, "image-cache");
        using (var m = ws.MountWith("--image", $"{registry.Host}/nydus/app:v1", "--config", mountConfig, "--cache-dir", imageCache))
        {
            string log = AssertServedExactlyFromTheBucket(m, image);
            Assert.Contains("credentials from the config", log, StringComparison.Ordinal);   // the bucket's backend served it
        }
    }

    /// <summary>The mount holds exactly the image's tree, read without errors and with data from the backend; returns
    /// the daemon's log.</summary>
    private string AssertServedExactlyFromTheBucket(VfsdMount m, OciTestImage image)
    {
        var diffs = image.Differences(m.MountPoint);
        Assert.True(diffs.Count == 0, string.Join("\n", diffs.Take(40)));
        var (exit, log) = m.Stop();
        output.WriteLine(log);
        Assert.Equal(0, exit);
        Assert.Equal(0, VfsdMount.Metrics(log)["read_errors"]);
        Assert.True(VfsdMount.Metrics(log)["backend_reads"] > 0, "file data came from the bucket");
        return log;
    }
}
