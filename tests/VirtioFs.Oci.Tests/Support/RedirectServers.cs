using System.Collections.Concurrent;
using System.Text;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// Blob storage behind a registry (an S3/OSS bucket with presigned URLs): <c>GET /blobs/{digest}?sig=S</c> serves the
/// bytes, honouring <c>Range: bytes=a-b</c> with 206. A request carrying an Authorization header is refused with 400 and
/// counted (the registry's credentials must never reach storage); a signature other than <see cref="Signature"/> is
/// refused with 403 like an expired presigned URL.
/// </summary>
public sealed class BlobStorage : IDisposable
{
    private readonly ConcurrentDictionary<string, byte[]> _blobs = new();
    private int _gets, _withAuth, _expired;

    public BlobStorage() => Server = new TestHttpServer(Handle);

    public TestHttpServer Server { get; }
    public volatile string Signature = "s1";
    public int Gets => Volatile.Read(ref _gets);
    public int RequestsWithAuthorization => Volatile.Read(ref _withAuth);
    public int ExpiredRequests => Volatile.Read(ref _expired);
    public ConcurrentQueue<string?> Ranges { get; } = new();

    public void Add(string digest, byte[] data) => _blobs[digest] = data;

    /// <summary>The presigned URL of a blob, valid while <see cref="Signature"/> is unchanged.</summary>
    public string UrlOf(string digest) => $"{Server.Url}/blobs/{digest}?sig={Signature}";

    private Task<TestResponse> Handle(TestRequest req)
    {
        Interlocked.Increment(ref _gets);
        if (req.Header("Authorization") is not null)
        {
            Interlocked.Increment(ref _withAuth);
            return Task.FromResult(new TestResponse(400, "registry credentials sent to storage"u8.ToArray()));
        }
        if (req.Query != "sig=" + Signature)
        {
            Interlocked.Increment(ref _expired);
            return Task.FromResult(new TestResponse(403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"u8.ToArray()));
        }
        const string prefix = "/blobs/";
        if (!req.Path.StartsWith(prefix, StringComparison.Ordinal) || !_blobs.TryGetValue(req.Path[prefix.Length..], out var data))
            return Task.FromResult(new TestResponse(404));
        Ranges.Enqueue(req.Header("Range"));
        return Task.FromResult(Serve(data, req.Header("Range")));
    }

    /// <summary>The answer to a GET of <paramref name="data"/>: 200 with all of it, or 206 for one <c>bytes=first-last</c> range.</summary>
    public static TestResponse Serve(byte[] data, string? range)
    {
        if (range is null) return new TestResponse(200, data);
        var spec = range.StartsWith("bytes=", StringComparison.Ordinal) ? range[6..].Split('-') : [];
        if (spec.Length != 2 || !long.TryParse(spec[0], out long first) || !long.TryParse(spec[1], out long last) || first > last)
            return new TestResponse(400);
        if (first >= data.Length) return new TestResponse(416).With("Content-Range", $"bytes */{data.Length}");
        last = Math.Min(last, data.Length - 1);
        var part = data.AsSpan((int)first, (int)(last - first + 1)).ToArray();
        return new TestResponse(206, part).With("Content-Range", $"bytes {first}-{last}/{data.Length}");
    }

    public void Dispose() => Server.Dispose();
}

/// <summary>
/// A registry front that stores nothing itself: blob GETs (Basic auth required, as a private registry would) are answered
/// with <see cref="RedirectStatus"/> to the blob's presigned storage URL, through <see cref="Hops"/> redirects in all
/// (the intermediate ones to <c>/hop/k/{digest}</c> on this server, with a relative Location).
/// </summary>
public sealed class RedirectFront : IDisposable
{
    public const string User = "alice", Password = "wonderland";
    private readonly BlobStorage _storage;
    private int _blobGets, _authorized;

    public RedirectFront(BlobStorage storage)
    {
        _storage = storage;
        Server = new TestHttpServer(Handle);
    }

    public TestHttpServer Server { get; }
    public string Host => Server.Authority;
    public volatile int RedirectStatus = 307;
    public volatile int Hops = 1;
    /// <summary>Registry blob GETs answered (not counting the intermediate hops).</summary>
    public int BlobGets => Volatile.Read(ref _blobGets);
    public int AuthorizedRequests => Volatile.Read(ref _authorized);

    public static RegistryCredentials Credentials => new(User, Password);

    private Task<TestResponse> Handle(TestRequest req)
    {
        var path = req.Path;
        if (path.StartsWith("/hop/", StringComparison.Ordinal))
        {
            var parts = path.Split('/');   // "", "hop", k, digest
            if (parts.Length != 4 || !int.TryParse(parts[2], out int k)) return Task.FromResult(new TestResponse(400));
            return Task.FromResult(Next(k, parts[3]));
        }
        string want = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(User + ":" + Password));
        if (req.Header("Authorization") != want)
            return Task.FromResult(new TestResponse(401).With("WWW-Authenticate", "Basic realm=\"vfs-front\""));
        Interlocked.Increment(ref _authorized);
        int blobs = path.IndexOf("/blobs/", StringComparison.Ordinal);
        if (!path.StartsWith("/v2/", StringComparison.Ordinal) || blobs < 0) return Task.FromResult(new TestResponse(path == "/v2/" ? 200 : 404));
        Interlocked.Increment(ref _blobGets);
        return Task.FromResult(Next(1, path[(blobs + 7)..]));
    }

    /// <summary>Redirect number <paramref name="k"/> of the chain: to storage when it is the last, else to the next hop.</summary>
    private TestResponse Next(int k, string digest) =>
        new TestResponse(RedirectStatus).With("Location", k >= Hops ? _storage.UrlOf(digest) : $"/hop/{k + 1}/{digest}");

    public void Dispose() => Server.Dispose();
}
