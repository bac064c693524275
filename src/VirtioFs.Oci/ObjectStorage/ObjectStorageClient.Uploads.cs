using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;

namespace VirtioFs.Oci.ObjectStorage;

// Uploads, as nydus-image and nydusify push blobs to object storage: skip an object that is already there with the
// right size (HEAD), else one PUT for a small blob, or a multipart upload for a large one (S3 API "Uploading and copying
// objects using multipart upload": CreateMultipartUpload POST ?uploads, UploadPart PUT ?partNumber=&uploadId=,
// CompleteMultipartUpload POST ?uploadId= with the parts' ETags; AbortMultipartUpload DELETE ?uploadId= on failure).
public sealed partial class ObjectStorageClient
{
    /// <summary>S3's smallest part (all but the last) and its largest part count.</summary>
    public const long MinPartSize = 5 << 20;
    public const int MaxParts = 10_000;

    /// <summary>What <see cref="UploadAsync"/> did.</summary>
    public enum UploadOutcome { AlreadyPresent, Uploaded, UploadedInParts }

    /// <summary>
    /// Uploads blob <paramref name="blobId"/> of <paramref name="size"/> bytes unless an object of that size is there.
    /// Over <paramref name="multipartThreshold"/> bytes it goes in parts of <paramref name="partSize"/> (raised to what
    /// S3 allows), each retried on its own; <paramref name="open"/> gives the content from its start (once per attempt
    /// of a single PUT, once for a multipart upload). <paramref name="progress"/> hears the bytes sent so far.
    /// </summary>
    public async Task<UploadOutcome> UploadAsync(string blobId, long size, Func<Stream> open, long multipartThreshold = 64L << 20,
        long partSize = 16L << 20, IProgress<long>? progress = null, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        string what = Describe(blobId);
        long? existing = await GetSizeAsync(blobId, ct).ConfigureAwait(false);
        if (existing == size)
        {
            OciLog.ObjectUploaded(_log, what, "already present with the same size");
            progress?.Report(size);
            return UploadOutcome.AlreadyPresent;
        }
        if (existing is { } other) OciLog.ObjectUploaded(_log, what, $"present with {other} bytes instead of {size}: replacing it");
        if (size <= multipartThreshold)
        {
            await PutObjectAsync(blobId, size, open, progress, ct).ConfigureAwait(false);
            OciLog.ObjectUploaded(_log, what, "uploaded");
            return UploadOutcome.Uploaded;
        }
        partSize = Math.Max(Math.Max(partSize, MinPartSize), (size + MaxParts - 1) / MaxParts);
        if (partSize > int.MaxValue / 2) throw new ArgumentOutOfRangeException(nameof(size), "object too large for a multipart upload");
        await PutInPartsAsync(blobId, size, open, (int)partSize, progress, ct).ConfigureAwait(false);
        OciLog.ObjectUploaded(_log, what, $"uploaded in {(size + partSize - 1) / partSize} parts");
        return UploadOutcome.UploadedInParts;
    }

    private Task PutObjectAsync(string blobId, long size, Func<Stream> open, IProgress<long>? progress, CancellationToken ct)
    {
        var uri = ObjectUri(blobId);
        string what = Describe(blobId);
        return _pipeline.WithRetriesAsync("put " + what, _o.Transport.TransferTimeout, async t =>
        {
            using var body = open();
            using var resp = await SendAsync(() =>
            {
                var content = new StreamContent(new ProgressStream(body, progress, size));
                content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                content.Headers.ContentLength = size;
                return new HttpRequestMessage(HttpMethod.Put, uri) { Content = content };
            }, AwsSignatureV4.UnsignedPayload, t).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode) throw await ReadErrorAsync(resp, "PUT " + what, t).ConfigureAwait(false);
            return true;
        }, ct);
    }

    private async Task PutInPartsAsync(string blobId, long size, Func<Stream> open, int partSize, IProgress<long>? progress, CancellationToken ct)
    {
        string what = Describe(blobId);
        string uploadId = await _pipeline.WithRetriesAsync("start multipart upload " + what, _o.Transport.Timeout, async t =>
        {
            using var resp = await SendAsync(() => new HttpRequestMessage(HttpMethod.Post, ObjectUri(blobId, "uploads")) { Content = new ByteArrayContent([]) },
                AwsSignatureV4.EmptyPayloadHash, t).ConfigureAwait(false);
            if (!resp.IsSuccessStatusCode) throw await ReadErrorAsync(resp, "POST ?uploads " + what, t).ConfigureAwait(false);
            string xml = Encoding.UTF8.GetString(await _pipeline.ReadLimitedAsync(resp.Content, MaxSmallResponseBytes, t).ConfigureAwait(false));
            return XmlElement(xml, "UploadId") is { Length: > 0 } id ? id : throw new ObjectStorageException($"{what}: multipart upload started without an UploadId");
        }, ct).ConfigureAwait(false);
        string idQuery = "uploadId=" + Uri.EscapeDataString(uploadId);
        try
        {
            var etags = new List<string>();
            var buf = new byte[partSize];
            using var body = open();
            long sent = 0;
            for (int part = 1; sent < size; part++)
            {
                int want = (int)Math.Min(partSize, size - sent);
                await body.ReadExactlyAsync(buf.AsMemory(0, want), ct).ConfigureAwait(false);
                var uri = ObjectUri(blobId, $"partNumber={part}&{idQuery}");
                string etag = await _pipeline.WithRetriesAsync($"upload part {part} of {what}", _o.Transport.TransferTimeout, async t =>
                {
                    using var resp = await SendAsync(() =>
                    {
                        var content = new ByteArrayContent(buf, 0, want);
                        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                        return new HttpRequestMessage(HttpMethod.Put, uri) { Content = content };
                    }, AwsSignatureV4.UnsignedPayload, t).ConfigureAwait(false);
                    if (!resp.IsSuccessStatusCode) throw await ReadErrorAsync(resp, $"PUT part {part} of {what}", t).ConfigureAwait(false);
                    return resp.Headers.ETag?.ToString() ?? throw new ObjectStorageException($"{what}: part {part} stored without an ETag");
                }, ct).ConfigureAwait(false);
                etags.Add(etag);
                sent += want;
                progress?.Report(sent);
            }
            var xml = new StringBuilder("<CompleteMultipartUpload>");
            for (int i = 0; i < etags.Count; i++)
                xml.Append(CultureInfo.InvariantCulture, $"<Part><PartNumber>{i + 1}</PartNumber><ETag>{WebUtility.HtmlEncode(etags[i])}</ETag></Part>");
            byte[] done = Encoding.UTF8.GetBytes(xml.Append("</CompleteMultipartUpload>").ToString());
            string doneHash = Convert.ToHexStringLower(SHA256.HashData(done));
            await _pipeline.WithRetriesAsync("complete multipart upload " + what, _o.Transport.TransferTimeout, async t =>
            {
                using var resp = await SendAsync(() =>
                {
                    var content = new ByteArrayContent(done);
                    content.Headers.ContentType = new MediaTypeHeaderValue("application/xml");
                    return new HttpRequestMessage(HttpMethod.Post, ObjectUri(blobId, idQuery)) { Content = content };
                }, doneHash, t).ConfigureAwait(false);
                if (!resp.IsSuccessStatusCode) throw await ReadErrorAsync(resp, "complete multipart upload " + what, t).ConfigureAwait(false);
                // S3 may answer 200 and report a failure in the body (CompleteMultipartUpload, "Special errors").
                string answer = Encoding.UTF8.GetString(await _pipeline.ReadLimitedAsync(resp.Content, MaxSmallResponseBytes, t).ConfigureAwait(false));
                if (answer.Contains("<Error>", StringComparison.Ordinal))
                    throw new ObjectStorageException($"complete multipart upload {what}: {XmlElement(answer, "Code")} ({XmlElement(answer, "Message")})",
                        500, transient: true, errorCode: XmlElement(answer, "Code"));
                return true;
            }, ct).ConfigureAwait(false);
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            // Parts of an abandoned upload are billed until aborted: try once, then report the original failure.
            try
            {
                using var cts = new CancellationTokenSource(_o.Transport.Timeout);
                using var resp = await SendAsync(() => new HttpRequestMessage(HttpMethod.Delete, ObjectUri(blobId, idQuery)),
                    AwsSignatureV4.EmptyPayloadHash, cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ObjectStorageException or HttpRequestException or IOException or OperationCanceledException)
            {
                OciLog.ObjectUploaded(_log, what, $"abort of the failed multipart upload failed too: {e.Message}");
            }
            throw;
        }
    }

    /// <summary>Signs with the OSS header signature (<see cref="OssSignature"/>).</summary>
    private void SignOss(HttpRequestMessage req, ObjectStorageCredentials c, DateTime now)
    {
        req.Headers.Date = now;
        if (c.SessionToken is { } token) req.Headers.TryAddWithoutValidation("x-oss-security-token", token);
        var uri = req.RequestUri!;
        var headers = req.Headers.Select(h => new KeyValuePair<string, string>(h.Key, string.Join(',', h.Value)));
        string query = uri.Query.StartsWith('?') ? uri.Query[1..] : uri.Query;
        // The resource names the object unencoded: the path after the bucket (path-style) or the whole path.
        string path = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        if (_o.PathStyle && path.StartsWith(_o.Bucket + "/", StringComparison.Ordinal)) path = path[(_o.Bucket.Length + 1)..];
        string toSign = OssSignature.StringToSign(req.Method.Method, req.Content?.Headers.ContentMD5 is { } md5 ? Convert.ToBase64String(md5) : "",
            req.Content?.Headers.ContentType?.ToString() ?? "", now.ToString("r", CultureInfo.InvariantCulture), headers, _o.Bucket, path, query);
        req.Headers.TryAddWithoutValidation("Authorization", OssSignature.Authorization(c.AccessKeyId, c.AccessKeySecret, toSign));
    }
}
