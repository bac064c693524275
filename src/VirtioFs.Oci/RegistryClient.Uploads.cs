using System.Net;
using System.Net.Http.Headers;
using VirtioFs.Oci.Http;

namespace VirtioFs.Oci;

// Blob uploads (distribution-spec "Pushing blobs"): HEAD to skip what the registry has, a cross-repository mount when
// asked, then a monolithic or a chunked upload.
public sealed partial class RegistryClient
{

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
        return WithRetriesAsync("push " + digest, _o.Transport.TransferTimeout, async t =>
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
                var put = HttpRequestPipeline.AddQuery(location, "digest=" + Uri.EscapeDataString(digest));
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
                var put = HttpRequestPipeline.AddQuery(location, "digest=" + Uri.EscapeDataString(digest));
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
