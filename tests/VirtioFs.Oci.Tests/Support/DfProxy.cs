using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// A stand-in for Dragonfly's dfdaemon as nydusd uses it: an HTTP forward proxy that takes absolute-form requests
/// (<c>GET http://registry/v2/.../blobs/sha256:... HTTP/1.1</c>), fetches them from the origin and counts them, and a
/// health endpoint <c>/server/ping</c>. Origin-form requests other than the ping are refused with 400 (and counted), so
/// a client that talks to it as if it were a mirror is caught. <see cref="TestHttpServer.Stop"/>/<see cref="TestHttpServer.Start"/>
/// on <see cref="Server"/> model the daemon dying and coming back on the same port.
/// </summary>
public sealed class DfProxy : IDisposable
{
    // dfdaemon fetches from the origin itself; the tests' https registry has a test CA, so no verification here.
    private readonly HttpClient _upstream;
    private readonly int? _everyHostTo;
    private int _blobRequests, _pings, _originForm;

    /// <param name="everyHostTo">When set, every origin is reached at 127.0.0.1 on this port, whatever its name (the
    /// request keeps its Host and all its end-to-end headers): names that do not resolve here, such as a bucket's
    /// virtual host <c>bucket.s3.vfs.test</c>, reach a local server as if DNS had sent them there.</param>
    public DfProxy(int? everyHostTo = null)
    {
        _everyHostTo = everyHostTo;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false, UseProxy = false, UseCookies = false,
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        };
        if (everyHostTo is { } port)
        {
            handler.ConnectCallback = async (_, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), ct);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        _upstream = new HttpClient(handler);
        Server = new TestHttpServer(HandleAsync);
    }

    public TestHttpServer Server { get; }
    public string Url => Server.Url;
    public string PingUrl => Server.Url + "/server/ping";
    public int BlobRequests => Volatile.Read(ref _blobRequests);
    public int Pings => Volatile.Read(ref _pings);
    public int OriginFormRequests => Volatile.Read(ref _originForm);

    /// <summary>Authorities (host:port) the proxied requests were addressed to.</summary>
    public ConcurrentBag<string> Origins { get; } = new();

    /// <summary>Absolute request targets as received.</summary>
    public ConcurrentBag<string> Targets { get; } = new();

    /// <summary>Fetch http:// targets from the origin over https, as dfdaemon does for a client configured with
    /// nydus <c>use_http</c> against an https registry.</summary>
    public bool UpstreamHttps { get; set; }

    /// <summary>What the ping answers (200 while healthy); the proxying itself is unaffected.</summary>
    public volatile int PingStatus = 200;

    /// <summary>Status for proxied blob requests instead of forwarding them (0: forward).</summary>
    public volatile int BlobStatus;

    public void Stop() => Server.Stop();
    public void Start() => Server.Start();

    private async Task<TestResponse> HandleAsync(TestRequest req)
    {
        if (req.Target.StartsWith('/'))
        {
            if (req.Path == "/server/ping")
            {
                Interlocked.Increment(ref _pings);
                return new TestResponse(PingStatus);
            }
            Interlocked.Increment(ref _originForm);
            return new TestResponse(400);
        }
        if (req.Method == "CONNECT" || !Uri.TryCreate(req.Target, UriKind.Absolute, out var target)) return new TestResponse(405);
        Origins.Add(target.Authority);
        Targets.Add(req.Target);
        if (UpstreamHttps && target.Scheme == "http") target = new UriBuilder(target) { Scheme = "https", Port = target.Port }.Uri;
        if (req.Path.Contains("/blobs/", StringComparison.Ordinal))
        {
            Interlocked.Increment(ref _blobRequests);
            if (BlobStatus != 0) return new TestResponse(BlobStatus);
        }
        using var up = new HttpRequestMessage(new HttpMethod(req.Method), target);
        foreach (var h in new[] { "Range", "Authorization", "Accept" })
            if (req.Header(h) is { } v) up.Headers.TryAddWithoutValidation(h, v);
        if (_everyHostTo is not null)
        {
            // Signed requests (S3 SigV4) name further headers in the signature: pass them all on.
            foreach (var (name, value) in req.Headers)
                if (name.StartsWith("x-amz-", StringComparison.OrdinalIgnoreCase)) up.Headers.TryAddWithoutValidation(name, value);
        }
        using var resp = await _upstream.SendAsync(up);
        var body = await resp.Content.ReadAsByteArrayAsync();
        var r = new TestResponse((int)resp.StatusCode, body);
        if (resp.Headers.Location is { } loc) r.With("Location", loc.OriginalString);
        foreach (var h in resp.Headers.WwwAuthenticate) r.With("WWW-Authenticate", h.ToString());
        if (resp.Content.Headers.ContentRange is { } cr) r.With("Content-Range", cr.ToString());
        if (resp.Content.Headers.ContentType is { } ct) r.With("Content-Type", ct.ToString());
        return r;
    }

    public void Dispose()
    {
        Server.Dispose();
        _upstream.Dispose();
    }
}
