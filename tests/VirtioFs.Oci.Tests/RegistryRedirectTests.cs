using System.Diagnostics;
using System.Security.Cryptography;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend.Registry;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>
/// Blob reads a registry answers with a redirect to storage (distribution's redirect middleware, S3/OSS presigned URLs):
/// followed by hand without the registry's credentials, the range kept, the target cached per blob and dropped when it
/// expires or fails, and a chain longer than five an error.
/// </summary>
public sealed class RegistryRedirectTests : IDisposable
{
    private readonly BlobStorage _storage = new();
    private readonly RedirectFront _front;
    private readonly ListLogger _log = new();
    private readonly byte[] _data = RandomNumberGenerator.GetBytes(300_000);
    private readonly string _digest;

    public RegistryRedirectTests()
    {
        _front = new RedirectFront(_storage);
        _digest = OciDigest.Sha256(_data);
        _storage.Add(_digest, _data);
    }

    private RegistryClient Client(TimeSpan? redirectCache = null, int retries = 2) => new(new RegistryOptions
    {
        Host = _front.Host,
        Repository = "vfs/redirected",
        Credentials = RedirectFront.Credentials,
        Transport = new()
        {
            RetryLimit = retries,
            Timeout = TimeSpan.FromSeconds(3),
            RetryDelay = TimeSpan.FromMilliseconds(10),
            MaxRetryDelay = TimeSpan.FromMilliseconds(50),
        },
        RedirectCacheTime = redirectCache ?? TimeSpan.FromMinutes(5),
    }, _log);

    private string Log => string.Join("\n", _log.Lines);

    [Theory]
    [InlineData(307)]
    [InlineData(302)]
    public async Task Redirect_is_followed_with_the_range_and_without_credentials_and_its_target_is_cached(int status)
    {
        _front.RedirectStatus = status;
        using var c = Client();
        var buf = new byte[10_000];
        await c.ReadBlobAsync(_digest, 123_456, buf);
        Assert.True(_data.AsSpan(123_456, buf.Length).SequenceEqual(buf), Log);
        Assert.Equal(1, _front.BlobGets);
        Assert.True(_front.AuthorizedRequests >= 1);               // the registry did get the credentials...
        Assert.Equal(0, _storage.RequestsWithAuthorization);        // ...storage never did
        Assert.Equal("bytes=123456-133455", _storage.Ranges.Last()); // the range survived the redirect

        // The second read of the same blob goes straight to the cached storage URL.
        var buf2 = new byte[777];
        await c.ReadBlobAsync(_digest, 299_223, buf2);
        Assert.True(_data.AsSpan(299_223, buf2.Length).SequenceEqual(buf2));
        Assert.Equal(1, _front.BlobGets);
        Assert.Equal(2, _storage.Gets);
        Assert.Equal(0, _storage.RequestsWithAuthorization);

        // A whole-blob download follows the same path (no Range) and checks the digest.
        var ms = new MemoryStream();
        await c.DownloadBlobAsync(_digest, ms);
        Assert.True(_data.AsSpan().SequenceEqual(ms.ToArray()));
        Assert.Null(_storage.Ranges.Last());
        Assert.Equal(1, _front.BlobGets);
    }

    [Fact]
    public async Task Expired_cached_target_is_dropped_and_the_registry_asked_again()
    {
        using var c = Client(redirectCache: TimeSpan.FromMilliseconds(300));
        var buf = new byte[1000];
        await c.ReadBlobAsync(_digest, 0, buf);
        await c.ReadBlobAsync(_digest, 1000, buf);
        Assert.Equal(1, _front.BlobGets);
        await Task.Delay(400);
        await c.ReadBlobAsync(_digest, 2000, buf);
        Assert.True(_data.AsSpan(2000, 1000).SequenceEqual(buf));
        Assert.Equal(2, _front.BlobGets);
        Assert.Equal(0, _storage.ExpiredRequests);   // the expired entry was not even tried
    }

    [Fact]
    public async Task Failing_cached_target_is_dropped_and_re_resolved_within_the_same_read()
    {
        using var c = Client(retries: 0);    // no retries: the recovery must happen inside one attempt
        var buf = new byte[4096];
        await c.ReadBlobAsync(_digest, 0, buf);
        Assert.Equal(1, _front.BlobGets);
        _storage.Signature = "s2";            // every URL handed out so far has expired
        await c.ReadBlobAsync(_digest, 50_000, buf);
        Assert.True(_data.AsSpan(50_000, buf.Length).SequenceEqual(buf), Log);
        Assert.Equal(1, _storage.ExpiredRequests);
        Assert.Equal(2, _front.BlobGets);
        // The fresh URL is cached in turn.
        await c.ReadBlobAsync(_digest, 60_000, buf);
        Assert.Equal(2, _front.BlobGets);
        Assert.Equal(1, _storage.ExpiredRequests);
        Assert.Contains(_log.Lines, l => l.StartsWith("6007 ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Five_redirects_are_followed_and_a_sixth_is_an_error_that_is_not_retried()
    {
        _front.Hops = 5;
        using (var c = Client())
        {
            var buf = new byte[100];
            await c.ReadBlobAsync(_digest, 5, buf);
            Assert.True(_data.AsSpan(5, 100).SequenceEqual(buf), Log);
        }
        _front.Hops = 6;
        using (var c = Client(retries: 3))
        {
            int before = _front.BlobGets, storageBefore = _storage.Gets;
            var e = await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(_digest, 0, new byte[10]));
            Assert.Contains("redirects", e.Message, StringComparison.Ordinal);
            Assert.False(e.Transient);
            Assert.Equal(before + 1, _front.BlobGets);
            Assert.Equal(storageBefore, _storage.Gets);
            // Through the backend: an errno, promptly.
            using var be = new RegistryBackend(c);
            var sw = Stopwatch.StartNew();
            Assert.Equal(5, be.ReadAt(_digest[7..], 0, new byte[10]));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2), sw.Elapsed.ToString());
        }
    }

    [Fact]
    public async Task Redirect_to_a_missing_blob_is_ENOENT_and_not_cached()
    {
        var other = OciDigest.Sha256([1, 2, 3]);   // the front redirects it, storage does not have it
        using var c = Client();
        using var be = new RegistryBackend(c);
        Assert.Equal(2, be.ReadAt(other[7..], 0, new byte[3]));
        Assert.Equal(2, be.ReadAt(other[7..], 0, new byte[3]));
        Assert.Equal(2, _front.BlobGets);           // nothing was cached from the failed read
        await Task.CompletedTask;
    }

    public void Dispose()
    {
        _front.Dispose();
        _storage.Dispose();
    }
}

/// <summary>The real registry redirecting blob GETs (distribution's redirect storage middleware, 307 to a storage base
/// URL) to a file server over its own storage tree, with htpasswd auth so a leaked credential would show.</summary>
public sealed class RealRegistryRedirectTests
{
    [Fact]
    public async Task Registry_redirects_are_followed_cached_and_keep_credentials_away_from_storage()
    {
        string? root = null;
        int storageGets = 0, withAuth = 0;
        using var storage = new TestHttpServer(req =>
        {
            Interlocked.Increment(ref storageGets);
            if (req.Header("Authorization") is not null) { Interlocked.Increment(ref withAuth); return Task.FromResult(new TestResponse(400)); }
            var file = Path.GetFullPath(Path.Combine(root!, "data", req.Path.TrimStart('/')));
            if (!file.StartsWith(root!, StringComparison.Ordinal) || !File.Exists(file)) return Task.FromResult(new TestResponse(404));
            return Task.FromResult(BlobStorage.Serve(File.ReadAllBytes(file), req.Header("Range")));
        });
        using var server = RegistryServer.Start(htpasswdLine: Htpasswd.Line("alice", "wonderland"), redirectTo: storage.Url + "/");
        root = server.Root;
        var log = new ListLogger();
        using var c = new RegistryClient(server.Options("vfs/real-redirect", new RegistryCredentials("alice", "wonderland")), log);
        var data = RandomNumberGenerator.GetBytes(150_000);
        var d = OciDigest.Sha256(data);
        await c.PushBlobAsync(d, data.Length, () => new MemoryStream(data));
        Assert.Equal(0, storageGets);

        using var be = new RegistryBackend(c);
        var buf = new byte[20_000];
        Assert.True(0 == be.ReadAt(d[7..], 77_000, buf), string.Join("\n", log.Lines));
        Assert.True(data.AsSpan(77_000, buf.Length).SequenceEqual(buf));
        Assert.Equal(1, storageGets);
        Assert.Contains(log.Lines, l => l.StartsWith("6003 ", StringComparison.Ordinal));   // it was a redirect
        int registryRequests = log.Lines.Count(l => l.StartsWith("6003 ", StringComparison.Ordinal));
        Assert.Equal(0, be.ReadAt(d[7..], 0, buf));
        Assert.True(data.AsSpan(0, buf.Length).SequenceEqual(buf));
        Assert.Equal(2, storageGets);
        Assert.Equal(registryRequests, log.Lines.Count(l => l.StartsWith("6003 ", StringComparison.Ordinal)));   // served from the cached target
        Assert.Equal(0, withAuth);
    }
}
