using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace VirtioFs.Oci;

/// <summary>
/// A client for one repository of an OCI distribution registry (distribution-spec "spec.md"). Thread-safe: one
/// instance is shared by every reader; its <see cref="SocketsHttpHandler"/> pools connections (keep-alive) and bounds
/// them per server. Every attempt has a deadline; transient failures are retried with exponential backoff; a 401 runs
/// the challenge flow once (Basic, or a Bearer token fetched from the realm and cached per scope until it expires).
/// Blob reads follow redirects by hand (no credentials to storage, target cached per blob) and, with a proxy configured,
/// are routed through it as nydusd routes them (a forward proxy with a health ping and fallback to the registry).
/// </summary>
public sealed class RegistryClient : IDisposable
{
    private const int MaxManifestBytes = 4 << 20;      // distribution itself refuses manifests over 4 MiB
    private const int MaxTokenResponseBytes = 1 << 20;
    private const int MaxRedirects = 5;

    private readonly RegistryOptions _o;
    private readonly ILogger _log;
    private readonly HttpClient _http;
    private readonly Uri _base;
    private readonly string _pullScope, _pushScope;
    private readonly Lock _authLock = new();
    private AuthChallenge? _challenge;                 // the registry's last Bearer/Basic challenge
    private readonly ConcurrentDictionary<string, (string Token, DateTime Expires)> _tokens = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (Uri Location, DateTime Expires)> _redirects = new(StringComparer.Ordinal);
    private readonly ProxyState? _proxy;
    private readonly HttpClient? _proxyHttp;
    private readonly RemoteCertificateValidationCallback _certCheck;
    private string? _lastCertificateError;            // why the last server certificate was refused, for a clear error
    private RegistryCredentials? _credentials;         // swapped whole by UpdateCredentials; read once per request

    public RegistryClient(RegistryOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _o = options;
        _credentials = options.Credentials;
        _log = logger ?? NullLogger.Instance;
        _base = new Uri($"{options.EffectiveScheme}://{options.Host}/");
        _pullScope = $"repository:{options.Repository}:pull";
        _pushScope = $"repository:{options.Repository}:pull,push";
        _certCheck = MakeCertificateCheck(options);
        _http = new HttpClient(CreateHandler(null), disposeHandler: true) { Timeout = System.Threading.Timeout.InfiniteTimeSpan, BaseAddress = _base };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("vfs-registry/1.0");
        if (options.Proxy is { } p)
        {
            // nydusd hands the proxy URL to reqwest as an HTTP forward proxy (storage/src/backend/connection.rs,
            // build_connection: Proxy::all): blob requests keep the registry's absolute URL and go to the proxy in
            // absolute form (RFC 9112 section 3.2.2), or through a CONNECT tunnel for https. A second client, because
            // the direct one must never use the proxy (it is the fallback).
            _proxyHttp = new HttpClient(CreateHandler(new FixedProxy(new Uri(p.Url))), disposeHandler: true)
            { Timeout = System.Threading.Timeout.InfiniteTimeSpan, BaseAddress = _base };
            _proxyHttp.DefaultRequestHeaders.UserAgent.ParseAdd("vfs-registry/1.0");
            _proxy = new ProxyState(this, p);
        }
    }

    /// <summary>The credentials the next request authenticates with (initially <see cref="RegistryOptions.Credentials"/>).</summary>
    public RegistryCredentials? Credentials => Volatile.Read(ref _credentials);

    /// <summary>
    /// Replaces the credentials of a running client (nydusd's <c>PUT /api/v1/config</c> with <c>registry_auth</c>, which
    /// nydus-snapshotter sends when a registry password rotates). The record is swapped whole, so a request in flight
    /// uses either the old pair or the new one, never a mix; bearer tokens fetched with the old pair are dropped so the
    /// next request fetches one with the new pair. The registry's challenge is kept: it does not depend on the user.
    /// </summary>
    public void UpdateCredentials(RegistryCredentials? credentials)
    {
        Volatile.Write(ref _credentials, credentials);
        _tokens.Clear();
        OciLog.CredentialsUpdated(_log, _o.Host, credentials?.Username ?? "(anonymous)");
    }

    private SocketsHttpHandler CreateHandler(IWebProxy? proxy) => new()
    {
        AllowAutoRedirect = false,                 // redirects are followed by hand: auth must not leak to storage, targets are cached
        ConnectTimeout = _o.ConnectTimeout,
        MaxConnectionsPerServer = _o.MaxConnectionsPerServer,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
        PooledConnectionLifetime = TimeSpan.FromMinutes(10),   // pick up DNS changes
        AutomaticDecompression = DecompressionMethods.None,    // range reads need the bytes as stored
        UseCookies = false,
        UseProxy = proxy is not null,              // never the environment's HTTP_PROXY: only the configured one
        Proxy = proxy,
        // Redirect targets and the proxy's CONNECT tunnels may be https even for a plain-http registry.
        SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = _certCheck },
    };

    public RegistryOptions Options => _o;

    /// <summary>Base URI of the registry (<c>scheme://host/</c>).</summary>
    public Uri BaseUri => _base;

    /// <summary>True while blob reads go through the configured proxy.</summary>
    public bool UsingProxy => _proxy is { Healthy: true };

    // ---------------------------------------------------------------- blobs: reads

    /// <summary>
    /// Reads <c>destination.Length</c> bytes of blob <paramref name="digest"/> at <paramref name="offset"/> with an HTTP
    /// Range request (RFC 9110 section 14). Throws <see cref="RegistryException"/> after the retries are spent.
    /// </summary>
    public Task ReadBlobAsync(string digest, long offset, Memory<byte> destination, CancellationToken ct = default)
    {
        CheckDigest(digest);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (destination.Length == 0) return Task.CompletedTask;
        if (offset > long.MaxValue - destination.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        return WithRetriesAsync("read " + digest, _o.Timeout, async t =>
        {
            using var resp = await GetBlobAsync(digest, offset, destination.Length, t).ConfigureAwait(false);
            long skip = 0;
            if (resp.StatusCode == HttpStatusCode.PartialContent)
            {
                var cr = resp.Content.Headers.ContentRange;
                if (cr is { From: { } from } && from != offset)
                    throw new RegistryException($"registry answered range {from}- for {offset}-", 206, transient: false);
            }
            else skip = offset; // 200: the server ignored Range and sends the whole blob
            using var s = await resp.Content.ReadAsStreamAsync(t).ConfigureAwait(false);
            if (skip > 0) await SkipAsync(s, skip, t).ConfigureAwait(false);
            int done = 0;
            while (done < destination.Length)
            {
                int n = await s.ReadAsync(destination[done..], t).ConfigureAwait(false);
                if (n == 0) throw new RegistryException($"body ended after {done} of {destination.Length} bytes", 0, transient: true);
                done += n;
            }
            return true;
        }, ct);
    }

    /// <summary>Reads many ranges at once (prefetch): they share the connection pool, bounded by
    /// <see cref="RegistryOptions.MaxConnectionsPerServer"/>. Fails with the first range that fails.</summary>
    public Task ReadBlobRangesAsync(string digest, IReadOnlyList<(long Offset, Memory<byte> Destination)> ranges, CancellationToken ct = default)
    {
        var tasks = new Task[ranges.Count];
        for (int i = 0; i < ranges.Count; i++) tasks[i] = ReadBlobAsync(digest, ranges[i].Offset, ranges[i].Destination, ct);
        return Task.WhenAll(tasks);
    }

    /// <summary>Size of a blob, or null when the registry does not have it (HEAD, distribution-spec "Checking if content exists").</summary>
    public Task<long?> GetBlobSizeAsync(string digest, CancellationToken ct = default)
    {
        CheckDigest(digest);
        return WithRetriesAsync("head " + digest, _o.Timeout, async t =>
        {
            using var resp = await SendAsync(() => new HttpRequestMessage(HttpMethod.Head, BlobPath(digest)), _pullScope, t).ConfigureAwait(false);
            if (resp.StatusCode == HttpStatusCode.NotFound) return (long?)null;
            if ((int)resp.StatusCode is >= 300 and < 400) return (long?)-1; // exists, served elsewhere; size from the target
            EnsureSuccess(resp, "HEAD blob");
            return resp.Content.Headers.ContentLength ?? -1;
        }, ct);
    }

    /// <summary>Downloads a whole blob into <paramref name="destination"/>, checking its sha256 digest. With
    /// <paramref name="expectedSize"/> (the descriptor's size) a body of any other length is refused as soon as it shows,
    /// so a hostile registry cannot fill the disk before the digest check would catch it.</summary>
    public Task DownloadBlobAsync(string digest, Stream destination, IProgress<long>? progress = null, CancellationToken ct = default, long? expectedSize = null)
    {
        CheckDigest(digest);
        if (expectedSize is < 0) throw new ArgumentOutOfRangeException(nameof(expectedSize));
        if (!destination.CanSeek) throw new ArgumentException("destination must be seekable so a retry can start over", nameof(destination));
        long start = destination.Position;
        return WithRetriesAsync("download " + digest, _o.TransferTimeout, async t =>
        {
            destination.Position = start;
            destination.SetLength(start);
            using var resp = await GetBlobAsync(digest, 0, 0, t).ConfigureAwait(false);
            if (expectedSize is { } want && resp.Content.Headers.ContentLength is { } announced && announced != want)
                throw new RegistryException($"blob {digest}: registry announces {announced} bytes, the descriptor says {want}", 0, transient: false);
            using var s = await resp.Content.ReadAsStreamAsync(t).ConfigureAwait(false);
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buf = new byte[256 * 1024];
            long total = 0;
            int n;
            while ((n = await s.ReadAsync(buf, t).ConfigureAwait(false)) > 0)
            {
                if (expectedSize is { } max && n > max - total)
                    throw new RegistryException($"blob {digest}: body is longer than the descriptor's {max} bytes", 0, transient: false);
                sha.AppendData(buf, 0, n);
                await destination.WriteAsync(buf.AsMemory(0, n), t).ConfigureAwait(false);
                total += n;
                progress?.Report(total);
            }
            if (resp.Content.Headers.ContentLength is { } len && len != total)
                throw new RegistryException($"blob {digest}: body ended after {total} of {len} bytes", 0, transient: true);
            string got = "sha256:" + Convert.ToHexStringLower(sha.GetHashAndReset());
            if (got != digest) throw new RegistryException($"blob {digest}: content has digest {got}", 0, transient: false);
            return true;
        }, ct);
    }

    /// <summary>GET of a blob (whole when <paramref name="length"/> is 0), through the proxy when one is healthy, with
    /// redirects followed and their targets cached. Returns a 200/206 response with unread content.</summary>
    private async Task<HttpResponseMessage> GetBlobAsync(string digest, long offset, int length, CancellationToken ct)
    {
        void SetRange(HttpRequestMessage r)
        {
            if (length > 0) r.Headers.Range = new RangeHeaderValue(offset, offset + length - 1);
        }

        // A cached redirect target (presigned URL) skips the registry round trip. It is dropped when it has expired or
        // fails (a storage URL past its signature's lifetime answers 401/403; nydus registry.rs drops it then), and
        // the registry is asked again for a fresh one.
        if (_redirects.TryGetValue(digest, out var cached))
        {
            if (cached.Expires > DateTime.UtcNow)
            {
                HttpResponseMessage? r = null;
                try
                {
                    r = await RouteAsync(cached.Location, SetRange, authorize: false, ct).ConfigureAwait(false);
                    if (r.IsSuccessStatusCode) return r;
                    OciLog.RedirectDropped(_log, digest, cached.Location.Host, $"HTTP {(int)r.StatusCode}");
                }
                catch (Exception e) when (!ct.IsCancellationRequested && e is HttpRequestException or IOException or RegistryException)
                {
                    OciLog.RedirectDropped(_log, digest, cached.Location.Host, e.Message);
                }
                r?.Dispose();
            }
            // Only this entry: a concurrent reader may have stored a fresh one meanwhile.
            _redirects.TryRemove(new KeyValuePair<string, (Uri, DateTime)>(digest, cached));
        }

        var resp = await RouteAsync(new Uri(_base, BlobPath(digest)), SetRange, authorize: true, ct).ConfigureAwait(false);
        return await FollowAsync(resp, digest, SetRange, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends one blob GET the way nydusd routes a request (connection.rs, call_with_proxy_control): through the proxy
    /// while it is healthy; when the proxy fails to connect or answers 5xx, straight to <paramref name="target"/> if
    /// fallback is on, else the failure is the answer. While the proxy is marked down, requests go direct (fallback) or
    /// fail at once (no fallback) until the health check sees it answer again. <paramref name="authorize"/> sends the
    /// registry's credentials (registry URLs); redirect targets carry their own and get none.
    /// </summary>
    private async Task<HttpResponseMessage> RouteAsync(Uri target, Action<HttpRequestMessage> setRange, bool authorize, CancellationToken ct)
    {
        Func<HttpRequestMessage> Make(Uri u) => () =>
        {
            var r = new HttpRequestMessage(HttpMethod.Get, u);
            setRange(r);
            return r;
        };

        if (_proxy is { } proxy)
        {
            proxy.Touch();
            if (proxy.Healthy)
            {
                var via = proxy.Rewrite(target);
                string why;
                Exception? inner = null;
                try
                {
                    var resp = authorize
                        ? await SendAsync(Make(via), _pullScope, ct, via: _proxyHttp).ConfigureAwait(false)
                        : await _proxyHttp!.SendAsync(Make(via)(), HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
                    if ((int)resp.StatusCode < 500 || !proxy.Options.Fallback) return resp;
                    why = $"HTTP {(int)resp.StatusCode}";
                    resp.Dispose();
                }
                catch (RegistryException e) when (e.StatusCode >= 500) { why = e.Message; inner = e; }
                catch (Exception e) when (!ct.IsCancellationRequested
                    && e is HttpRequestException or IOException or System.Net.Sockets.SocketException or OperationCanceledException)
                {
                    why = e.Message;
                    inner = e;
                }
                proxy.MarkDown(why);
                if (!proxy.Options.Fallback)
                    throw new RegistryException($"proxy {proxy.Base.Authority} failed ({why}) and fallback is off", 502, transient: true, inner);
            }
            else if (!proxy.Options.Fallback)
            {
                throw new RegistryException($"proxy {proxy.Base.Authority} is not healthy and fallback is off", 502, transient: true);
            }
        }
        return authorize
            ? await SendAsync(Make(target), _pullScope, ct).ConfigureAwait(false)
            : await _http.SendAsync(Make(target)(), HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
    }

    private async Task<HttpResponseMessage> FollowAsync(HttpResponseMessage resp, string digest, Action<HttpRequestMessage> setRange, CancellationToken ct)
    {
        for (int hop = 0; ; hop++)
        {
            int code = (int)resp.StatusCode;
            if (code is 301 or 302 or 303 or 307 or 308)
            {
                var loc = resp.Headers.Location;
                var from = resp.RequestMessage?.RequestUri ?? _base;
                resp.Dispose();
                if (loc is null) throw new RegistryException($"blob {digest}: HTTP {code} without a Location", code);
                if (hop >= MaxRedirects) throw new RegistryException($"blob {digest}: more than {MaxRedirects} redirects", code);
                var target = loc.IsAbsoluteUri ? loc : new Uri(from, loc);
                if (target.Scheme is not ("http" or "https")) throw new RegistryException($"blob {digest}: redirect to {target.Scheme}", code);
                OciLog.Redirected(_log, digest, target.Host);
                // The storage URL carries its own authorization; the registry's credentials are not sent there.
                resp = await RouteAsync(target, setRange, authorize: false, ct).ConfigureAwait(false);
                if (resp.IsSuccessStatusCode) _redirects[digest] = (target, DateTime.UtcNow + _o.RedirectCacheTime);
                continue;
            }
            if (!resp.IsSuccessStatusCode)
            {
                var e = StatusError(resp, "GET blob " + digest);
                resp.Dispose();
                throw e;
            }
            return resp;
        }
    }

    // ---------------------------------------------------------------- blobs: uploads

    /// <summary>What <see cref="PushBlobAsync"/> did.</summary>
    public enum PushOutcome { AlreadyPresent, Mounted, Uploaded }

    /// <summary>
    /// Uploads a blob unless the registry has it (HEAD first). With <paramref name="mountFrom"/> a cross-repository mount
    /// is tried (POST ?mount=&amp;from=, 201 when the registry could). Then a monolithic upload (POST, then PUT with the
    /// body and ?digest=) or, with <paramref name="chunkSize"/> &gt; 0, a chunked one (PATCH per chunk with Content-Range,
    /// then an empty PUT with ?digest=). <paramref name="open"/> is called once per attempt.
    /// </summary>
    public Task<PushOutcome> PushBlobAsync(string digest, long size, Func<Stream> open, string? mountFrom = null, long chunkSize = 0,
        IProgress<long>? progress = null, CancellationToken ct = default)
    {
        CheckDigest(digest);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (mountFrom is not null && !OciReference.IsValidRepository(mountFrom)) throw new ArgumentException($"bad repository '{mountFrom}'", nameof(mountFrom));
        string scope = mountFrom is null ? _pushScope : _pushScope + " repository:" + mountFrom + ":pull";
        return WithRetriesAsync("push " + digest, _o.TransferTimeout, async t =>
        {
            using (var head = await SendAsync(() => new HttpRequestMessage(HttpMethod.Head, BlobPath(digest)), scope, t).ConfigureAwait(false))
            {
                if (head.IsSuccessStatusCode) { OciLog.BlobPushed(_log, digest, "already present"); return PushOutcome.AlreadyPresent; }
                if (head.StatusCode != HttpStatusCode.NotFound) throw StatusError(head, "HEAD blob");
            }
            string post = $"v2/{_o.Repository}/blobs/uploads/" + (mountFrom is null ? "" : $"?mount={Uri.EscapeDataString(digest)}&from={Uri.EscapeDataString(mountFrom)}");
            Uri location;
            using (var started = await SendAsync(() => new HttpRequestMessage(HttpMethod.Post, post) { Content = new ByteArrayContent([]) }, scope, t).ConfigureAwait(false))
            {
                if (started.StatusCode == HttpStatusCode.Created && mountFrom is not null)
                {
                    OciLog.BlobPushed(_log, digest, "mounted from " + mountFrom);
                    return PushOutcome.Mounted;
                }
                if (started.StatusCode != HttpStatusCode.Accepted) throw StatusError(started, "POST upload");
                location = UploadLocation(started);
            }
            using var body = open();
            if (chunkSize <= 0 || chunkSize >= size)
            {
                var put = AddQuery(location, "digest=" + Uri.EscapeDataString(digest));
                using var done = await SendAsync(() =>
                {
                    var content = new StreamContent(new ProgressStream(body, progress, size));
                    content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                    content.Headers.ContentLength = size;
                    return new HttpRequestMessage(HttpMethod.Put, put) { Content = content };
                }, scope, t, replayable: false).ConfigureAwait(false);
                if (done.StatusCode != HttpStatusCode.Created) throw StatusError(done, "PUT upload");
            }
            else
            {
                var buf = new byte[(int)Math.Min(chunkSize, 64L << 20)];
                long sent = 0;
                while (sent < size)
                {
                    int want = (int)Math.Min(buf.Length, size - sent);
                    await body.ReadExactlyAsync(buf.AsMemory(0, want), t).ConfigureAwait(false);
                    long first = sent;
                    var target = location;
                    using var patched = await SendAsync(() =>
                    {
                        var content = new ByteArrayContent(buf, 0, want);
                        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                        // distribution-spec "Pushing a blob in chunks": Content-Range is "<start>-<end>" without a unit.
                        content.Headers.TryAddWithoutValidation("Content-Range", $"{first}-{first + want - 1}");
                        return new HttpRequestMessage(HttpMethod.Patch, target) { Content = content };
                    }, scope, t).ConfigureAwait(false);
                    if (patched.StatusCode != HttpStatusCode.Accepted) throw StatusError(patched, "PATCH upload");
                    location = UploadLocation(patched);
                    sent += want;
                    progress?.Report(sent);
                }
                var put = AddQuery(location, "digest=" + Uri.EscapeDataString(digest));
                using var done = await SendAsync(() => new HttpRequestMessage(HttpMethod.Put, put) { Content = new ByteArrayContent([]) }, scope, t).ConfigureAwait(false);
                if (done.StatusCode != HttpStatusCode.Created) throw StatusError(done, "PUT upload");
            }
            OciLog.BlobPushed(_log, digest, "uploaded");
            return PushOutcome.Uploaded;
        }, ct);
    }

    private Uri UploadLocation(HttpResponseMessage resp)
    {
        var loc = resp.Headers.Location ?? throw new RegistryException("upload response has no Location", (int)resp.StatusCode);
        return loc.IsAbsoluteUri ? loc : new Uri(_base, loc);
    }

    private static Uri AddQuery(Uri u, string q)
    {
        var b = new UriBuilder(u);
        b.Query = string.IsNullOrEmpty(b.Query) || b.Query == "?" ? q : b.Query.TrimStart('?') + "&" + q;
        return b.Uri;
    }

    // ---------------------------------------------------------------- manifests

    /// <summary>Media types a manifest GET accepts (OCI and Docker v2 schema 2, single and list).</summary>
    public static readonly string[] ManifestAccept =
        [OciMediaTypes.ImageIndex, OciMediaTypes.ImageManifest, OciMediaTypes.DockerManifestList, OciMediaTypes.DockerManifest];

    /// <summary>A manifest or index as fetched: its media type, raw bytes and digest.</summary>
    public sealed record FetchedManifest(string MediaType, byte[] Body, string Digest);

    /// <summary>Fetches a manifest by tag or digest; a digest reference is checked against the content.</summary>
    public Task<FetchedManifest> GetManifestAsync(string reference, CancellationToken ct = default)
    {
        CheckReference(reference);
        return WithRetriesAsync("get manifest " + reference, _o.Timeout, async t =>
        {
            using var resp = await SendAsync(() =>
            {
                var r = new HttpRequestMessage(HttpMethod.Get, $"v2/{_o.Repository}/manifests/{reference}");
                foreach (var a in ManifestAccept) r.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(a));
                return r;
            }, _pullScope, t).ConfigureAwait(false);
            EnsureSuccess(resp, "GET manifest " + reference);
            var body = await ReadLimitedAsync(resp.Content, MaxManifestBytes, t).ConfigureAwait(false);
            string digest = OciDigest.Sha256(body);
            if (reference.Contains(':', StringComparison.Ordinal) && reference != digest)
                throw new RegistryException($"manifest {reference} has digest {digest}", 0, transient: false);
            // Registries that answer a generic type (application/json, text/plain) leave the body to say what it is.
            string mediaType = resp.Content.Headers.ContentType?.MediaType is { } ctype && ManifestAccept.Contains(ctype, StringComparer.Ordinal)
                ? ctype : OciJson.SniffMediaType(body);
            return new FetchedManifest(mediaType, body, digest);
        }, ct);
    }

    /// <summary>Stores a manifest or index under <paramref name="reference"/> (a tag or its digest); returns its digest.</summary>
    public Task<string> PutManifestAsync(string reference, string mediaType, byte[] body, CancellationToken ct = default)
    {
        CheckReference(reference);
        if (body.Length > MaxManifestBytes) throw new ArgumentException("manifest too large", nameof(body));
        return WithRetriesAsync("put manifest " + reference, _o.Timeout, async t =>
        {
            using var resp = await SendAsync(() =>
            {
                var c = new ByteArrayContent(body);
                c.Headers.ContentType = new MediaTypeHeaderValue(mediaType);
                return new HttpRequestMessage(HttpMethod.Put, $"v2/{_o.Repository}/manifests/{reference}") { Content = c };
            }, _pushScope, t).ConfigureAwait(false);
            if (resp.StatusCode != HttpStatusCode.Created) throw StatusError(resp, "PUT manifest " + reference);
            return OciDigest.Sha256(body);
        }, ct);
    }

    /// <summary>Checks that the registry speaks /v2/ and that the credentials work for pulling (GET /v2/ plus the challenge flow).</summary>
    public Task PingAsync(CancellationToken ct = default) => WithRetriesAsync("ping", _o.Timeout, async t =>
    {
        using var resp = await SendAsync(() => new HttpRequestMessage(HttpMethod.Get, "v2/"), _pullScope, t).ConfigureAwait(false);
        EnsureSuccess(resp, "GET /v2/");
        return true;
    }, ct);

    // ---------------------------------------------------------------- the request pipeline

    private string BlobPath(string digest) => $"v2/{_o.Repository}/blobs/{digest}";

    private static void CheckDigest(string digest)
    {
        if (!OciDigest.IsValid(digest)) throw new ArgumentException($"'{digest}' is not a sha256 digest", nameof(digest));
    }

    private static void CheckReference(string reference)
    {
        if (!OciDigest.IsValid(reference) && !OciReference.IsValidTag(reference)) throw new ArgumentException($"bad tag or digest '{reference}'", nameof(reference));
    }

    /// <summary>
    /// Runs <paramref name="attempt"/> until it succeeds, fails for good, or <see cref="RegistryOptions.RetryLimit"/>
    /// retries are spent. Each attempt gets its own deadline, so a stalled connection or body cannot hang a caller.
    /// </summary>
    internal async Task<T> WithRetriesAsync<T>(string operation, TimeSpan timeout, Func<CancellationToken, Task<T>> attempt, CancellationToken ct)
    {
        for (int i = 0; ; i++)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            Exception error;
            try
            {
                return await attempt(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { throw; }
            catch (OperationCanceledException e) { error = new RegistryException($"{operation}: no answer within {timeout.TotalSeconds:0.###} s", 0, true, e); }
            catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException)
            {
                // A refused certificate will be refused again: say why and what to configure instead of retrying.
                var why = Volatile.Read(ref _lastCertificateError) ?? e.InnerException.Message;
                error = new RegistryException($"{operation}: TLS with {_o.Host} failed: {why}; set ca_file to the CA that signed "
                    + "the registry's certificate, or skip_verify", 0, transient: false, e);
            }
            catch (HttpRequestException e) { error = new RegistryException($"{operation}: {e.Message}", 0, true, e); }
            catch (IOException e) { error = new RegistryException($"{operation}: {e.Message}", 0, true, e); }
            // SocketsHttpHandler lets a SocketException escape unwrapped when the peer closes a connection between
            // connect and the first write (it reads RemoteEndPoint then): ENOTCONN is as transient as a refused connect.
            catch (System.Net.Sockets.SocketException e) { error = new RegistryException($"{operation}: {e.Message}", 0, true, e); }
            catch (RegistryException e) { error = e; }
            var re = (RegistryException)error;
            if (!re.Transient || i >= _o.RetryLimit)
            {
                OciLog.GaveUp(_log, operation, i + 1, re.Message);
                throw re;
            }
            var delay = Backoff(i);
            OciLog.Retrying(_log, operation, i + 1, re.Message, (int)delay.TotalMilliseconds);
            await Task.Delay(delay, ct).ConfigureAwait(false);
        }
    }

    private TimeSpan Backoff(int retry)
    {
        double ms = _o.RetryDelay.TotalMilliseconds * Math.Pow(2, Math.Min(retry, 16));
        ms = Math.Min(ms, _o.MaxRetryDelay.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(ms * (0.75 + Random.Shared.NextDouble() * 0.5));
    }

    /// <summary>Sends a request with the current credentials; on a 401 with a challenge it authenticates once and
    /// sends it again. <paramref name="make"/> builds a fresh request each time (a request cannot be sent twice);
    /// a non-replayable body (a stream) is authenticated up front with a bodiless probe instead.</summary>
    private async Task<HttpResponseMessage> SendAsync(Func<HttpRequestMessage> make, string scope, CancellationToken ct, bool replayable = true,
        HttpClient? via = null)
    {
        var http = via ?? _http;
        if (!replayable && _challenge is null && (Credentials is not null || _o.BearerToken is not null))
        {
            // Learn the challenge with a cheap GET /v2/ before streaming a body that cannot be sent twice.
            using var probe = await SendAsync(() => new HttpRequestMessage(HttpMethod.Get, "v2/"), scope, ct).ConfigureAwait(false);
        }
        var req = make();
        await AuthorizeAsync(req, scope, ct).ConfigureAwait(false);
        var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
        if (resp.StatusCode != HttpStatusCode.Unauthorized || !replayable) return Classify(resp);
        AuthChallenge? ch = null;
        foreach (var h in resp.Headers.WwwAuthenticate)
            if (AuthChallenge.TryParse(h.ToString(), out var c) && (c.IsBearer || c.IsBasic)) { ch = c; break; }
        if (ch is null) return Classify(resp);
        resp.Dispose();
        lock (_authLock) _challenge = ch;
        _tokens.TryRemove(scope, out _);             // a cached token was rejected: fetch a new one
        req = make();
        await AuthorizeAsync(req, scope, ct).ConfigureAwait(false);
        return Classify(await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false));
    }

    /// <summary>Turns 5xx and 429 into a transient failure here, so every caller retries them alike.</summary>
    private HttpResponseMessage Classify(HttpResponseMessage resp)
    {
        int code = (int)resp.StatusCode;
        if (code >= 500 || code == 429)
        {
            var e = StatusError(resp, resp.RequestMessage?.Method + " " + resp.RequestMessage?.RequestUri?.AbsolutePath);
            resp.Dispose();
            throw e;
        }
        return resp;
    }

    private async Task AuthorizeAsync(HttpRequestMessage req, string scope, CancellationToken ct)
    {
        AuthChallenge? ch;
        lock (_authLock) ch = _challenge;
        if (ch is null)
        {
            if (_o.BearerToken is { } t) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", t);
            return;
        }
        if (ch.IsBasic)
        {
            if (Credentials is { } c) req.Headers.Authorization = new AuthenticationHeaderValue("Basic", c.BasicHeaderValue);
            return;
        }
        string token = await GetTokenAsync(ch, scope, ct).ConfigureAwait(false);
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    /// <summary>A bearer token for <paramref name="scope"/> (space-separated scopes), from the cache while it has more
    /// than a tenth of its life (at least 5 s) left, else from the realm (docker "token.md": GET realm?service=&amp;scope=,
    /// Basic credentials when configured; the answer is JSON with token or access_token and expires_in, 60 s by default).</summary>
    private async Task<string> GetTokenAsync(AuthChallenge ch, string scope, CancellationToken ct)
    {
        if (_tokens.TryGetValue(scope, out var cached) && cached.Expires > DateTime.UtcNow) return cached.Token;
        if (ch.Realm is not { } realm || !Uri.TryCreate(realm, UriKind.Absolute, out var realmUri) || realmUri.Scheme is not ("http" or "https"))
            throw new RegistryException($"bearer challenge has no usable realm ('{ch.Realm}')", 401);
        var query = new List<string>();
        if (ch.Service is { } svc) query.Add("service=" + Uri.EscapeDataString(svc));
        foreach (var s in scope.Split(' ', StringSplitOptions.RemoveEmptyEntries)) query.Add("scope=" + Uri.EscapeDataString(s));
        var uri = AddQuery(realmUri, string.Join('&', query));
        using var req = new HttpRequestMessage(HttpMethod.Get, uri);
        if (Credentials is { } c) req.Headers.Authorization = new AuthenticationHeaderValue("Basic", c.BasicHeaderValue);
        using var resp = Classify(await _http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false));
        if (!resp.IsSuccessStatusCode) throw StatusError(resp, "token request to " + realmUri.Host);
        var body = await ReadLimitedAsync(resp.Content, MaxTokenResponseBytes, ct).ConfigureAwait(false);
        string? token = null;
        int expiresIn = 60;
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object)
            {
                if (root.TryGetProperty("token", out var tk) && tk.ValueKind == JsonValueKind.String) token = tk.GetString();
                if (string.IsNullOrEmpty(token) && root.TryGetProperty("access_token", out var at) && at.ValueKind == JsonValueKind.String) token = at.GetString();
                if (root.TryGetProperty("expires_in", out var ei) && ei.TryGetInt32(out int e) && e > 0) expiresIn = Math.Min(e, 86400);
            }
        }
        // InvalidOperationException: a token string that is not valid Unicode (GetString checks it only then).
        catch (Exception ex) when (ex is JsonException or InvalidOperationException) { }
        if (string.IsNullOrEmpty(token)) throw new RegistryException("token endpoint answered without a token", (int)resp.StatusCode);
        var life = TimeSpan.FromSeconds(expiresIn);
        var margin = TimeSpan.FromSeconds(Math.Max(5, expiresIn / 10.0));
        _tokens[scope] = (token, DateTime.UtcNow + (life > margin ? life - margin : TimeSpan.Zero));
        OciLog.TokenFetched(_log, scope, realmUri.Host, expiresIn);
        return token;
    }

    private void EnsureSuccess(HttpResponseMessage resp, string what)
    {
        if (!resp.IsSuccessStatusCode) throw StatusError(resp, what);
    }

    private RegistryException StatusError(HttpResponseMessage resp, string what)
    {
        int code = (int)resp.StatusCode;
        bool transient = code >= 500 || code == 429;
        // Say which it is: a user seeing a bare 401 cannot tell "no credentials" from "wrong credentials".
        string hint = code is 401 or 403
            ? Credentials is null && _o.BearerToken is null
                ? " (the registry wants credentials and none were given: docker config.json, --docker-config, or auth in the config)"
                : " (the registry refused the credentials given)"
            : "";
        return new RegistryException($"{what}: HTTP {code} {resp.ReasonPhrase}{hint}", code, transient);
    }

    private static async Task<byte[]> ReadLimitedAsync(HttpContent content, int max, CancellationToken ct)
    {
        if (content.Headers.ContentLength is { } len && len > max) throw new RegistryException($"response of {len} bytes exceeds the {max}-byte limit");
        using var s = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        var ms = new MemoryStream();
        var buf = new byte[16384];
        int n;
        while ((n = await s.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
        {
            if (ms.Length + n > max) throw new RegistryException($"response exceeds the {max}-byte limit");
            ms.Write(buf, 0, n);
        }
        if (content.Headers.ContentLength is { } l2 && l2 != ms.Length) throw new RegistryException("response body truncated", 0, transient: true);
        return ms.ToArray();
    }

    private static async Task SkipAsync(Stream s, long count, CancellationToken ct)
    {
        var buf = new byte[Math.Min(count, 64 * 1024)];
        while (count > 0)
        {
            int n = await s.ReadAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, count)), ct).ConfigureAwait(false);
            if (n == 0) throw new RegistryException("body ended before the requested offset", 0, transient: true);
            count -= n;
        }
    }

    /// <summary>The server certificate check: anything with <c>skip_verify</c>; else the system trust store, plus with
    /// <c>ca_file</c> that file's certificates as further trust anchors (added, as nydus adds them to reqwest's roots,
    /// so a redirect to public storage still verifies; the host name must match either way). A refusal is remembered
    /// so the error can say why.</summary>
    private RemoteCertificateValidationCallback MakeCertificateCheck(RegistryOptions o)
    {
        if (o.SkipVerify) return (_, _, _, _) => true;
        if (o.CaFile is null)
        {
            return (_, _, _, errors) =>
            {
                if (errors == SslPolicyErrors.None) return true;
                Volatile.Write(ref _lastCertificateError, $"server certificate refused ({errors}) by the system trust store");
                return false;
            };
        }
        var roots = new X509Certificate2Collection();
        roots.ImportFromPemFile(o.CaFile);
        if (roots.Count == 0) throw new ArgumentException($"CA file '{o.CaFile}' holds no certificates");
        return (_, cert, presented, errors) =>
        {
            if (errors == SslPolicyErrors.None) return true;
            if (cert is null || (errors & (SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateNotAvailable)) != 0)
            {
                Volatile.Write(ref _lastCertificateError, $"server certificate refused ({errors & ~SslPolicyErrors.RemoteCertificateChainErrors})");
                return false;
            }
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.AddRange(roots);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            chain.ChainPolicy.DisableCertificateDownloads = true;    // no network lookups from inside a handshake
            // Intermediates the server sent along (its certificate file may hold the chain) help build the path.
            if (presented is not null)
                foreach (var el in presented.ChainElements) chain.ChainPolicy.ExtraStore.Add(el.Certificate);
            using var c2 = new X509Certificate2(cert);
            if (chain.Build(c2)) return true;
            var status = string.Join(", ", chain.ChainStatus.Select(st => st.Status.ToString()).Distinct());
            Volatile.Write(ref _lastCertificateError, $"server certificate does not chain to a CA in '{o.CaFile}' ({status})");
            return false;
        };
    }

    public void Dispose()
    {
        _proxy?.Dispose();
        _proxyHttp?.Dispose();
        _http.Dispose();
    }

    /// <summary>
    /// Health of the blob proxy, as nydusd keeps it (connection.rs, start_proxy_health_thread): with a ping URL, a timer
    /// GETs it every check interval (straight, never through the proxy; the deadline is the connect timeout) and any
    /// 2xx/3xx marks the proxy healthy, anything else or no answer unhealthy; pings pause while no blob request has
    /// been made for <see cref="RegistryProxyOptions.CheckPauseElapsed"/>. A failed request also marks it down at once
    /// (nydusd keeps trying a dead proxy on every request until the next ping; this spares reads that cost). Without a
    /// ping URL nydusd never checks; here a proxy marked down is simply tried again one check interval later.
    /// </summary>
    private sealed class ProxyState : IDisposable
    {
        private readonly RegistryClient _owner;
        private readonly ITimer _timer;
        private volatile bool _healthy = true;
        private long _lastActive = Environment.TickCount64;
        private int _checking;

        public ProxyState(RegistryClient owner, RegistryProxyOptions options)
        {
            _owner = owner;
            Options = options;
            Base = new Uri(options.Url);
            Ping = options.PingUrl is { Length: > 0 } pu ? new Uri(pu) : null;
            _timer = TimeProvider.System.CreateTimer(_ => _ = CheckAsync(), null, options.CheckInterval, options.CheckInterval);
        }

        public RegistryProxyOptions Options { get; }
        public Uri Base { get; }
        public Uri? Ping { get; }
        public bool Healthy => _healthy;

        public void Touch() => Volatile.Write(ref _lastActive, Environment.TickCount64);

        /// <summary>The URL sent to the proxy: the target itself, or with <c>use_http</c> its http form, so that a
        /// proxy which cannot intercept a CONNECT tunnel sees (and caches) the request; the proxy speaks https upstream.</summary>
        public Uri Rewrite(Uri target) =>
            Options.UseHttp && target.Scheme == Uri.UriSchemeHttps ? new UriBuilder(target) { Scheme = Uri.UriSchemeHttp, Port = target.Port }.Uri : target;

        public void MarkDown(string why)
        {
            if (!_healthy) return;
            _healthy = false;
            OciLog.ProxyDown(_owner._log, Base.Authority, why);
        }

        private void MarkUp()
        {
            if (_healthy) return;
            _healthy = true;
            OciLog.ProxyUp(_owner._log, Base.Authority);
        }

        private async Task CheckAsync()
        {
            if (Interlocked.Exchange(ref _checking, 1) == 1) return;
            try
            {
                if (Ping is null)
                {
                    MarkUp();   // nothing to ask: give the proxy another chance
                    return;
                }
                if (Environment.TickCount64 - Volatile.Read(ref _lastActive) > (long)Options.CheckPauseElapsed.TotalMilliseconds) return;
                string? failure;
                try
                {
                    using var cts = new CancellationTokenSource(_owner._o.ConnectTimeout);
                    using var resp = await _owner._http.GetAsync(Ping, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
                    int code = (int)resp.StatusCode;
                    failure = code is >= 200 and < 400 ? null : $"ping {Ping} answered HTTP {code}";
                }
                catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException or System.Net.Sockets.SocketException)
                {
                    failure = $"ping {Ping}: {e.Message}";
                }
                if (failure is null) MarkUp();
                else MarkDown(failure);
            }
            catch (ObjectDisposedException) { }   // the client was disposed while a ping was on its way
            finally { Volatile.Write(ref _checking, 0); }
        }

        public void Dispose() => _timer.Dispose();
    }

    /// <summary>One proxy for every destination, loopback included (the environment's proxy settings are not consulted).</summary>
    private sealed class FixedProxy(Uri proxy) : IWebProxy
    {
        public ICredentials? Credentials { get; set; }
        public Uri GetProxy(Uri destination) => proxy;
        public bool IsBypassed(Uri host) => false;
    }
}

/// <summary>Reports bytes read through a stream (upload progress).</summary>
internal sealed class ProgressStream(Stream inner, IProgress<long>? progress, long length) : Stream
{
    private long _done;
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => length;
    public override long Position { get => _done; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));
    public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => Count(await inner.ReadAsync(buffer, ct).ConfigureAwait(false));
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) => ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    private int Count(int n)
    {
        _done += n;
        if (n > 0) progress?.Report(_done);
        return n;
    }
}
