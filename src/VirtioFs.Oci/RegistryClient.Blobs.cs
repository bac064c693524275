using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using VirtioFs.Oci.Http;

namespace VirtioFs.Oci;

// Blob reads: range reads for the lazy-pull backend, HEAD for sizes, whole downloads with a digest check. A read goes to
// a cached redirect target (a presigned storage URL) when there is one, else to the registry, through the forward proxy
// while one is configured; redirects are followed without the registry's credentials.
public sealed partial class RegistryClient
{
    private readonly ConcurrentDictionary<string, (Uri Location, DateTime Expires)> _redirects = new(StringComparer.Ordinal);

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
        return WithRetriesAsync("read " + digest, _o.Transport.Timeout, async t =>
        {
            using var resp = await GetBlobAsync(digest, offset, destination.Length, t).ConfigureAwait(false);
            await _pipeline.ReadRangeBodyAsync(resp, offset, destination, t).ConfigureAwait(false);
            return true;
        }, ct);
    }

    /// <summary>Reads many ranges at once (prefetch): they share the connection pool, bounded by
    /// <see cref="Http.HttpTransportOptions.MaxConnectionsPerServer"/>. Fails with the first range that fails.</summary>
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
        return WithRetriesAsync("head " + digest, _o.Transport.Timeout, async t =>
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
        return WithRetriesAsync("download " + digest, _o.Transport.TransferTimeout, async t =>
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
        return await _pipeline.FollowRedirectsAsync(resp, "blob " + digest,
            // The storage URL carries its own authorization; the registry's credentials are not sent there.
            (target, t) => RouteAsync(target, SetRange, authorize: false, t),
            target => _redirects[digest] = (target, DateTime.UtcNow + _o.RedirectCacheTime),
            StatusError, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends one blob GET the way nydusd routes a request: through the forward proxy while one is configured
    /// (<see cref="ForwardProxyRouter.RouteAsync"/>: fallback to <paramref name="target"/> when it fails), else straight.
    /// <paramref name="authorize"/> sends the registry's credentials (registry URLs); redirect targets carry their own
    /// and get none.
    /// </summary>
    private Task<HttpResponseMessage> RouteAsync(Uri target, Action<HttpRequestMessage> setRange, bool authorize, CancellationToken ct)
    {
        Task<HttpResponseMessage> Send(Uri url, HttpClient http, CancellationToken t)
        {
            HttpRequestMessage Make()
            {
                var r = new HttpRequestMessage(HttpMethod.Get, url);
                setRange(r);
                return r;
            }
            return authorize
                ? SendAsync(Make, _pullScope, t, via: http)
                : http.SendAsync(Make(), HttpCompletionOption.ResponseHeadersRead, t);
        }

        return _proxy is { } proxy ? proxy.RouteAsync(target, Send, ct) : Send(target, _pipeline.Direct, ct);
    }
}
