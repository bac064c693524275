using System.Text.Json;
using System.Text.Json.Nodes;
using VirtioFs.ImageTool.Registry;
using VirtioFs.Oci;
using VirtioFs.Oci.ObjectStorage;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// <c>vfs-image convert --backend-type s3</c> against a real S3 server (s3rver, installed by tests/setup.sh) and the real
/// registry: the data blob goes to the bucket as <c>object_prefix + blob id</c>, and the registry gets a manifest whose
/// only layer is the bootstrap, as nydusify writes it for a storage backend (nydus-snapshotter
/// pkg/converter/convert_unix.go: "do not put nydus blob layer into manifest if blob storage backend is specified").
/// </summary>
public sealed partial class ConvertTests
{
    private static string BackendConfig(S3Server s3, string prefix)
    {
        var path = Path.Combine(Cli.Temp("backend"), "s3.json");
        // nydus docs/nydusify.md "S3 Backend": the backend config file holds the backend's config object.
        File.WriteAllText(path, new JsonObject
        {
            ["scheme"] = "http", ["endpoint"] = s3.Endpoint, ["region"] = "us-east-1", ["bucket_name"] = S3Server.Bucket,
            ["object_prefix"] = prefix, ["access_key_id"] = S3Server.KeyId, ["access_key_secret"] = S3Server.Secret,
        }.ToJsonString());
        return path;
    }

    [Fact]
    public async Task Convert_with_backend_type_s3_puts_the_blob_in_the_bucket_and_only_the_bootstrap_in_the_manifest()
    {
        using var s3 = new S3Server();
        using var server = RegistryServer.Start();
        var layout = WriteLayout(MakeImage());
        string config = BackendConfig(s3, "nydus/");

        string blobId;
        using (var doc = Convert_(out _, layout, $"{server.Host}/dst/s3:v1", "--chunk-size", "64K", "--backend-type", "s3", "--backend-config", config))
        {
            var r = doc.RootElement;
            // The registry received the bootstrap layer and the config, no data blob.
            var layer = Assert.Single(r.GetProperty("layers").EnumerateArray());
            Assert.NotEqual("sha256:" + r.GetProperty("object_storage").GetProperty("blobs")[0].GetProperty("id").GetString(), layer.GetProperty("digest").GetString());
            var os = r.GetProperty("object_storage");
            Assert.Equal($"s3://{S3Server.Bucket}/nydus/", os.GetProperty("backend").GetString());
            var blob = Assert.Single(os.GetProperty("blobs").EnumerateArray());
            Assert.Equal("uploaded", blob.GetProperty("outcome").GetString());
            blobId = blob.GetProperty("id").GetString()!;
        }

        string diffId;
        using (var c = new RegistryClient(server.Options("dst/s3")))
        {
            var idx = OciJson.ParseIndex((await c.GetManifestAsync("v1")).Body);
            var entry = Assert.Single(idx.Manifests);
            Assert.Equal([OciMediaTypes.NydusRemoteImageFeature], entry.Platform!.OsFeatures);
            var m = OciJson.ParseManifest((await c.GetManifestAsync(entry.Digest)).Body);
            var boot = Assert.Single(m.Layers);
            Assert.Equal("true", boot.Annotation(OciMediaTypes.AnnotationNydusBootstrap));
            Assert.Equal($"[\"{blobId}\"]", boot.Annotation(RegistryCommands.AnnotationNydusBlobIds));
            diffId = boot.Annotation(OciMediaTypes.AnnotationUncompressed)!;
            var cfgStream = new MemoryStream();
            await c.DownloadBlobAsync(m.Config.Digest, cfgStream);
            using var cfg = JsonDocument.Parse(cfgStream.ToArray());
            Assert.Equal([diffId], cfg.RootElement.GetProperty("rootfs").GetProperty("diff_ids").EnumerateArray().Select(e => e.GetString()));
            Assert.Null(await c.GetBlobSizeAsync("sha256:" + blobId)); // the data blob is not in the registry
        }

        // The image reads back exactly: the bootstrap from the registry, the blob from the bucket.
        var d = Cli.Temp("s3pull");
        var (code, text) = Cli.Run("pull", $"{server.Host}/dst/s3:v1", "--bootstrap", Path.Combine(d, "boot"));
        Assert.True(code == 0, text);
        Directory.CreateDirectory(Path.Combine(d, "blobs"));
        using (var client = new ObjectStorageClient(s3.Options("nydus/")))
        {
            long size = (await client.GetSizeAsync(blobId)) ?? throw new InvalidOperationException($"nydus/{blobId} is not in the bucket");
            var bytes = new byte[size];
            await client.ReadAsync(blobId, 0, bytes);
            File.WriteAllBytes(Path.Combine(d, "blobs", blobId), bytes);
        }
        (code, text) = Cli.Run("unpack", Path.Combine(d, "boot"), Path.Combine(d, "tree"), "--blob-dir", Path.Combine(d, "blobs"));
        Assert.True(code == 0, text);
        AssertTree(Path.Combine(d, "tree"), Expected());

        // Again: the object is there with the right size, so nothing goes to the bucket.
        (code, text) = Cli.Run("convert", layout, $"{server.Host}/dst/s3:v2", "--chunk-size", "64K", "--backend-type", "s3", "--backend-config", config);
        Assert.True(code == 0, text);
        Assert.Contains($"data blobs in s3://{S3Server.Bucket}/nydus/ (0 uploaded)", text);
    }

    [Theory]
    [InlineData("--backend-config", "x.json")]
    [InlineData("--multipart-threshold", "8M")]
    public void Backend_options_without_backend_type_are_refused(string option, string value)
    {
        var (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), NoRegistry, option, value);
        Assert.Equal(2, code);
        Assert.Contains("go with --backend-type", text);
    }

    [Fact]
    public void A_backend_type_other_than_s3_or_oss_and_a_missing_config_are_refused_before_any_work()
    {
        var (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), NoRegistry, "--backend-type", "localfs", "--backend-config", "x.json");
        Assert.Equal(2, code);
        Assert.Contains("--backend-type takes s3 or oss", text);
        (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), NoRegistry, "--backend-type", "s3");
        Assert.Equal(2, code);
        Assert.Contains("needs --backend-config", text);
    }

    [Fact]
    public void Convert_prefetch_files_and_sign_mean_what_they_mean_for_create()
    {
        using var server = RegistryServer.Start();
        var d = Cli.Temp("signed");
        string key = Path.Combine(d, "key"), other = Path.Combine(d, "other"), list = Path.Combine(d, "prefetch.txt");
        Assert.Equal(0, Cli.Run("keygen", key).Code);
        Assert.Equal(0, Cli.Run("keygen", other).Code);
        File.WriteAllLines(list, ["/bin/tool", "  /late.txt  ", ""]);
        var (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), $"{server.Host}/dst/signed:v1", "--chunk-size", "64K",
            "--prefetch-files", list, "--sign", key);
        Assert.True(code == 0, text);

        var boot = Path.Combine(d, "boot");
        var blobs = Path.Combine(d, "blobs");
        (code, text) = Cli.Run("pull", $"{server.Host}/dst/signed:v1", "--bootstrap", boot, "--blob-dir", blobs);
        Assert.True(code == 0, text);
        (code, text) = Cli.Run("inspect", boot, "--json");
        Assert.True(code == 0, text);
        using (var doc = JsonDocument.Parse(text))
        {
            Assert.Equal(2, doc.RootElement.GetProperty("prefetch").GetInt32());
            Assert.True(doc.RootElement.GetProperty("signed").GetBoolean());
        }
        // The signature is over this image's Merkle root: the right public key verifies it, another does not.
        Assert.Equal(0, Cli.Run("check", boot, "--blob-dir", blobs, "--trust-key", key + ".pub").Code);
        Assert.Equal(1, Cli.Run("check", boot, "--blob-dir", blobs, "--trust-key", other + ".pub").Code);

        // A key that is not one, or a missing list, fails before anything is fetched or pushed.
        File.WriteAllText(Path.Combine(d, "bad.key"), "not a key");
        (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), NoRegistry, "--sign", Path.Combine(d, "bad.key"));
        Assert.Equal(1, code);
        Assert.Contains("neither 32 raw bytes nor 64 hex digits", text);
        (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), NoRegistry, "--prefetch-files", Path.Combine(d, "missing.txt"));
        Assert.Equal(1, code);
        Assert.Contains("missing.txt", text);
    }
}
