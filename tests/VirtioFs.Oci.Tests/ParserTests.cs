using System.Text;
using VirtioFs.Oci;
using Xunit;

namespace VirtioFs.Oci.Tests;

public sealed class ParserTests
{
    [Theory]
    [InlineData("Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull\"", "Bearer", "https://auth.example/token", "registry.example", "repository:a/b:pull")]
    [InlineData("Basic realm=\"vfs-basic\"", "Basic", "vfs-basic", null, null)]
    [InlineData("bearer  realm=\"r\" , service=s", "bearer", "r", "s", null)]
    [InlineData("Bearer realm=\"a\\\"b\",service=\"x\"", "Bearer", "a\"b", "x", null)]
    public void Challenge_parses_scheme_and_params(string header, string scheme, string realm, string? service, string? scope)
    {
        Assert.True(AuthChallenge.TryParse(header, out var c));
        Assert.Equal(scheme, c.Scheme);
        Assert.Equal(realm, c.Realm);
        Assert.Equal(service, c.Service);
        Assert.Equal(scope, c.Scope);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("Bearer realm=\"unterminated")]
    [InlineData("Bearer realm=\"a\" service=\"b\"x")]
    [InlineData("=\"x\"")]
    public void Challenge_rejects_garbage_without_throwing(string header) => Assert.False(AuthChallenge.TryParse(header, out _));

    [Fact]
    public void Challenge_parser_survives_random_bytes()
    {
        var rnd = new Random(7);
        for (int i = 0; i < 5000; i++)
        {
            var b = new char[rnd.Next(0, 80)];
            for (int j = 0; j < b.Length; j++) b[j] = "Bearer realm=\",\\ \tsx"[rnd.Next(20)];
            AuthChallenge.TryParse(new string(b), out _);
        }
        Assert.False(AuthChallenge.TryParse(new string('a', 9000) + "=b", out _));
    }

    [Theory]
    [InlineData("127.0.0.1:5000/vfs/app:v1", "127.0.0.1:5000", "vfs/app", "v1", null)]
    [InlineData("reg.example/app", "reg.example", "app", null, null)]
    [InlineData("localhost:1/a/b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "localhost:1", "a/b/c", null, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    public void Reference_parses(string s, string host, string repo, string? tag, string? digest)
    {
        var r = OciReference.Parse(s);
        Assert.Equal((host, repo, tag, digest), (r.Host, r.Repository, r.Tag, r.Digest));
    }

    [Theory]
    [InlineData("app:v1")]               // no host
    [InlineData("h/App:v1")]             // upper case repository
    [InlineData("h/a:-bad")]
    [InlineData("h/a@sha256:12")]
    [InlineData("h/a//b")]
    public void Reference_rejects_bad_names(string s) => Assert.False(OciReference.TryParse(s, out _, out _));

    [Fact]
    public void Manifest_round_trips_and_platform_selection_prefers_nydus()
    {
        var blob = NydusImage.BlobLayer(new string('a', 64), 1234);
        var m = new OciManifest(OciMediaTypes.ImageManifest, new OciDescriptor(OciMediaTypes.ImageConfig, "sha256:" + new string('b', 64), 10), [blob]);
        var parsed = OciJson.ParseManifest(OciJson.WriteManifest(m));
        Assert.Equal("true", parsed.Layers[0].Annotation(OciMediaTypes.AnnotationNydusBlob));
        Assert.Equal(1234, parsed.Layers[0].Size);
        Assert.Equal(OciMediaTypes.NydusBlob, parsed.Layers[0].MediaType);

        var amd = new OciPlatform("linux", "amd64");
        var plain = new OciDescriptor(OciMediaTypes.ImageManifest, "sha256:" + new string('1', 64), 1, Platform: amd);
        var nydus = new OciDescriptor(OciMediaTypes.ImageManifest, "sha256:" + new string('2', 64), 1, Platform: NydusImage.NydusPlatform(amd));
        var arm = new OciDescriptor(OciMediaTypes.ImageManifest, "sha256:" + new string('3', 64), 1, Platform: new OciPlatform("linux", "arm64", "v8"));
        var idx = OciJson.ParseIndex(OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex, [plain, nydus, arm])));
        Assert.Equal(nydus.Digest, OciJson.SelectPlatform(idx, amd)!.Digest);
        Assert.Equal(plain.Digest, OciJson.SelectPlatform(idx, amd, preferFeature: null)!.Digest);
        Assert.Equal(arm.Digest, OciJson.SelectPlatform(idx, OciPlatform.Parse("linux/arm64"))!.Digest);
        Assert.Null(OciJson.SelectPlatform(idx, OciPlatform.Parse("linux/s390x")));
        Assert.Contains("\"os.features\":[\"nydus.remoteimage.v1\"]", Encoding.UTF8.GetString(OciJson.WriteIndex(idx)));
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("{\"layers\":[]}")]
    [InlineData("{\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:zz\",\"size\":1},\"layers\":[]}")]
    [InlineData("{\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"size\":-1},\"layers\":[]}")]
    [InlineData("not json")]
    public void Bad_manifests_are_InvalidDataException(string json) =>
        Assert.Throws<InvalidDataException>(() => OciJson.ParseManifest(Encoding.UTF8.GetBytes(json)));

    [Fact]
    public void Bootstrap_layer_is_deterministic_and_extracts()
    {
        var dir = Directory.CreateTempSubdirectory("vfs-oci-");
        var boot = Path.Combine(dir.FullName, "boot");
        var data = new byte[100_000];
        new Random(3).NextBytes(data);
        File.WriteAllBytes(boot, data);
        var a = NydusImage.CreateBootstrapLayer(boot);
        var b = NydusImage.CreateBootstrapLayer(boot);
        Assert.Equal(a.Digest, b.Digest);
        Assert.Equal(OciDigest.Sha256(a.Compressed), a.Digest);
        var output = new MemoryStream();
        NydusImage.ExtractBootstrap(new MemoryStream(a.Compressed), output);
        Assert.Equal(data, output.ToArray());
        Assert.Throws<InvalidDataException>(() => NydusImage.ExtractBootstrap(new MemoryStream(a.Compressed[..40]), new MemoryStream()));
        dir.Delete(true);
    }

    [Fact]
    public void Docker_config_credentials_by_host_or_url()
    {
        var dir = Directory.CreateTempSubdirectory("vfs-oci-");
        var path = Path.Combine(dir.FullName, "config.json");
        string auth = Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:s3cr:et"));
        File.WriteAllText(path, $"{{\"auths\":{{\"https://reg.example:5000/v1/\":{{\"auth\":\"{auth}\"}},\"other\":{{}}}}}}");
        Assert.Equal(new RegistryCredentials("alice", "s3cr:et"), DockerConfig.Find("reg.example:5000", path));
        Assert.Null(DockerConfig.Find("reg.example", path));
        Assert.Null(DockerConfig.Find("x", Path.Combine(dir.FullName, "missing.json")));
        Assert.DoesNotContain("s3cr", new RegistryCredentials("alice", "s3cr:et").ToString());
        dir.Delete(true);
    }

    [Theory]
    [InlineData("127.0.0.1:5000", true)]
    [InlineData("localhost", true)]
    [InlineData("[::1]:5000", true)]
    [InlineData("reg.example:5000", false)]
    public void Loopback_hosts_default_to_http(string host, bool loopback) => Assert.Equal(loopback, RegistryOptions.IsLoopbackHost(host));
}
