using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Images;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using VirtioFs.RafsFs;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary><c>--image</c> and <c>--platform</c> on the command line: what is accepted and what is refused, with why.</summary>
public class ImageOptionTests
{
    [Fact]
    public void Image_reference_with_a_cache_dir_serves_over_vhost_user_or_fuse()
    {
        var o = OptionParser.Parse(["--image", "127.0.0.1:5000/library/app:v2", "--cache-dir", "/var/cache/vfs", "--socket-path", "/tmp/s"]);
        Assert.Equal(new OciReference("127.0.0.1:5000", "library/app", "v2", null), o.Image);
        Assert.Equal("linux/amd64", o.Platform.ToString());
        Assert.True(o.ServesImage);
        Assert.Null(o.Bootstrap);

        var m = OptionParser.Parse(["mount", "--image=reg.example.com/app@sha256:" + new string('a', 64), "--config", "/etc/nydusd.json",
            "--platform", "linux/arm64/v8", "/mnt/x"]);
        Assert.Equal(DaemonMode.FuseMount, m.Mode);
        Assert.Equal("sha256:" + new string('a', 64), m.Image!.Reference);
        Assert.Equal(new OciPlatform("linux", "arm64", "v8"), m.Platform);
        Assert.Equal("/mnt/x", m.MountPoint);
    }

    [Theory]
    [InlineData("--image 'no-registry': no registry host", "--image", "no-registry", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("--image 'r.io/Upper:v1': bad repository name", "--image", "r.io/Upper:v1", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("--bootstrap and --image cannot be used together", "--image", "r.io/a:v1", "--bootstrap", "/b", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("--blob-dir does not apply", "--image", "r.io/a:v1", "--blob-dir", "/b", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("--image needs --cache-dir", "--image", "r.io/a:v1", "--socket-path", "/s")]
    [InlineData("--platform needs --image", "--shared-dir", "/srv", "--platform", "linux/amd64", "--socket-path", "/s")]
    [InlineData("is not os/arch", "--image", "r.io/a:v1", "--platform", "amd64", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("cannot be combined with --bootstrap or --image", "--image", "r.io/a:v1", "--shared-dir", "/srv", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("vfsd mount needs --bootstrap IMAGE or --image REF", "mount", "/mnt")]
    public void Bad_image_command_lines_are_refused_with_the_reason(string reason, params string[] args)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(args));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--apisock", "/a", "--image", "r.io/a:v1", "--cache-dir", "/c", "--socket-path", "/s")]
    [InlineData("mount", "--apisock", "/a", "--bootstrap", "/b", "--blob-dir", "/d", "/mnt")]
    public void Apisock_with_one_image_reports_on_it(params string[] args)
    {
        var o = OptionParser.Parse(args);
        Assert.Equal("/a", o.ApiSocket);
        Assert.True(o.ServesImage);
    }

    [Fact]
    public void Platform_is_accepted_with_apisock_for_api_mounts_of_references()
    {
        var o = OptionParser.Parse(["--apisock", "/a", "--socket-path", "/s", "--platform", "linux/arm64"]);
        Assert.Equal("linux/arm64", o.Platform.ToString());
    }
}

/// <summary>How a nydusd config is turned into the registry backend of an image reference.</summary>
public class RegistryImageConfigTests
{
    private static readonly OciReference Ref = OciReference.Parse("127.0.0.1:5000/team/app:v1");

    [Fact]
    public void No_config_gives_a_registry_backend_for_the_reference_with_docker_credentials()
    {
        var json = JsonNode.Parse(RegistryImage.RegistryConfig(null, Ref))!;
        Assert.Equal("registry", (string?)json["device"]!["backend"]!["type"]);
        var c = json["device"]!["backend"]!["config"]!;
        Assert.Equal("127.0.0.1:5000", (string?)c["host"]);
        Assert.Equal("team/app", (string?)c["repo"]);
        Assert.Equal(DockerConfig.DefaultPath(), (string?)c["docker_config"]);
    }

    [Fact]
    public void Backend_tuning_and_cache_settings_of_the_config_are_kept()
    {
        string config = """
            // a nydusd config as Kata's snapshotter writes it, without host and repo
            {"device": {"backend": {"type": "registry", "config": {"timeout": 3, "connect_timeout": 1, "retry_limit": 0,
                        "auth": "dXNlcjpwYXNz", "scheme": "http"}},
                        "cache": {"type": "blobcache", "config": {"work_dir": "/var/cache/x"}}},
             "digest_validate": true, "fs_prefetch": {"enable": true, "prefetch_all": true},}
            """;
        var o = new RafsMountOptions { Bootstrap = "" };
        NydusConfig.Apply(RegistryImage.RegistryConfig(config, Ref), o);
        Assert.NotNull(o.Registry);
        Assert.Equal("127.0.0.1:5000", o.Registry!.Host);
        Assert.Equal("team/app", o.Registry.Repository);
        Assert.Equal(TimeSpan.FromSeconds(3), o.Registry.Transport.Timeout);
        Assert.Equal(0, o.Registry.Transport.RetryLimit);
        Assert.Equal("user", o.Registry.Credentials!.Username);
        Assert.Equal("/var/cache/x", o.CacheDir);
        Assert.Equal(PrefetchSource.All, o.Prefetch);
        Assert.Equal(Storage.Cache.VerifyMode.Always, o.Verify);
    }

    [Theory]
    [InlineData("s3")]
    [InlineData("oss")]
    public void An_object_storage_backend_is_kept_for_the_blobs_of_a_bootstrap_only_image(string type)
    {
        // convert --backend-type s3|oss leaves the bootstrap in the registry and the blobs in the bucket.
        string config = """{"device": {"backend": {"type": "TYPE", "config": {"endpoint": "e:9000", "bucket_name": "images"}}}}""".Replace("TYPE", type, StringComparison.Ordinal);
        var json = JsonNode.Parse(RegistryImage.RegistryConfig(config, Ref))!;
        Assert.Equal(type, (string?)json["device"]!["backend"]!["type"]);
        Assert.Equal("images", (string?)json["device"]!["backend"]!["config"]!["bucket_name"]);
        Assert.Null(json["device"]!["backend"]!["config"]!["repo"]);
        var o = new RafsMountOptions { Bootstrap = "" };
        NydusConfig.Apply(RegistryImage.RegistryConfig(config, Ref), o);
        Assert.Null(o.Registry);
        Assert.Equal("images", o.ObjectStorage!.Bucket);
    }

    [Fact]
    public void A_wrapped_config_is_unwrapped()
    {
        var json = JsonNode.Parse(RegistryImage.RegistryConfig("""{"config": {"device": {"cache": {"type": "blobcache", "config": {"work_dir": "/w"}}}}}""", Ref))!;
        Assert.Equal("/w", (string?)json["device"]!["cache"]!["config"]!["work_dir"]);
        Assert.Equal("team/app", (string?)json["device"]!["backend"]!["config"]!["repo"]);
    }

    [Theory]
    [InlineData("""{"device": {"backend": {"type": "localfs", "config": {"dir": "/b"}}}}""", "does not apply to an image reference")]
    [InlineData("""{"device": {"backend": {"type": "registry", "config": {"host": "other:5000"}}}}""", "host 'other:5000' contradicts")]
    [InlineData("""{"device": {"backend": {"type": "registry", "config": {"repo": "team/other"}}}}""", "repo 'team/other' contradicts")]
    [InlineData("""{"device": []}""", "device must be an object")]
    [InlineData("""{"device": {"backend": {"type": 7}}}""", "device.backend.type must be a string")]
    [InlineData("""[1, 2]""", "must be a JSON object")]
    [InlineData("""{"device": """, "not valid JSON")]
    public void Contradicting_or_malformed_configs_are_refused(string config, string reason)
    {
        var e = Assert.Throws<NydusConfig.ConfigException>(() => RegistryImage.RegistryConfig(config, Ref));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("localhost:5000/a/b:v1", true)]
    [InlineData("registry.example.com/app", true)]
    [InlineData("127.0.0.1:5000/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true)]
    [InlineData("/var/lib/nydus/bootstrap", false)]
    [InlineData("./boot", false)]
    [InlineData("library/app:v1", false)]
    [InlineData("r.io/Bad:v1", false)]
    [InlineData("", false)]
    public void Api_sources_are_taken_for_references_only_when_they_name_a_registry(string source, bool isReference)
    {
        Assert.Equal(isReference, RegistryImage.IsReference(source, out _));
    }
}

/// <summary>
/// Resolution against a real registry (Debian's docker-registry on 127.0.0.1): the bootstrap lands in the cache under
/// the manifest digest; an outage falls back to it; a non-nydus image, a missing platform, a bootstrap layer that holds
/// no RAFS bootstrap, or an unknown tag are errors that say so.
/// </summary>
public sealed class ImageResolutionTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vfs-resolve-").FullName;
    private readonly RegistryServer _registry;

    public ImageResolutionTests() => _registry = RegistryServer.Start();

    public void Dispose()
    {
        _registry.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    private RegistryOptions Options(string repo) => new()
    {
        Host = _registry.Host,
        Repository = repo,
        Transport = new()
        {
            RetryLimit = 1,
            Timeout = TimeSpan.FromSeconds(5),
            ConnectTimeout = TimeSpan.FromSeconds(1),
            RetryDelay = TimeSpan.FromMilliseconds(10),
            MaxRetryDelay = TimeSpan.FromMilliseconds(50),
        },
    };

    /// <summary>Builds a small RAFS image and returns its bootstrap path.</summary>
    private string BuildBootstrap()
    {
        string src = Directory.CreateDirectory(Path.Combine(_root, "src")).FullName;
        File.WriteAllText(Path.Combine(src, "hello"), "hello from the registry\n");
        string blobs = Directory.CreateDirectory(Path.Combine(_root, "blobs")).FullName;
        string bootstrap = Path.Combine(_root, "bootstrap");
        ImageBuilder.Build(DirectorySource.Load(src), new BuildOptions { BlobDir = blobs, Bootstrap = bootstrap, BuildTime = 1_700_000_000 });
        return bootstrap;
    }

    /// <summary>Pushes a manifest with the given layers (as the index entry for <paramref name="platform"/>) under <paramref name="tag"/>.</summary>
    private async Task Push(string repo, string tag, OciPlatform platform, params (OciDescriptor Descriptor, byte[] Content)[] layers)
    {
        using var client = new RegistryClient(Options(repo));
        foreach (var (d, content) in layers)
            await client.PushBlobAsync(d.Digest, content.Length, () => new MemoryStream(content, writable: false));
        var config = OciJson.WriteConfig(platform, layers.Select(l => l.Descriptor.Digest).ToList());
        string configDigest = OciDigest.Sha256(config);
        await client.PushBlobAsync(configDigest, config.Length, () => new MemoryStream(config, writable: false));
        var manifest = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest,
            new OciDescriptor(OciMediaTypes.ImageConfig, configDigest, config.Length), layers.Select(l => l.Descriptor).ToList()));
        string manifestDigest = await client.PutManifestAsync(OciDigest.Sha256(manifest), OciMediaTypes.ImageManifest, manifest);
        var index = OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex,
            [new OciDescriptor(OciMediaTypes.ImageManifest, manifestDigest, manifest.Length, Platform: NydusImage.NydusPlatform(platform))]));
        await client.PutManifestAsync(tag, OciMediaTypes.ImageIndex, index);
    }

    private static (OciDescriptor, byte[]) BootstrapLayer(string bootstrapFile)
    {
        var b = NydusImage.CreateBootstrapLayer(bootstrapFile);
        return (NydusImage.BootstrapDescriptor(b, 6), b.Compressed);
    }

    private ResolvedNydusImage Resolve(string repo, string tag, string cacheDir, OciPlatform? platform = null)
    {
        var options = new RafsMountOptions { Bootstrap = "", Registry = Options(repo), CacheDir = cacheDir };
        return RegistryImage.Resolve(OciReference.Parse($"{_registry.Host}/{repo}:{tag}"), platform ?? DaemonOptions.DefaultPlatform, options, NullLogger.Instance);
    }

    [Fact]
    public async Task A_nydus_image_resolves_to_its_bootstrap_in_the_cache_and_an_outage_falls_back_to_it()
    {
        string bootstrap = BuildBootstrap();
        await Push("app/nydus", "v1", DaemonOptions.DefaultPlatform, BootstrapLayer(bootstrap));
        string cache = Path.Combine(_root, "cache");

        var first = Resolve("app/nydus", "v1", cache);
        Assert.False(first.FromCache);
        Assert.Equal(Path.Combine(cache, "images", first.ManifestDigest[7..] + ".boot"), first.BootstrapPath);
        Assert.Equal(File.ReadAllBytes(bootstrap), File.ReadAllBytes(first.BootstrapPath));
        Assert.Empty(Directory.GetFiles(Path.Combine(cache, "images"), ".*")); // no temp files left behind
        using (var mount = RafsMount.Open(new RafsMountOptions { Bootstrap = first.BootstrapPath, BlobDir = Path.Combine(_root, "blobs"), Prefetch = PrefetchSource.None }))
        {
            Assert.True(mount.Image.InodeCount >= 2);
        }

        _registry.Stop();
        var offline = Resolve("app/nydus", "v1", cache);
        Assert.True(offline.FromCache);
        Assert.Equal(first.BootstrapPath, offline.BootstrapPath);
        Assert.False(string.IsNullOrEmpty(offline.OfflineReason));

        var e = Assert.Throws<RafsMountException>(() => Resolve("app/nydus", "v1", Path.Combine(_root, "empty-cache")));
        Assert.Contains("registry unreachable", e.Message, StringComparison.Ordinal);
        Assert.Contains("holds no bootstrap", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_oci_image_without_a_bootstrap_layer_is_not_a_nydus_image()
    {
        byte[] layer = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        await Push("app/plain", "v1", DaemonOptions.DefaultPlatform, (new OciDescriptor(OciMediaTypes.LayerTarGzip, OciDigest.Sha256(layer), layer.Length), layer));
        var e = Assert.Throws<RafsMountException>(() => Resolve("app/plain", "v1", Path.Combine(_root, "cache")));
        Assert.Contains("is not a nydus image", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bootstrap_layer_that_holds_no_rafs_bootstrap_is_refused_and_nothing_is_installed()
    {
        string fake = Path.Combine(_root, "fake.boot");
        File.WriteAllBytes(fake, new byte[8192]);
        await Push("app/fake", "v1", DaemonOptions.DefaultPlatform, BootstrapLayer(fake));
        string cache = Path.Combine(_root, "cache");
        var e = Assert.Throws<RafsMountException>(() => Resolve("app/fake", "v1", cache));
        Assert.Contains("does not hold a usable bootstrap", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(Path.Combine(cache, "images")));
    }

    [Fact]
    public async Task A_missing_platform_and_an_unknown_tag_are_named()
    {
        await Push("app/arm", "v1", new OciPlatform("linux", "arm64"), BootstrapLayer(BuildBootstrap()));
        var e = Assert.Throws<RafsMountException>(() => Resolve("app/arm", "v1", Path.Combine(_root, "cache")));
        Assert.Contains("no manifest for platform linux/amd64 (it lists linux/arm64)", e.Message, StringComparison.Ordinal);
        Assert.NotNull(Resolve("app/arm", "v1", Path.Combine(_root, "cache"), new OciPlatform("linux", "arm64")));

        var missing = Assert.Throws<RafsMountException>(() => Resolve("app/arm", "v2", Path.Combine(_root, "cache")));
        Assert.Contains("not found in the registry", missing.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(-10, "is larger than its manifest says")]
    [InlineData(10, "the manifest says")]
    [InlineData(2L << 30, "is not in 1..")]
    public async Task A_bootstrap_layer_whose_size_is_misstated_is_refused(long delta, string reason)
    {
        var (d, content) = BootstrapLayer(BuildBootstrap());
        // The registry stores the real bytes; the manifest states another size. Only the stated size may be written.
        await Push("app/size", "v1", DaemonOptions.DefaultPlatform, (d with { Size = content.Length + delta }, content));
        string cache = Path.Combine(_root, "cache");
        var e = Assert.Throws<RafsMountException>(() => Resolve("app/size", "v1", cache));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(cache, "images")) && Directory.EnumerateFileSystemEntries(Path.Combine(cache, "images")).Any(),
            "nothing is left in the cache");
    }

    [Fact]
    public void Without_a_cache_directory_a_reference_cannot_be_served()
    {
        var options = new RafsMountOptions { Bootstrap = "", Registry = Options("app/x") };
        var e = Assert.Throws<RafsMountException>(() =>
            RegistryImage.Resolve(OciReference.Parse($"{_registry.Host}/app/x:v1"), DaemonOptions.DefaultPlatform, options, NullLogger.Instance));
        Assert.Contains("needs a cache directory", e.Message, StringComparison.Ordinal);
    }
}
