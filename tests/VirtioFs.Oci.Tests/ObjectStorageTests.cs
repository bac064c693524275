using System.Diagnostics;
using System.Security.Cryptography;
using VirtioFs.Oci.ObjectStorage;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend.ObjectStorage;
using Xunit;

namespace VirtioFs.Oci.Tests;

public sealed class S3Fixture : IDisposable
{
    public S3Server Server { get; } = new();
    public void Dispose() => Server.Dispose();
}

/// <summary>The S3 client and backend against a real S3 server (s3rver on 127.0.0.1): uploads single and multipart,
/// range reads, refused credentials, credentials from the environment, and faults through the fault proxy.</summary>
public sealed class ObjectStorageTests(S3Fixture s3) : IClassFixture<S3Fixture>
{
    private static string NewId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));

    private async Task<(byte[] Data, string Id)> Seed(int size, string prefix = "")
    {
        var data = RandomNumberGenerator.GetBytes(size);
        string id = NewId();
        using var c = new ObjectStorageClient(s3.Server.Options(prefix));
        Assert.Equal(ObjectStorageClient.UploadOutcome.Uploaded, await c.UploadAsync(id, data.Length, () => new MemoryStream(data)));
        return (data, id);
    }

    [Fact]
    public async Task A_put_object_reads_back_by_range_under_its_prefix()
    {
        var (data, id) = await Seed(300_000, prefix: "nydus/");
        using var c = new ObjectStorageClient(s3.Server.Options("nydus/"));
        Assert.Equal(data.Length, await c.GetSizeAsync(id));
        var buf = new byte[70_000];
        await c.ReadAsync(id, 123_456, buf);
        Assert.True(data.AsSpan(123_456, buf.Length).SequenceEqual(buf));
        // The object really is prefix + blob id: without the prefix there is nothing.
        using var bare = new ObjectStorageClient(s3.Server.Options());
        Assert.Null(await bare.GetSizeAsync(id));
        Assert.True(File.Exists(Directory.EnumerateFiles(s3.Server.Root, "*", SearchOption.AllDirectories).First(f => f.Contains(id, StringComparison.Ordinal))));
    }

    [Fact]
    public async Task Large_objects_go_in_parts_and_an_object_of_the_right_size_is_skipped()
    {
        var data = RandomNumberGenerator.GetBytes(11 << 20);
        string id = NewId();
        using var c = new ObjectStorageClient(s3.Server.Options());
        var seen = new List<long>();
        var progress = new SyncProgress(seen);
        Assert.Equal(ObjectStorageClient.UploadOutcome.UploadedInParts,
            await c.UploadAsync(id, data.Length, () => new MemoryStream(data), multipartThreshold: 6 << 20, partSize: 5 << 20, progress: progress));
        Assert.Equal([5L << 20, 10L << 20, 11L << 20], seen);
        Assert.Equal(data.Length, await c.GetSizeAsync(id));
        var buf = new byte[1 << 20];
        await c.ReadAsync(id, (5 << 20) - 1000, buf);      // across the first part boundary
        Assert.True(data.AsSpan((5 << 20) - 1000, buf.Length).SequenceEqual(buf));
        int opened = 0;
        Assert.Equal(ObjectStorageClient.UploadOutcome.AlreadyPresent,
            await c.UploadAsync(id, data.Length, () => { opened++; return new MemoryStream(data); }, multipartThreshold: 6 << 20));
        Assert.Equal(0, opened);
        // The same id with another size is replaced, not skipped.
        Assert.Equal(ObjectStorageClient.UploadOutcome.Uploaded, await c.UploadAsync(id, 1000, () => new MemoryStream(data, 0, 1000)));
        Assert.Equal(1000, await c.GetSizeAsync(id));
    }

    [Fact]
    public async Task An_unknown_access_key_is_a_clear_error_naming_bucket_and_key_id_and_no_data()
    {
        var (_, id) = await Seed(10_000);
        var log = new ListLogger();
        using var be = new ObjectStorageBackend(s3.Server.Options(credentials: new ObjectStorageCredentials("AKIAWRONGKEY", "nope")), log);
        var e = await Assert.ThrowsAsync<ObjectStorageException>(() => be.Client.ReadAsync(id, 0, new byte[100]));
        Assert.Equal(403, e.StatusCode);
        Assert.Equal("InvalidAccessKeyId", e.ErrorCode);
        Assert.Contains("bucket 'vfs-test'", e.Message, StringComparison.Ordinal);
        Assert.Contains("AKIAWRONGKEY", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("nope", e.Message, StringComparison.Ordinal);
        var buf = new byte[100];
        Assert.Equal(13, be.ReadAt(id, 0, buf));          // EACCES, not retried into a timeout
        Assert.All(buf, b => Assert.Equal(0, b));
        Assert.Equal(0, be.Metrics.Bytes);
    }

    [Fact]
    public async Task A_wrong_secret_for_a_known_key_id_is_SignatureDoesNotMatch_naming_bucket_and_key_id_and_no_data()
    {
        // The server verifies V4 signatures with AWS's own signer (tests/s3rver/s3rver-sigv4.js), so the right key
        // id with the wrong secret is refused as S3 refuses it.
        var (_, id) = await Seed(10_000);
        var log = new ListLogger();
        using var be = new ObjectStorageBackend(s3.Server.Options(credentials: new ObjectStorageCredentials(S3Server.KeyId, "not-the-secret")), log);
        var e = await Assert.ThrowsAsync<ObjectStorageException>(() => be.Client.ReadAsync(id, 0, new byte[100]));
        Assert.Equal(403, e.StatusCode);
        Assert.Equal("SignatureDoesNotMatch", e.ErrorCode);
        Assert.Contains("bucket 'vfs-test'", e.Message, StringComparison.Ordinal);
        Assert.Contains($"key id '{S3Server.KeyId}'", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("not-the-secret", e.Message, StringComparison.Ordinal);
        var buf = new byte[100];
        Assert.Equal(13, be.ReadAt(id, 0, buf));          // EACCES, final: not retried into a timeout
        Assert.All(buf, b => Assert.Equal(0, b));
        Assert.Equal(0, be.Metrics.Bytes);
        // Uploads are refused alike, and nothing lands in the bucket.
        await Assert.ThrowsAsync<ObjectStorageException>(() => be.Client.UploadAsync("sha256-wrong-secret", 10, () => new MemoryStream(new byte[10])));
        using var good = new ObjectStorageClient(s3.Server.Options());
        Assert.Null(await good.GetSizeAsync("sha256-wrong-secret"));
    }

    [Fact]
    public async Task Virtual_host_style_requests_name_the_bucket_in_the_host_and_read_back_through_the_proxy()
    {
        // s3rver serves BUCKET.s3.ENDPOINT as bucket BUCKET (lib/middleware/vhost.js, serviceEndpoint). The name does
        // not resolve here, so the config's proxy (nydus "proxy") is a forward proxy that sends every host to s3rver:
        // the client still sends "GET http://vfs-test.s3.vfs.test/KEY" with that Host, signed for it (and checked
        // against AWS's signer by the server).
        using var server = new S3Server(serviceEndpoint: "vfs.test");
        var data = RandomNumberGenerator.GetBytes(200_000);
        string id = NewId();
        using (var direct = new ObjectStorageClient(server.Options("nydus/")))
            Assert.Equal(ObjectStorageClient.UploadOutcome.Uploaded, await direct.UploadAsync(id, data.Length, () => new MemoryStream(data)));
        using var proxy = new DfProxy(everyHostTo: server.Port);
        string json = $$"""
            {"scheme":"http","endpoint":"s3.vfs.test","region":"us-east-1","bucket_name":"{{S3Server.Bucket}}","object_prefix":"nydus/",
             "access_key_id":"{{S3Server.KeyId}}","access_key_secret":"{{S3Server.Secret}}","path_style":false,"retry_limit":0,
             "proxy":{"url":"{{proxy.Url}}","fallback":false} }
            """;
        var o = ObjectStorageBackendConfig.Parse("s3", System.Text.Encoding.UTF8.GetBytes(json), _ => null);
        using var be = new ObjectStorageBackend(o, new ListLogger());
        Assert.Equal($"http://vfs-test.s3.vfs.test/nydus/{id}", be.Client.ObjectUri(id).ToString());
        var buf = new byte[50_000];
        Assert.Equal(0, be.ReadAt(id, 100_000, buf));
        Assert.True(buf.AsSpan().SequenceEqual(data.AsSpan(100_000, buf.Length)));
        Assert.Contains($"http://vfs-test.s3.vfs.test/nydus/{id}", proxy.Targets);
        Assert.All(proxy.Origins, origin => Assert.Equal("vfs-test.s3.vfs.test", origin));
        // A key that is not there is a clear not-found, not another bucket's object.
        Assert.NotEqual(0, be.ReadAt(NewId(), 0, new byte[10]));
    }

    [Fact]
    public async Task An_expired_session_token_is_reported_as_such_and_sent_signed()
    {
        // s3rver has no session tokens, so a scripted server answers as S3 does for temporary credentials that ran
        // out: 400 or 403 with the code ExpiredToken (S3 API "Error responses"). The token travels as
        // x-amz-security-token and is part of the signed headers.
        TestRequest? seen = null;
        using var server = new TestHttpServer(req =>
        {
            seen = req;
            var xml = "<?xml version=\"1.0\"?><Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>"u8.ToArray();
            return Task.FromResult(new TestResponse(403, xml).With("Content-Type", "application/xml"));
        });
        var o = new ObjectStorageOptions
        {
            Scheme = "http", Endpoint = server.Authority, Bucket = "vfs-test", Transport = new() { RetryLimit = 3 },
            Credentials = new ObjectStorageCredentials("ASIATEMPORARY", "secret", "session-token-1"),
        };
        using var c = new ObjectStorageClient(o);
        var e = await Assert.ThrowsAsync<ObjectStorageException>(() => c.ReadAsync("abc", 0, new byte[10]));
        Assert.Equal(("ExpiredToken", 403, false), (e.ErrorCode, e.StatusCode, e.Transient));
        Assert.Contains("the session token has expired", e.Message, StringComparison.Ordinal);
        Assert.Contains("'ASIATEMPORARY'", e.Message, StringComparison.Ordinal);
        Assert.Equal(1, server.Requests);                 // refused credentials are not retried
        Assert.Equal("session-token-1", seen!.Header("x-amz-security-token"));
        Assert.Contains("x-amz-security-token", seen.Header("Authorization"), StringComparison.Ordinal);
        Assert.StartsWith("AWS4-HMAC-SHA256 Credential=ASIATEMPORARY/", seen.Header("Authorization"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Credentials_come_from_the_environment_when_the_config_has_none_and_the_log_says_so()
    {
        var (data, id) = await Seed(5000);
        var env = new Dictionary<string, string> { ["AWS_ACCESS_KEY_ID"] = S3Server.KeyId, ["AWS_SECRET_ACCESS_KEY"] = S3Server.Secret };
        string json = $$"""{"scheme":"http","endpoint":"{{s3.Server.Endpoint}}","region":"us-east-1","bucket_name":"{{S3Server.Bucket}}"}""";
        var o = ObjectStorageBackendConfig.Parse("s3", System.Text.Encoding.UTF8.GetBytes(json), n => env.GetValueOrDefault(n));
        Assert.Equal("environment", o.CredentialSource);
        var log = new ListLogger();
        using var be = new ObjectStorageBackend(o, log);
        Assert.Contains(log.Lines, l => l.Contains("credentials from the environment", StringComparison.Ordinal) && l.Contains("S3RVER", StringComparison.Ordinal));
        var buf = new byte[1000];
        Assert.Equal(0, be.ReadAt(id, 100, buf));
        Assert.True(data.AsSpan(100, 1000).SequenceEqual(buf));
        // The config's own key wins over the environment's.
        json = json[..^1] + ",\"access_key_id\":\"AKIAFROMCONFIG\",\"access_key_secret\":\"s\"}";
        var o2 = ObjectStorageBackendConfig.Parse("s3", System.Text.Encoding.UTF8.GetBytes(json), n => env.GetValueOrDefault(n));
        Assert.Equal(("config", "AKIAFROMCONFIG"), (o2.CredentialSource, o2.Credentials!.AccessKeyId));
    }

    [Fact]
    public void Nydus_s3_config_keys_are_read_and_bad_ones_refused()
    {
        // nydus api/src/config.rs S3Config: scheme, endpoint, region, bucket_name, object_prefix, access_key_id,
        // access_key_secret, skip_verify, timeout, connect_timeout, retry_limit, proxy.
        string json = """
            {"scheme":"http","endpoint":"s3.example.com:9000","region":"eu-west-1","bucket_name":"images","object_prefix":"nydus/",
             "access_key_id":"AK","access_key_secret":"SK","skip_verify":true,"timeout":7,"connect_timeout":3,"retry_limit":2,
             "proxy":{"url":"http://127.0.0.1:65001","fallback":true}}
            """;
        var o = ObjectStorageBackendConfig.Parse("s3", System.Text.Encoding.UTF8.GetBytes(json), _ => null);
        Assert.Equal(("http", "s3.example.com:9000", "eu-west-1", "images", "nydus/", true), (o.Scheme, o.Endpoint, o.Region, o.Bucket, o.ObjectPrefix, o.PathStyle));
        Assert.Equal((TimeSpan.FromSeconds(7), TimeSpan.FromSeconds(3), 2, true), (o.Transport.Timeout, o.Transport.ConnectTimeout, o.Transport.RetryLimit, o.Transport.SkipVerify));
        Assert.Equal("http://127.0.0.1:65001", o.Transport.Proxy!.Url);
        using var c = new ObjectStorageClient(o);
        Assert.Equal("http://s3.example.com:9000/images/nydus/abc", c.ObjectUri("abc").ToString());
        using var vhost = new ObjectStorageClient(new ObjectStorageOptions { Bucket = "images", PathStyle = false, ObjectPrefix = "p/" });
        Assert.Equal("https://images.s3.amazonaws.com/p/abc", vhost.ObjectUri("abc").ToString());
        foreach (var bad in new[]
        {
            """{"endpoint":"x"}""",                                              // no bucket_name
            """{"bucket_name":"Bad_Bucket"}""",
            """{"bucket_name":"images","access_key_id":"AK"}""",                  // id without secret
            """{"bucket_name":"images","scheme":"ftp"}""",
            """{"bucket_name":"images","endpoint":"http://host/"}""",
            """{"bucket_name":"images","mirrors":[{"host":"m"}]}""",
        })
            Assert.Throws<FormatException>(() => ObjectStorageBackendConfig.Parse("s3", System.Text.Encoding.UTF8.GetBytes(bad), _ => null));
    }

    [Fact]
    public async Task Oss_requests_have_the_shape_an_S3_server_serves()
    {
        // OSS speaks S3's request shape for range GETs, HEAD, PUT and multipart uploads; only the signature differs,
        // and s3rver refuses the "OSS id:signature" scheme, so the shape is checked with unsigned requests (a public
        // bucket) and the signature against Alibaba's documented example (OssSignatureTests).
        var o = s3.Server.Options("oss/");
        var oss = new ObjectStorageOptions
        {
            Kind = ObjectStorageKind.Oss, Scheme = "http", Endpoint = o.Endpoint, Bucket = o.Bucket, ObjectPrefix = o.ObjectPrefix,
            PathStyle = true, Credentials = null, CredentialSource = "none",
        };
        using var c = new ObjectStorageClient(oss);
        var data = RandomNumberGenerator.GetBytes(7 << 20);
        string id = NewId();
        Assert.Equal(ObjectStorageClient.UploadOutcome.UploadedInParts, await c.UploadAsync(id, data.Length, () => new MemoryStream(data), 6 << 20, 5 << 20));
        Assert.Equal(data.Length, await c.GetSizeAsync(id));
        var buf = new byte[100_000];
        await c.ReadAsync(id, 5_000_000, buf);
        Assert.True(data.AsSpan(5_000_000, buf.Length).SequenceEqual(buf));
    }

    [Theory]
    [InlineData(Fault.Drop)]
    [InlineData(Fault.Http500)]
    [InlineData(Fault.Http503SlowDown)]
    [InlineData(Fault.Truncate)]
    public async Task Transient_faults_are_retried_into_correct_data(Fault fault)
    {
        var (data, id) = await Seed(400_000);
        using var proxy = new FaultProxy(s3.Server.Port);
        var log = new ListLogger();
        using var be = new ObjectStorageBackend(s3.Server.Options(retries: 4, timeout: TimeSpan.FromSeconds(2), endpoint: proxy.Host), log);
        var buf = new byte[100_000];
        Assert.Equal(0, be.ReadAt(id, 0, buf));
        proxy.Set(fault, count: 2);
        Array.Clear(buf);
        Assert.True(0 == be.ReadAt(id, 150_000, buf), string.Join("\n", log.Lines));
        Assert.True(data.AsSpan(150_000, buf.Length).SequenceEqual(buf));
        Assert.Equal(2, proxy.Hits);
        Assert.Contains(log.Lines, l => l.StartsWith("6000 ", StringComparison.Ordinal) && l.Contains("s3 read", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Persistent_faults_are_EIO_within_the_deadline_and_reads_recover()
    {
        var (data, id) = await Seed(50_000);
        using var proxy = new FaultProxy(s3.Server.Port) { SlowDelay = TimeSpan.FromSeconds(5) };
        using var be = new ObjectStorageBackend(s3.Server.Options(retries: 2, timeout: TimeSpan.FromSeconds(1), endpoint: proxy.Host));
        var buf = new byte[10_000];
        foreach (var fault in new[] { Fault.Http503SlowDown, Fault.Drop, Fault.Slow, Fault.Truncate })
        {
            proxy.Set(fault);
            var sw = Stopwatch.StartNew();
            Assert.Equal(5, be.ReadAt(id, 0, buf));
            // 3 attempts of at most 1 s each plus two backoffs of at most 0.2 s, with slack for a loaded machine: a
            // clean-clone CI run (every test project at once, guests booting beside it) once took 10.6 s for Drop,
            // which fails in milliseconds here. Without the per-attempt timeout, Slow's answer (5 s late) would come
            // back as data, which the errno check above fails.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(12), $"{fault}: {sw.Elapsed}");
        }
        proxy.Set(Fault.None);
        Assert.Equal(0, be.ReadAt(id, 20_000, buf));
        Assert.True(data.AsSpan(20_000, buf.Length).SequenceEqual(buf));
    }

    private sealed class SyncProgress(List<long> seen) : IProgress<long>
    {
        public void Report(long value)
        {
            lock (seen) seen.Add(value);
        }
    }
}
