using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace VirtioFs.Oci.Http;

// Overview: what every HTTP storage backend needs around a single request, whatever the service speaks on top (OCI
// distribution, S3, OSS): a pooled connection handler with a connect deadline and a certificate check, a deadline per
// attempt, retries with exponential backoff and jitter for transient failures (connection errors, timeouts, truncated
// bodies, 5xx, 429), redirects followed by hand, and range bodies read exactly. nydus keeps the same pieces in
// storage/src/backend/connection.rs (Connection::call, respond with retry_limit) for its registry, oss and s3 backends.

/// <summary>What a <see cref="HttpRequestPipeline"/> talks to, and how it connects and retries.</summary>
public sealed class HttpPipelineOptions
{
    /// <summary>What is being talked to, for logs and errors: "registry", "s3", "oss".</summary>
    public required string Service { get; init; }

    /// <summary>The server's host[:port], named in TLS errors.</summary>
    public required string Peer { get; init; }

    /// <summary>Makes the service's own exception type (so callers can tell a registry failure from an S3 one).</summary>
    public required Func<string, int, bool, Exception?, RemoteStorageException> NewError { get; init; }

    /// <summary>Connect deadline, retries, certificate check (the service's <c>Transport</c>).</summary>
    public required HttpTransportOptions Transport { get; init; }

    /// <summary>The User-Agent sent with every request.</summary>
    public string UserAgent { get; init; } = "vfs-registry/1.0";
}

/// <summary>
/// The request pipeline one HTTP storage client is built on. Thread-safe; owns the direct <see cref="HttpClient"/>
/// (connection pool) and builds further clients (a forward proxy's) with the same connect deadline and certificate check.
/// </summary>
public sealed class HttpRequestPipeline : IDisposable
{
    private const int MaxRedirects = 5;

    private readonly HttpPipelineOptions _o;
    private readonly ILogger _log;
    private readonly RemoteCertificateValidationCallback _certCheck;
    private string? _lastCertificateError;            // why the last server certificate was refused, for a clear error

    public HttpRequestPipeline(HttpPipelineOptions options, Uri? baseAddress, ILogger? logger = null)
    {
        _o = options;
        _log = logger ?? NullLogger.Instance;
        _certCheck = MakeCertificateCheck(options.Transport);
        Direct = CreateClient(null, baseAddress);
    }

    public HttpPipelineOptions Options => _o;

    /// <summary>The client that talks to servers straight (never through a proxy).</summary>
    public HttpClient Direct { get; }

    /// <summary>A client with this pipeline's handler settings, through <paramref name="proxy"/> when given. Its
    /// timeout is infinite: deadlines are per attempt (<see cref="WithRetriesAsync{T}"/>).</summary>
    public HttpClient CreateClient(IWebProxy? proxy, Uri? baseAddress)
    {
        var http = new HttpClient(CreateHandler(proxy), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan, BaseAddress = baseAddress };
        http.DefaultRequestHeaders.UserAgent.ParseAdd(_o.UserAgent);
        return http;
    }

    private SocketsHttpHandler CreateHandler(IWebProxy? proxy) => new()
    {
        AllowAutoRedirect = false,                 // redirects are followed by hand: auth must not leak to storage, targets are cached
        ConnectTimeout = _o.Transport.ConnectTimeout,
        MaxConnectionsPerServer = _o.Transport.MaxConnectionsPerServer,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
        PooledConnectionLifetime = TimeSpan.FromMinutes(10),   // pick up DNS changes
        AutomaticDecompression = DecompressionMethods.None,    // range reads need the bytes as stored
        UseCookies = false,
        UseProxy = proxy is not null,              // never the environment's HTTP_PROXY: only the configured one
        Proxy = proxy,
        // Redirect targets and a proxy's CONNECT tunnels may be https even for a plain-http server.
        SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = _certCheck },
    };

    /// <summary>A failure of this service, of its own exception type.</summary>
    public RemoteStorageException Error(string message, int statusCode = 0, bool transient = false, Exception? inner = null) =>
        _o.NewError(message, statusCode, transient, inner);

    /// <summary>
    /// Runs <paramref name="attempt"/> until it succeeds, fails for good, or <see cref="HttpTransportOptions.RetryLimit"/>
    /// retries are spent. Each attempt gets its own deadline, so a stalled connection or body cannot hang a caller.
    /// </summary>
    public async Task<T> WithRetriesAsync<T>(string operation, TimeSpan timeout, Func<CancellationToken, Task<T>> attempt, CancellationToken ct)
    {
        for (int i = 0; ; i++)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            RemoteStorageException error;
            try
            {
                return await attempt(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { throw; }
            catch (OperationCanceledException e) { error = Error($"{operation}: no answer within {timeout.TotalSeconds:0.###} s", 0, true, e); }
            catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException)
            {
                // A refused certificate will be refused again: say why and what to configure instead of retrying.
                var why = Volatile.Read(ref _lastCertificateError) ?? e.InnerException.Message;
                error = Error($"{operation}: TLS with {_o.Peer} failed: {why}; set ca_file to the CA that signed "
                    + $"the {_o.Service}'s certificate, or skip_verify", 0, transient: false, e);
            }
            catch (HttpRequestException e) { error = Error($"{operation}: {e.Message}", 0, true, e); }
            catch (IOException e) { error = Error($"{operation}: {e.Message}", 0, true, e); }
            // SocketsHttpHandler lets a SocketException escape unwrapped when the peer closes a connection between
            // connect and the first write (it reads RemoteEndPoint then): ENOTCONN is as transient as a refused connect.
            catch (System.Net.Sockets.SocketException e) { error = Error($"{operation}: {e.Message}", 0, true, e); }
            catch (RemoteStorageException e) { error = e; }
            if (!error.Transient || i >= _o.Transport.RetryLimit)
            {
                OciLog.GaveUp(_log, _o.Service, operation, i + 1, error.Message);
                throw error;
            }
            var delay = Backoff(i);
            OciLog.Retrying(_log, _o.Service, operation, i + 1, error.Message, (int)delay.TotalMilliseconds);
            await Task.Delay(delay, ct).ConfigureAwait(false);
        }
    }

    private TimeSpan Backoff(int retry)
    {
        double ms = _o.Transport.RetryDelay.TotalMilliseconds * Math.Pow(2, Math.Min(retry, 16));
        ms = Math.Min(ms, _o.Transport.MaxRetryDelay.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(ms * (0.75 + Random.Shared.NextDouble() * 0.5));
    }

    /// <summary>Turns 5xx and 429 into a transient failure here, so every caller retries them alike.</summary>
    public HttpResponseMessage ThrowIfTransient(HttpResponseMessage resp)
    {
        int code = (int)resp.StatusCode;
        if (code >= 500 || code == 429)
        {
            var e = Error($"{resp.RequestMessage?.Method} {resp.RequestMessage?.RequestUri?.AbsolutePath}: HTTP {code} {resp.ReasonPhrase}", code, true);
            resp.Dispose();
            throw e;
        }
        return resp;
    }

    /// <summary>
    /// Follows redirects of a GET by hand (at most five): <paramref name="resend"/> sends the request to each target
    /// (without the first server's credentials: a storage URL carries its own), <paramref name="followed"/> hears of
    /// each target that answered with success (to cache it). A final non-success answer becomes
    /// <paramref name="statusError"/>'s exception. Returns a success response with unread content.
    /// </summary>
    public async Task<HttpResponseMessage> FollowRedirectsAsync(HttpResponseMessage resp, string what,
        Func<Uri, CancellationToken, Task<HttpResponseMessage>> resend, Action<Uri>? followed,
        Func<HttpResponseMessage, string, RemoteStorageException> statusError, CancellationToken ct)
    {
        for (int hop = 0; ; hop++)
        {
            int code = (int)resp.StatusCode;
            if (code is 301 or 302 or 303 or 307 or 308)
            {
                var loc = resp.Headers.Location;
                var from = resp.RequestMessage?.RequestUri ?? Direct.BaseAddress;
                resp.Dispose();
                if (loc is null) throw Error($"{what}: HTTP {code} without a Location", code);
                if (hop >= MaxRedirects) throw Error($"{what}: more than {MaxRedirects} redirects", code);
                var target = loc.IsAbsoluteUri ? loc : new Uri(from!, loc);
                if (target.Scheme is not ("http" or "https")) throw Error($"{what}: redirect to {target.Scheme}", code);
                OciLog.Redirected(_log, what, target.Host);
                resp = await resend(target, ct).ConfigureAwait(false);
                if (resp.IsSuccessStatusCode) followed?.Invoke(target);
                continue;
            }
            if (!resp.IsSuccessStatusCode)
            {
                var e = statusError(resp, "GET " + what);
                resp.Dispose();
                throw e;
            }
            return resp;
        }
    }

    /// <summary>Copies the body of a range GET for <paramref name="offset"/> into all of <paramref name="destination"/>:
    /// a 206 must start where asked; a 200 (a server that ignores Range) is skipped up to the offset. A body that ends
    /// early is a transient failure (the next attempt may get it whole).</summary>
    public async Task ReadRangeBodyAsync(HttpResponseMessage resp, long offset, Memory<byte> destination, CancellationToken ct)
    {
        long skip = 0;
        if (resp.StatusCode == HttpStatusCode.PartialContent)
        {
            var cr = resp.Content.Headers.ContentRange;
            if (cr is { From: { } from } && from != offset)
                throw Error($"{_o.Service} answered range {from}- for {offset}-", 206, transient: false);
        }
        else skip = offset; // 200: the server ignored Range and sends the whole blob
        using var s = await resp.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        if (skip > 0) await SkipAsync(s, skip, ct).ConfigureAwait(false);
        int done = 0;
        while (done < destination.Length)
        {
            int n = await s.ReadAsync(destination[done..], ct).ConfigureAwait(false);
            if (n == 0) throw Error($"body ended after {done} of {destination.Length} bytes", 0, transient: true);
            done += n;
        }
    }

    /// <summary>Reads a whole small body (a manifest, a token, an error document), refusing more than <paramref name="max"/> bytes.</summary>
    public async Task<byte[]> ReadLimitedAsync(HttpContent content, int max, CancellationToken ct)
    {
        if (content.Headers.ContentLength is { } len && len > max) throw Error($"response of {len} bytes exceeds the {max}-byte limit");
        using var s = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        var ms = new MemoryStream();
        var buf = new byte[16384];
        int n;
        while ((n = await s.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
        {
            if (ms.Length + n > max) throw Error($"response exceeds the {max}-byte limit");
            ms.Write(buf, 0, n);
        }
        if (content.Headers.ContentLength is { } l2 && l2 != ms.Length) throw Error("response body truncated", 0, transient: true);
        return ms.ToArray();
    }

    private async Task SkipAsync(Stream s, long count, CancellationToken ct)
    {
        var buf = new byte[Math.Min(count, 64 * 1024)];
        while (count > 0)
        {
            int n = await s.ReadAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, count)), ct).ConfigureAwait(false);
            if (n == 0) throw Error("body ended before the requested offset", 0, transient: true);
            count -= n;
        }
    }

    /// <summary><paramref name="u"/> with <paramref name="q"/> appended to its query.</summary>
    public static Uri AddQuery(Uri u, string q)
    {
        var b = new UriBuilder(u);
        b.Query = string.IsNullOrEmpty(b.Query) || b.Query == "?" ? q : b.Query.TrimStart('?') + "&" + q;
        return b.Uri;
    }

    /// <summary>The server certificate check: anything with <c>skip_verify</c>; else the system trust store, plus with
    /// <c>ca_file</c> that file's certificates as further trust anchors (added, as nydus adds them to reqwest's roots,
    /// so a redirect to public storage still verifies; the host name must match either way). A refusal is remembered
    /// so the error can say why.</summary>
    private RemoteCertificateValidationCallback MakeCertificateCheck(HttpTransportOptions o)
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

    public void Dispose() => Direct.Dispose();
}
