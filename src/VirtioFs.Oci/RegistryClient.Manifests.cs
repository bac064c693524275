using System.Net;
using System.Net.Http.Headers;

namespace VirtioFs.Oci;

// Manifests and indexes (distribution-spec "Pulling manifests", "Pushing manifests"), the /v2/ ping, and the checks of
// the names a request carries.
public sealed partial class RegistryClient
{
    private const int MaxManifestBytes = 4 << 20;      // distribution itself refuses manifests over 4 MiB


    /// <summary>Media types a manifest GET accepts (OCI and Docker v2 schema 2, single and list).</summary>
    public static readonly string[] ManifestAccept =
        [OciMediaTypes.ImageIndex, OciMediaTypes.ImageManifest, OciMediaTypes.DockerManifestList, OciMediaTypes.DockerManifest];

    /// <summary>A manifest or index as fetched: its media type, raw bytes and digest.</summary>
    public sealed record FetchedManifest(string MediaType, byte[] Body, string Digest);

    /// <summary>Fetches a manifest by tag or digest; a digest reference is checked against the content.</summary>
    public Task<FetchedManifest> GetManifestAsync(string reference, CancellationToken ct = default)
    {
        CheckReference(reference);
        return WithRetriesAsync("get manifest " + reference, _o.Transport.Timeout, async t =>
        {
            using var resp = await SendAsync(() =>
            {
                var r = new HttpRequestMessage(HttpMethod.Get, $"v2/{_o.Repository}/manifests/{reference}");
                foreach (var a in ManifestAccept) r.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(a));
                return r;
            }, _pullScope, t).ConfigureAwait(false);
            EnsureSuccess(resp, "GET manifest " + reference);
            var body = await _pipeline.ReadLimitedAsync(resp.Content, MaxManifestBytes, t).ConfigureAwait(false);
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
        return WithRetriesAsync("put manifest " + reference, _o.Transport.Timeout, async t =>
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

    /// <summary>
    /// The OCI 1.1 Referrers API (distribution-spec "Listing Referrers": GET /v2/NAME/referrers/DIGEST, an image index
    /// of the manifests whose subject is DIGEST), or null when the registry answers 404, i.e. does not implement it
    /// (distribution 2.8) and the client must use the tag schema (a "sha256-HEX" tag) instead.
    /// </summary>
    public Task<byte[]?> GetReferrersAsync(string subjectDigest, CancellationToken ct = default)
    {
        CheckDigest(subjectDigest);
        return WithRetriesAsync("get referrers " + subjectDigest, _o.Transport.Timeout, async t =>
        {
            using var resp = await SendAsync(() =>
            {
                var r = new HttpRequestMessage(HttpMethod.Get, $"v2/{_o.Repository}/referrers/{subjectDigest}");
                r.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(OciMediaTypes.ImageIndex));
                return r;
            }, _pullScope, t).ConfigureAwait(false);
            if (resp.StatusCode == HttpStatusCode.NotFound) return null;
            EnsureSuccess(resp, "GET referrers " + subjectDigest);
            return await _pipeline.ReadLimitedAsync(resp.Content, MaxManifestBytes, t).ConfigureAwait(false);
        }, ct);
    }

    /// <summary>Checks that the registry speaks /v2/ and that the credentials work for pulling (GET /v2/ plus the challenge flow).</summary>
    public Task PingAsync(CancellationToken ct = default) => WithRetriesAsync("ping", _o.Transport.Timeout, async t =>
    {
        using var resp = await SendAsync(() => new HttpRequestMessage(HttpMethod.Get, "v2/"), _pullScope, t).ConfigureAwait(false);
        EnsureSuccess(resp, "GET /v2/");
        return true;
    }, ct);


    private string BlobPath(string digest) => $"v2/{_o.Repository}/blobs/{digest}";

    private static void CheckDigest(string digest)
    {
        if (!OciDigest.IsValid(digest)) throw new ArgumentException($"'{digest}' is not a sha256 digest", nameof(digest));
    }

    private static void CheckReference(string reference)
    {
        if (!OciDigest.IsValid(reference) && !OciReference.IsValidTag(reference)) throw new ArgumentException($"bad tag or digest '{reference}'", nameof(reference));
    }
}
