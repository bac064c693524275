using VirtioFs.Storage.Cache;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

public sealed class ConfigTests
{
    [Fact]
    public void The_nydusd_localfs_sample_config_is_understood()
    {
        // The shape nydus docs/nydusd.md shows for a localfs backend with a blob cache.
        const string json = """
            {
              "device": {
                "backend": { "type": "localfs", "config": { "dir": "/var/lib/nydus/blobs" } },
                "cache": { "type": "blobcache", "config": { "work_dir": "/var/lib/nydus/cache" } }
              },
              "mode": "direct",
              "digest_validate": true,
              "iostats_files": false,
              "enable_xattr": true,
              "amplify_io": 1048576,
              "fs_prefetch": { "enable": true, "threads_count": 4, "bandwidth_rate": 10485760, "merging_size": 131072 }
            }
            """;
        var o = new RafsMountOptions { Bootstrap = "/b" };
        NydusConfig.Apply(json, o);
        Assert.Equal("/var/lib/nydus/blobs", o.BlobDir);
        Assert.Equal("/var/lib/nydus/cache", o.CacheDir);
        Assert.Equal(VerifyMode.Always, o.Verify);
        Assert.Equal(1 << 20, o.AmplificationBytes);
        Assert.Equal(PrefetchSource.ImageTable, o.Prefetch);
        Assert.Equal(4, o.PrefetchThreads);
        Assert.Equal(10485760, o.PrefetchBandwidth);
    }

    [Fact]
    public void Prefetch_all_blob_file_and_no_cache()
    {
        var o = new RafsMountOptions { Bootstrap = "/b" };
        NydusConfig.Apply("""{"device":{"backend":{"type":"localfs","config":{"blob_file":"/x/abc"}},"cache":{"type":""}},"fs_prefetch":{"enable":true,"prefetch_all":true}}""", o);
        Assert.Equal("/x/abc", o.BlobFile);
        Assert.Null(o.CacheDir);
        Assert.Equal(PrefetchSource.All, o.Prefetch);
        NydusConfig.Apply("""{"fs_prefetch":{"enable":false}}""", o);
        Assert.Equal(PrefetchSource.None, o.Prefetch);
    }

    [Fact]
    public void The_nydusd_registry_backend_config_is_understood()
    {
        // nydus docs/nydusd.md's registry sample: blobs come from host/repo with auth and a Dragonfly proxy.
        const string json = """
            {
              "device": {
                "backend": { "type": "registry", "config": {
                  "scheme": "http", "host": "127.0.0.1:5000", "repo": "library/app",
                  "auth": "dXNlcjpwYXNz", "timeout": 7, "connect_timeout": 2, "retry_limit": 4,
                  "proxy": { "url": "http://127.0.0.1:65001", "ping_url": "http://127.0.0.1:40901/server/ping", "fallback": true, "check_interval": 3 } } },
                "cache": { "type": "blobcache", "config": { "work_dir": "/var/lib/nydus/cache" } }
              }
            }
            """;
        var o = new RafsMountOptions { Bootstrap = "/b" };
        NydusConfig.Apply(json, o);
        var r = Assert.IsType<VirtioFs.Oci.RegistryOptions>(o.Registry);
        Assert.Null(o.BlobDir);
        Assert.Equal("127.0.0.1:5000", r.Host);
        Assert.Equal("library/app", r.Repository);
        Assert.Equal(TimeSpan.FromSeconds(7), r.Transport.Timeout);
        Assert.Equal(4, r.Transport.RetryLimit);
        Assert.Equal("http://127.0.0.1:65001", r.Transport.Proxy?.Url);
        Assert.Equal(TimeSpan.FromSeconds(3), r.Transport.Proxy?.CheckInterval);
        Assert.NotNull(r.Credentials);
    }

    [Fact]
    public void S3_and_oss_backends_are_read_with_nydus_keys()
    {
        // nydus api/src/config.rs S3Config / OssConfig; a type nydus does not have stays an error.
        var o = new RafsMountOptions { Bootstrap = "/b" };
        NydusConfig.Apply("""{"device":{"backend":{"type":"s3","config":{"endpoint":"127.0.0.1:9000","scheme":"http","region":"us-east-1","bucket_name":"images","object_prefix":"nydus/","access_key_id":"AK","access_key_secret":"SK"}}}}""", o);
        Assert.Equal(("images", "nydus/", "config"), (o.ObjectStorage!.Bucket, o.ObjectStorage.ObjectPrefix, o.ObjectStorage.CredentialSource));
        Assert.Null(o.Registry);
        var oss = new RafsMountOptions { Bootstrap = "/b" };
        NydusConfig.Apply("""{"device":{"backend":{"type":"oss","config":{"endpoint":"oss-cn-hangzhou.aliyuncs.com","bucket_name":"images"}}}}""", oss);
        Assert.Equal(VirtioFs.Oci.ObjectStorage.ObjectStorageKind.Oss, oss.ObjectStorage!.Kind);
        Assert.Throws<NydusConfig.ConfigException>(() => NydusConfig.Apply("""{"device":{"backend":{"type":"nas","config":{}}}}""", new RafsMountOptions { Bootstrap = "/b" }));
    }

    [Theory]
    [InlineData("""{"device":{"backend":{"type":"registry","config":{"host":"h:5000"}}}}""")]
    [InlineData("""{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"Bad Repo"}}}}""")]
    [InlineData("""{"device":{"backend":{"type":"oss","config":{}}}}""")]
    [InlineData("[]")]
    [InlineData("{")]
    [InlineData("""{"device":{"backend":{"type":"registry"}}}""")]
    [InlineData("""{"device":{"backend":{"type":"localfs","config":{"dir":7}}}}""")]
    [InlineData("""{"device":{"cache":{"type":"blobcache"}}}""")]
    [InlineData("""{"device":{"cache":{"type":"fscache"}}}""")]
    [InlineData("""{"digest_validate":"yes"}""")]
    [InlineData("""{"fs_prefetch":{"enable":true,"threads_count":0}}""")]
    [InlineData("""{"amplify_io":-1}""")]
    public void Bad_configs_are_errors_that_name_the_problem(string json)
    {
        var e = Assert.Throws<NydusConfig.ConfigException>(() => NydusConfig.Apply(json, new RafsMountOptions { Bootstrap = "/b" }));
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
    }
}
