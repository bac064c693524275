using System.Net;
using System.Net.Http.Headers;

namespace VirtioFs.Oci;

// The OCI 1.1 Referrers API with its filter and its pages (distribution-spec v1.1 "Listing Referrers", end-12a/end-12b).
public sealed partial class RegistryClient
{
    private const int MaxReferrerPages = 64;

    /// <summary>
    /// The referrers of <paramref name="subjectDigest"/>: every page's image index, or null when the registry answers
    /// 404 (no Referrers API: the caller uses the tag schema). With <paramref name="artifactType"/> the registry is asked
    /// to filter (<c>?artifactType=</c>, end-12b); it SHOULD, and says it did with <c>OCI-Filters-Applied: artifactType</c>
    /// (<see cref="ReferrersAnswer.FilterApplied"/>); without that header the list is unfiltered and the caller must
    /// filter itself. A <c>Link: &lt;URL&gt;; rel="next"</c> header (RFC 5988) names the next page; it is followed on the same
    /// registry only, up to 64 pages.
    /// </summary>
    public async Task<ReferrersAnswer?> ListReferrersAsync(string subjectDigest, string? artifactType = null, CancellationToken ct = default)
    {
        CheckDigest(subjectDigest);
        string? path = $"v2/{_o.Repository}/referrers/{subjectDigest}" + (artifactType is null ? "" : "?artifactType=" + Uri.EscapeDataString(artifactType));
        var pages = new List<byte[]>();
        bool filtered = artifactType is not null;
        for (int page = 0; path is not null; page++)
        {
            if (page >= MaxReferrerPages) throw new RegistryException($"referrers of {subjectDigest}: more than {MaxReferrerPages} pages", 0, transient: false);
            string current = path;
            var (body, applied, next) = await WithRetriesAsync("get referrers " + subjectDigest, _o.Transport.Timeout, async t =>
            {
                using var resp = await SendAsync(() =>
                {
                    var r = new HttpRequestMessage(HttpMethod.Get, current);
                    r.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(OciMediaTypes.ImageIndex));
                    return r;
                }, _pullScope, t).ConfigureAwait(false);
                if (resp.StatusCode == HttpStatusCode.NotFound && page == 0) return ((byte[]?)null, false, (string?)null);
                EnsureSuccess(resp, "GET referrers " + subjectDigest);
                bool applies = resp.Headers.TryGetValues("OCI-Filters-Applied", out var values)
                    && values.SelectMany(v => v.Split(',')).Any(v => v.Trim() == "artifactType");
                var bytes = await _pipeline.ReadLimitedAsync(resp.Content, MaxManifestBytes, t).ConfigureAwait(false);
                return (bytes, applies, NextPage(resp));
            }, ct).ConfigureAwait(false);
            if (body is null) return null;
            pages.Add(body);
            filtered &= applied; // one unfiltered page makes the whole answer unfiltered
            path = next;
        }
        return new ReferrersAnswer(pages, filtered);
    }

    /// <summary>The path of the <c>rel="next"</c> link, resolved against this registry; null when there is none. A link
    /// to another host is refused: the credentials of this registry must not follow it.</summary>
    private string? NextPage(HttpResponseMessage resp)
    {
        if (!resp.Headers.TryGetValues("Link", out var links)) return null;
        foreach (var link in links.SelectMany(l => l.Split(',')))
        {
            int open = link.IndexOf('<', StringComparison.Ordinal), close = link.IndexOf('>', StringComparison.Ordinal);
            if (open < 0 || close < open || !link[(close + 1)..].Replace(" ", "", StringComparison.Ordinal).Contains("rel=\"next\"", StringComparison.Ordinal)) continue;
            var request = resp.RequestMessage?.RequestUri ?? _base;
            if (!Uri.TryCreate(request, link[(open + 1)..close], out var next))
                throw new RegistryException($"referrers: bad Link '{link.Trim()}'", 0, transient: false);
            if (next.Scheme != _base.Scheme || next.Authority != _base.Authority)
                throw new RegistryException($"referrers: the next page {next} is on another registry", 0, transient: false);
            return next.PathAndQuery.TrimStart('/');
        }
        return null;
    }

    /// <summary>What <see cref="ListReferrersAsync"/> got: each page's image index, and whether the registry applied the artifactType filter to all of them.</summary>
    public sealed record ReferrersAnswer(IReadOnlyList<byte[]> Pages, bool FilterApplied);
}
