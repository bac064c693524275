using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Oci.Http;

namespace VirtioFs.Oci.ObjectStorage;

// Overview: a client for one bucket of S3-compatible storage or Alibaba OSS, as nydus's object storage backends use it
// (storage/src/backend/object_storage.rs): an object is named object_prefix + blob id; reads are range GETs, sizes come
// from HEAD; every request is signed (AWS Signature V4 for S3, the OSS header signature for OSS). Uploads are a single
// PUT, or for large objects a multipart upload (S3 API CreateMultipartUpload / UploadPart / CompleteMultipartUpload,
// which OSS speaks with the same request shape). Deadlines, retries, redirects and the forward proxy are the shared
// HttpRequestPipeline and ForwardProxyRouter the registry client uses.

/// <summary>Thread-safe client for one bucket; one instance serves every reader.</summary>
public sealed partial class ObjectStorageClient : IDisposable
{
    private const int MaxErrorBodyBytes = 64 << 10;
    private const int MaxSmallResponseBytes = 1 << 20;

    private readonly ObjectStorageOptions _o;
    private readonly ILogger _log;
    private readonly HttpRequestPipeline _pipeline;
    private readonly ForwardProxyRouter? _proxy;
    private readonly string _baseUrl;       // scheme://host[:port]/ plus "bucket/" for path-style
    private readonly TimeProvider _time;

    public ObjectStorageClient(ObjectStorageOptions options, ILogger? logger = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _o = options;
        _log = logger ?? NullLogger.Instance;
        _time = time ?? TimeProvider.System;
        _baseUrl = options.PathStyle
            ? $"{options.Scheme}://{options.EffectiveEndpoint}/{options.Bucket}/"
            : $"{options.Scheme}://{options.Bucket}.{options.EffectiveEndpoint}/";
        _pipeline = new HttpRequestPipeline(new HttpPipelineOptions
        {
            Service = options.ServiceName,
            Peer = options.EffectiveEndpoint,
            NewError = (message, status, transient, inner) => new ObjectStorageException(message, status, transient, inner),
            Transport = options.Transport,
            UserAgent = "vfs-objectstorage/1.0",
        }, null, _log);
        if (options.Transport.Proxy is { } p) _proxy = new ForwardProxyRouter(_pipeline, p, _log);
        OciLog.ObjectStorageCredentials(_log, options.ServiceName, options.Bucket, options.CredentialSource,
            options.Credentials?.AccessKeyId ?? "(none: unsigned requests)");
    }

    public ObjectStorageOptions Options => _o;

    /// <summary>The URL of the object for blob <paramref name="blobId"/> (prefix prepended, path-encoded).</summary>
    public Uri ObjectUri(string blobId, string query = "")
    {
        string url = _baseUrl + AwsSignatureV4.EncodePath(_o.ObjectPrefix + blobId);
        return new Uri(query.Length == 0 ? url : url + "?" + query);
    }

    /// <summary>How a log line or an error names an object: <c>s3://bucket/key</c>.</summary>
    public string Describe(string blobId) => $"{_o.ServiceName}://{_o.Bucket}/{_o.ObjectPrefix}{blobId}";

    // ---------------------------------------------------------------- reads

    /// <summary>Reads <c>destination.Length</c> bytes of the object at <paramref name="offset"/> with a range GET.
    /// Throws <see cref="ObjectStorageException"/> once the retries are spent or the failure is final.</summary>
    public Task ReadAsync(string blobId, long offset, Memory<byte> destination, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (destination.Length == 0) return Task.CompletedTask;
        if (offset > long.MaxValue - destination.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        var uri = ObjectUri(blobId);
        string what = Describe(blobId);
        return _pipeline.WithRetriesAsync("read " + what, _o.Transport.Timeout, async t =>
        {
            void SetRange(HttpRequestMessage r) => r.Headers.Range = new RangeHeaderValue(offset, offset + destination.Length - 1);
            var resp = await RouteAsync(uri, SetRange, t).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode && (int)resp.StatusCode is not (301 or 302 or 303 or 307 or 308))
                throw await ReadErrorAsync(resp, "GET " + what, t).ConfigureAwait(false);
            // S3 answers 301/307 for a bucket in another region; the target is signed for anew (the signature is
            // bound to its host, so nothing reusable goes there).
            resp = await _pipeline.FollowRedirectsAsync(resp, what, (target, t2) => RouteAsync(target, SetRange, t2), null,
                (r, w) => StatusError(r, w, null), t).ConfigureAwait(false);
            using (resp) await _pipeline.ReadRangeBodyAsync(resp, offset, destination, t).ConfigureAwait(false);
            return true;
        }, ct);
    }

    /// <summary>Size of the object, or null when the bucket has no such object (HEAD).</summary>
    public Task<long?> GetSizeAsync(string blobId, CancellationToken ct = default)
    {
        var uri = ObjectUri(blobId);
        string what = Describe(blobId);
        return _pipeline.WithRetriesAsync("head " + what, _o.Transport.Timeout, async t =>
        {
            using var resp = await SendAsync(() => new HttpRequestMessage(HttpMethod.Head, uri), AwsSignatureV4.EmptyPayloadHash, t).ConfigureAwait(false);
            if (resp.StatusCode == HttpStatusCode.NotFound) return (long?)null;
            if (!resp.IsSuccessStatusCode) throw StatusError(resp, "HEAD " + what, null);
            return resp.Content.Headers.ContentLength ?? throw new ObjectStorageException($"HEAD {what}: no Content-Length");
        }, ct);
    }

    /// <summary>One signed GET, through the forward proxy while one is configured.</summary>
    private Task<HttpResponseMessage> RouteAsync(Uri target, Action<HttpRequestMessage> setRange, CancellationToken ct)
    {
        Task<HttpResponseMessage> Send(Uri url, HttpClient http, CancellationToken t) => SendAsync(() =>
        {
            var r = new HttpRequestMessage(HttpMethod.Get, url);
            setRange(r);
            return r;
        }, AwsSignatureV4.EmptyPayloadHash, t, http);

        return _proxy is { } proxy ? proxy.RouteAsync(target, Send, ct) : Send(target, _pipeline.Direct, ct);
    }

    /// <summary>Signs and sends a request; 5xx and 429 (503 SlowDown included) become transient failures.</summary>
    private async Task<HttpResponseMessage> SendAsync(Func<HttpRequestMessage> make, string payloadHash, CancellationToken ct, HttpClient? via = null)
    {
        var req = make();
        Sign(req, payloadHash);
        var resp = await (via ?? _pipeline.Direct).SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
        int code = (int)resp.StatusCode;
        if (code >= 500 || code == 429)
        {
            var e = await ReadErrorAsync(resp, $"{req.Method} {req.RequestUri?.AbsolutePath}", ct).ConfigureAwait(false);
            throw e;
        }
        return resp;
    }

    private void Sign(HttpRequestMessage req, string payloadHash)
    {
        if (_o.Credentials is not { } c) return;     // a public bucket: unsigned requests
        DateTime now = _time.GetUtcNow().UtcDateTime;
        var uri = req.RequestUri!;
        if (_o.Kind == ObjectStorageKind.Oss)
        {
            SignOss(req, c, now);
            return;
        }
        req.Headers.TryAddWithoutValidation("x-amz-date", AwsSignatureV4.AmzDate(now));
        req.Headers.TryAddWithoutValidation("x-amz-content-sha256", payloadHash);
        if (c.SessionToken is { } token) req.Headers.TryAddWithoutValidation("x-amz-security-token", token);
        var signed = new List<KeyValuePair<string, string>> { new("host", uri.IsDefaultPort ? uri.Host : uri.Authority) };
        foreach (var h in req.Headers)
        {
            if (h.Key.StartsWith("x-amz-", StringComparison.OrdinalIgnoreCase) || h.Key.Equals("Range", StringComparison.OrdinalIgnoreCase))
                signed.Add(new(h.Key, string.Join(',', h.Value)));
        }
        string query = uri.Query.StartsWith('?') ? uri.Query[1..] : uri.Query;
        req.Headers.TryAddWithoutValidation("Authorization", AwsSignatureV4.Authorization(req.Method.Method, uri.AbsolutePath, query, signed,
            payloadHash, c.AccessKeyId, c.AccessKeySecret, _o.EffectiveRegion, now));
    }

    /// <summary>Turns a failed response into an error that says what failed and, for refused credentials, which bucket
    /// and key id were refused and why (the service's error code: InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken).</summary>
    private ObjectStorageException StatusError(HttpResponseMessage resp, string what, string? bodyCode, string? bodyMessage = null)
    {
        int code = (int)resp.StatusCode;
        bool transient = code >= 500 || code == 429;
        var sb = new StringBuilder($"{what}: HTTP {code} {resp.ReasonPhrase}");
        if (bodyCode is not null) sb.Append(' ').Append(bodyCode);
        if (bodyMessage is { Length: > 0 }) sb.Append(" (").Append(bodyMessage).Append(')');
        if (code is 401 or 403)
        {
            string key = _o.Credentials is { } c ? $"access key id '{c.AccessKeyId}' (from the {_o.CredentialSource})" : "no credentials";
            sb.Append(bodyCode switch
            {
                "ExpiredToken" or "TokenRefreshRequired" or "SecurityTokenExpired" => $": the session token has expired; bucket '{_o.Bucket}', {key} needs fresh credentials",
                "InvalidAccessKeyId" => $": bucket '{_o.Bucket}' does not know {key}",
                "SignatureDoesNotMatch" => $": bucket '{_o.Bucket}' refused the secret given with {key}",
                _ => $": bucket '{_o.Bucket}' refused {key}",
            });
        }
        return new ObjectStorageException(sb.ToString(), code, transient, errorCode: bodyCode);
    }

    /// <summary>Reads the error document of a failed response (bounded) and disposes the response.</summary>
    private async Task<ObjectStorageException> ReadErrorAsync(HttpResponseMessage resp, string what, CancellationToken ct)
    {
        string? code = null, message = null;
        try
        {
            if (resp.RequestMessage?.Method != HttpMethod.Head)
            {
                var body = await _pipeline.ReadLimitedAsync(resp.Content, MaxErrorBodyBytes, ct).ConfigureAwait(false);
                string text = Encoding.UTF8.GetString(body);
                code = XmlElement(text, "Code");
                message = XmlElement(text, "Message");
            }
        }
        catch (Exception e) when (e is RemoteStorageException or IOException or HttpRequestException or OperationCanceledException) { }
        using (resp) return StatusError(resp, what, code, message);
    }

    /// <summary>The text of the first <c>&lt;name&gt;</c> element of a small XML document, unescaped; null when absent.
    /// The documents S3 and OSS answer are flat, so this is all the XML this client needs.</summary>
    internal static string? XmlElement(string xml, string name)
    {
        int start = xml.IndexOf("<" + name + ">", StringComparison.Ordinal);
        if (start < 0) return null;
        start += name.Length + 2;
        int end = xml.IndexOf("</" + name + ">", start, StringComparison.Ordinal);
        if (end < 0) return null;
        return WebUtility.HtmlDecode(xml[start..end]);
    }

    public void Dispose()
    {
        _proxy?.Dispose();
        _pipeline.Dispose();
    }
}
