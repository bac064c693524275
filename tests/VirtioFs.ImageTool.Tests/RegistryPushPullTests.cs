using System.Text;
using System.Text.Json;
using VirtioFs.ImageTool;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>vfs-image push/pull against the real registry: the nydusify layout, dedup on re-push, byte-identical
/// bootstrap and blobs after a pull, token auth via a docker config.json.</summary>
public sealed class RegistryPushPullTests
{


    private static (string Boot, string Blobs) Build()
    {
        var src = Cli.Temp("src");
        var rnd = new Random(11);
        var big = new byte[700_000];
        rnd.NextBytes(big);
        File.WriteAllBytes(Path.Combine(src, "big.bin"), big);
        File.WriteAllText(Path.Combine(src, "hello.txt"), "hello registry\n");
        var o = Cli.Temp("out");
        var boot = Path.Combine(o, "image.boot");
        Assert.Equal(0, Cli.Run("create", src, "--blob-dir", o, "--bootstrap", boot, "--chunk-size", "0x10000").Code);
        return (boot, o);
    }

    [Fact]
    public async Task Push_writes_the_nydus_layout_and_pull_brings_back_identical_files()
    {
        using var server = RegistryServer.Start();
        var (boot, blobs) = Build();
        var (code, text) = Cli.Run("push", boot, "--blob-dir", blobs, "--target", $"{server.Host}/vfs/app:v1", "--chunk-size", "256K", "--json");
        Assert.True(code == 0, text);
        using (var doc = JsonDocument.Parse(text))
        {
            var layers = doc.RootElement.GetProperty("layers").EnumerateArray().ToList();
            Assert.Equal(2, layers.Count); // one data blob + the bootstrap
            Assert.All(layers, l => Assert.Equal("uploaded", l.GetProperty("outcome").GetString()));
        }

        // The layout nydus tooling expects.
        using var c = new RegistryClient(new RegistryOptions { Host = server.Host, Repository = "vfs/app" });
        var idx = await c.GetManifestAsync("v1");
        Assert.Equal(OciMediaTypes.ImageIndex, idx.MediaType);
        var entry = Assert.Single(OciJson.ParseIndex(idx.Body).Manifests);
        Assert.Equal(("linux", "amd64"), (entry.Platform!.Os, entry.Platform.Architecture));
        Assert.Equal([OciMediaTypes.NydusRemoteImageFeature], entry.Platform.OsFeatures);
        var m = OciJson.ParseManifest((await c.GetManifestAsync(entry.Digest)).Body);
        var blobLayer = m.Layers[0];
        Assert.Equal(OciMediaTypes.NydusBlob, blobLayer.MediaType);
        Assert.Equal("true", blobLayer.Annotation(OciMediaTypes.AnnotationNydusBlob));
        var bootLayer = m.Layers[^1];
        Assert.Equal(OciMediaTypes.LayerTarGzip, bootLayer.MediaType);
        Assert.Equal("true", bootLayer.Annotation(OciMediaTypes.AnnotationNydusBootstrap));
        Assert.Equal("6", bootLayer.Annotation(OciMediaTypes.AnnotationNydusFsVersion));
        Assert.Equal(new FileInfo(Path.Combine(blobs, blobLayer.Digest[7..])).Length, blobLayer.Size);

        // Pushing again uploads nothing.
        (code, text) = Cli.Run("push", boot, "--blob-dir", blobs, "--target", $"{server.Host}/vfs/app:v2", "--json");
        Assert.True(code == 0, text);
        using (var doc = JsonDocument.Parse(text))
            Assert.All(doc.RootElement.GetProperty("layers").EnumerateArray(), l => Assert.Equal("already present", l.GetProperty("outcome").GetString()));

        // Pull: the bootstrap alone, then with the blobs.
        var dst = Cli.Temp("pull");
        (code, text) = Cli.Run("pull", $"{server.Host}/vfs/app:v1", "--bootstrap", Path.Combine(dst, "boot"));
        Assert.True(code == 0, text);
        Assert.Equal(File.ReadAllBytes(boot), File.ReadAllBytes(Path.Combine(dst, "boot")));
        Assert.Empty(Directory.GetFiles(dst, "*" + blobLayer.Digest[7..]));
        (code, text) = Cli.Run("pull", $"{server.Host}/vfs/app:v1", "--bootstrap", Path.Combine(dst, "boot"), "--blob-dir", Path.Combine(dst, "blobs"), "--platform", "linux/amd64");
        Assert.True(code == 0, text);
        Assert.Equal(File.ReadAllBytes(Path.Combine(blobs, blobLayer.Digest[7..])), File.ReadAllBytes(Path.Combine(dst, "blobs", blobLayer.Digest[7..])));
        Assert.Contains("blob ", text); // progress lines on a non-terminal
        // The pulled image checks out against the pulled blobs.
        (code, text) = Cli.Run("check", Path.Combine(dst, "boot"), "--blob-dir", Path.Combine(dst, "blobs"));
        Assert.True(code == 0, text);

        // No manifest for another platform; a missing tag; a bad reference.
        Assert.Equal(1, Program.Main(["pull", $"{server.Host}/vfs/app:v1", "--bootstrap", Path.Combine(dst, "x"), "--platform", "linux/arm64"]));
        Assert.Equal(1, Program.Main(["pull", $"{server.Host}/vfs/app:nope", "--bootstrap", Path.Combine(dst, "x")]));
        Assert.Equal(2, Program.Main(["pull", "no-host-here", "--bootstrap", Path.Combine(dst, "x")]));
        Assert.False(File.Exists(Path.Combine(dst, "x")));
    }

    [Fact]
    public void Push_and_pull_with_token_auth_from_a_docker_config()
    {
        using var tokens = new TokenServer { RequiredCredentials = ("ci", "pw") };
        using var server = RegistryServer.Start(token: tokens);
        var (boot, blobs) = Build();
        var cfgDir = Cli.Temp("cfg");
        var cfg = Path.Combine(cfgDir, "config.json");
        File.WriteAllText(cfg, $"{{\"auths\":{{\"{server.Host}\":{{\"auth\":\"{Convert.ToBase64String(Encoding.UTF8.GetBytes("ci:pw"))}\"}}}}}}");
        var (code, text) = Cli.Run("push", boot, "--blob-dir", blobs, "--target", $"{server.Host}/team/app:1", "--docker-config", cfg);
        Assert.True(code == 0, text);
        var dst = Cli.Temp("pull");
        (code, text) = Cli.Run("pull", $"{server.Host}/team/app:1", "--bootstrap", Path.Combine(dst, "boot"), "--docker-config", cfg);
        Assert.True(code == 0, text);
        Assert.Equal(File.ReadAllBytes(boot), File.ReadAllBytes(Path.Combine(dst, "boot")));
        // Without credentials the token server refuses: exit 1 with a clear message.
        Assert.Equal(1, Program.Main(["pull", $"{server.Host}/team/app:1", "--bootstrap", Path.Combine(dst, "b2"), "--docker-config", Path.Combine(cfgDir, "none.json")]));
    }
}
