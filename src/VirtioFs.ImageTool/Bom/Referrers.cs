using System.Text.Json;
using VirtioFs.ImageTool.Registry;
using VirtioFs.Oci;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// A BOM attached to an image as an OCI 1.1 referrer (image-spec manifest.md "subject", "artifactType";
/// distribution-spec "Listing Referrers" and "Referrers Tag Schema"): an image manifest whose artifactType is the
/// document's media type, whose config is the empty descriptor, whose one layer is the document and whose subject is
/// the image manifest. A registry with the Referrers API indexes it itself; for one without (distribution 2.8 answers
/// 404), the client keeps an image index of the referrers under the tag "sha256-HEX" of the subject's digest.
/// </summary>
public static class Referrers
{
    /// <summary>The empty JSON object "{}" (image-spec manifest.md "Guidance for an Empty Descriptor").</summary>
    public const string EmptyMediaType = "application/vnd.oci.empty.v1+json";
    private static readonly byte[] EmptyConfig = "{}"u8.ToArray();
    private const long MaxDocumentBytes = 512L << 20;

    public sealed record Attached(string ManifestDigest, string Via);

    /// <summary>The fallback tag for a subject digest: "ALG-HEX" (distribution-spec "Referrers Tag Schema").</summary>
    public static string FallbackTag(string subjectDigest) => subjectDigest.Replace(':', '-');

    public static Attached Attach(RegistryClient client, RegistryClient.FetchedManifest subject, byte[] document, string artifactType, DateTimeOffset created)
    {
        string docDigest = OciDigest.Sha256(document), emptyDigest = OciDigest.Sha256(EmptyConfig);
        RegistryCommands.Run(client.PushBlobAsync(emptyDigest, EmptyConfig.Length, () => new MemoryStream(EmptyConfig, writable: false)));
        RegistryCommands.Run(client.PushBlobAsync(docDigest, document.Length, () => new MemoryStream(document, writable: false)));
        string createdText = created.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
        var manifest = Json(w =>
        {
            w.WriteNumber("schemaVersion", 2);
            w.WriteString("mediaType", OciMediaTypes.ImageManifest);
            w.WriteString("artifactType", artifactType);
            w.WriteStartObject("config");
            w.WriteString("mediaType", EmptyMediaType);
            w.WriteString("digest", emptyDigest);
            w.WriteNumber("size", EmptyConfig.Length);
            w.WriteString("data", Convert.ToBase64String(EmptyConfig));
            w.WriteEndObject();
            w.WriteStartArray("layers");
            w.WriteStartObject();
            w.WriteString("mediaType", artifactType);
            w.WriteString("digest", docDigest);
            w.WriteNumber("size", document.Length);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteStartObject("subject");
            w.WriteString("mediaType", subject.MediaType);
            w.WriteString("digest", subject.Digest);
            w.WriteNumber("size", subject.Body.Length);
            w.WriteEndObject();
            w.WriteStartObject("annotations");
            w.WriteString("org.opencontainers.image.created", createdText);
            w.WriteEndObject();
        });
        string manifestDigest = RegistryCommands.Run(client.PutManifestAsync(OciDigest.Sha256(manifest), OciMediaTypes.ImageManifest, manifest));

        // A registry with the Referrers API lists the new manifest itself; otherwise update the fallback tag's index.
        if (RegistryCommands.Run(client.ListReferrersAsync(subject.Digest)) is { } listed)
        {
            if (!listed.Pages.SelectMany(List).Any(d => d.Digest == manifestDigest))
                throw new IOException($"the registry has a referrers API but does not list {manifestDigest} for {subject.Digest}");
            return new Attached(manifestDigest, "referrers API");
        }
        var tag = FallbackTag(subject.Digest);
        var entries = new List<Descriptor>();
        try
        {
            var existing = RegistryCommands.Run(client.GetManifestAsync(tag));
            entries.AddRange(List(existing.Body));
        }
        catch (IOException e) when (e.InnerException is RegistryException { IsNotFound: true }) { }
        entries.RemoveAll(d => d.Digest == manifestDigest);
        entries.Add(new Descriptor(OciMediaTypes.ImageManifest, manifestDigest, manifest.Length, artifactType,
            new Dictionary<string, string> { ["org.opencontainers.image.created"] = createdText }));
        var index = Json(w =>
        {
            w.WriteNumber("schemaVersion", 2);
            w.WriteString("mediaType", OciMediaTypes.ImageIndex);
            w.WriteStartArray("manifests");
            foreach (var d in entries)
            {
                w.WriteStartObject();
                w.WriteString("mediaType", d.MediaType);
                w.WriteString("digest", d.Digest);
                w.WriteNumber("size", d.Size);
                if (d.ArtifactType is not null) w.WriteString("artifactType", d.ArtifactType);
                if (d.Annotations is { Count: > 0 })
                {
                    w.WriteStartObject("annotations");
                    foreach (var (k, v) in d.Annotations) w.WriteString(k, v);
                    w.WriteEndObject();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
        });
        RegistryCommands.Run(client.PutManifestAsync(tag, OciMediaTypes.ImageIndex, index));
        return new Attached(manifestDigest, $"tag {tag}");
    }

    /// <summary>The newest attached document of one of <paramref name="artifactTypes"/> (in order of preference), or null.</summary>
    public static (byte[] Document, string ArtifactType, string ManifestDigest)? Find(RegistryClient client, string subjectDigest, string[] artifactTypes)
    {
        List<Descriptor>? fallback = null;
        foreach (var type in artifactTypes)
        {
            // The Referrers API, asked to filter by type (end-12b). A registry that did not filter leaves out
            // OCI-Filters-Applied, and one that did may still be wrong: the type is checked below either way.
            List<Descriptor> list;
            if (fallback is null && RegistryCommands.Run(client.ListReferrersAsync(subjectDigest, type)) is { } api)
                list = [.. api.Pages.SelectMany(List)];
            else
            {
                try { list = fallback ??= List(RegistryCommands.Run(client.GetManifestAsync(FallbackTag(subjectDigest))).Body); }
                catch (IOException e) when (e.InnerException is RegistryException { IsNotFound: true }) { return null; }
            }
            // Newest first: the created annotation, else the index order (the fallback index appends).
            var pick = list.Select((d, i) => (d, i)).Where(x => x.d.ArtifactType == type)
                .OrderByDescending(x => x.d.Annotations?.GetValueOrDefault("org.opencontainers.image.created") ?? "", StringComparer.Ordinal).ThenByDescending(x => x.i)
                .Select(x => x.d).FirstOrDefault();
            if (pick is null) continue;
            var m = RegistryCommands.Run(client.GetManifestAsync(pick.Digest));
            using var doc = JsonDocument.Parse(m.Body);
            if (!doc.RootElement.TryGetProperty("layers", out var layers) || layers.ValueKind != JsonValueKind.Array || layers.GetArrayLength() != 1)
                throw new InvalidDataException($"referrer {pick.Digest} does not hold one document layer");
            var layer = layers[0];
            string digest = layer.GetProperty("digest").GetString() ?? throw new InvalidDataException("layer without digest");
            long size = layer.GetProperty("size").GetInt64();
            if (size is < 0 or > MaxDocumentBytes) throw new InvalidDataException($"referrer {pick.Digest}: document of {size} bytes");
            using var ms = new MemoryStream();
            RegistryCommands.Run(client.DownloadBlobAsync(digest, ms, expectedSize: size));
            return (ms.ToArray(), type, pick.Digest);
        }
        return null;
    }

    public sealed record Descriptor(string MediaType, string Digest, long Size, string? ArtifactType, IReadOnlyDictionary<string, string>? Annotations);

    /// <summary>The manifests of a referrers index (the API's answer or the fallback tag's index).</summary>
    public static List<Descriptor> List(byte[] index)
    {
        try
        {
            using var doc = JsonDocument.Parse(index);
            var result = new List<Descriptor>();
            if (!doc.RootElement.TryGetProperty("manifests", out var ms) || ms.ValueKind != JsonValueKind.Array) return result;
            foreach (var m in ms.EnumerateArray())
            {
                if (m.ValueKind != JsonValueKind.Object) continue;
                string? S(string n) => m.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
                if (S("digest") is not { } digest || S("mediaType") is not { } mt || !m.TryGetProperty("size", out var sz) || !sz.TryGetInt64(out long size)) continue;
                Dictionary<string, string>? ann = null;
                if (m.TryGetProperty("annotations", out var a) && a.ValueKind == JsonValueKind.Object)
                    ann = a.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.String).ToDictionary(p => p.Name, p => p.Value.GetString()!);
                result.Add(new Descriptor(mt, digest, size, S("artifactType"), ann));
            }
            return result;
        }
        catch (JsonException e) { throw new InvalidDataException($"referrers index: {e.Message}"); }
    }

    private static byte[] Json(Action<Utf8JsonWriter> body)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }
}
