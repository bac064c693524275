using System.Text.Json;

namespace VirtioFs.Oci;

/// <summary>Media types and annotations (OCI image-spec "media-types.md"; nydus "docs/nydus-design.md" and nydusify's
/// converter for the nydus ones).</summary>
public static class OciMediaTypes
{
    public const string ImageIndex = "application/vnd.oci.image.index.v1+json";
    public const string ImageManifest = "application/vnd.oci.image.manifest.v1+json";
    public const string ImageConfig = "application/vnd.oci.image.config.v1+json";
    public const string LayerTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    public const string DockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
    public const string DockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

    /// <summary>A nydus data blob stored as a layer: not a tar, read by range.</summary>
    public const string NydusBlob = "application/vnd.oci.image.layer.nydus.blob.v1";

    public const string AnnotationNydusBlob = "containerd.io/snapshot/nydus-blob";
    public const string AnnotationNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap";
    public const string AnnotationNydusFsVersion = "containerd.io/snapshot/nydus-fs-version";
    public const string AnnotationUncompressed = "containerd.io/uncompressed";

    /// <summary>The platform os.feature marking a nydus manifest in an index (so it can sit beside an OCI one).</summary>
    public const string NydusRemoteImageFeature = "nydus.remoteimage.v1";

    /// <summary>Path of the bootstrap inside the bootstrap layer's tar.</summary>
    public const string BootstrapTarPath = "image/image.boot";
}

/// <summary>An image platform (OCI image-spec "image-index.md").</summary>
public sealed record OciPlatform(string Os, string Architecture, string? Variant = null, IReadOnlyList<string>? OsFeatures = null)
{
    /// <summary>Parses <c>os/arch[/variant]</c>, e.g. <c>linux/amd64</c> or <c>linux/arm64/v8</c>.</summary>
    public static OciPlatform Parse(string s)
    {
        var p = s.Split('/');
        if (p.Length is < 2 or > 3 || p.Any(x => x.Length == 0 || x.Length > 64)) throw new FormatException($"platform '{s}' is not os/arch[/variant]");
        return new OciPlatform(p[0], p[1], p.Length == 3 ? p[2] : null);
    }

    public override string ToString() => $"{Os}/{Architecture}" + (Variant is null ? "" : "/" + Variant);
}

/// <summary>A content descriptor (OCI image-spec "descriptor.md").</summary>
public sealed record OciDescriptor(string MediaType, string Digest, long Size,
    IReadOnlyDictionary<string, string>? Annotations = null, OciPlatform? Platform = null)
{
    public string? Annotation(string key) => Annotations?.GetValueOrDefault(key);
}

/// <summary>An image manifest: a config and layers.</summary>
public sealed record OciManifest(string MediaType, OciDescriptor Config, IReadOnlyList<OciDescriptor> Layers,
    IReadOnlyDictionary<string, string>? Annotations = null);

/// <summary>An image index: manifests per platform.</summary>
/// <summary>An image index; <paramref name="Annotations"/> are the index's own (image-spec image-index.md "annotations").</summary>
public sealed record OciIndex(string MediaType, IReadOnlyList<OciDescriptor> Manifests, IReadOnlyDictionary<string, string>? Annotations = null);

/// <summary>Reads and writes the image JSON documents with <see cref="JsonDocument"/> and <see cref="Utf8JsonWriter"/>
/// (no reflection: the daemon is NativeAOT). Parsing is strict about types and caps counts; bad documents throw
/// <see cref="InvalidDataException"/>.</summary>
public static class OciJson
{
    private const int MaxEntries = 10_000;

    public static bool IsIndex(string mediaType) => mediaType is OciMediaTypes.ImageIndex or OciMediaTypes.DockerManifestList;
    public static bool IsManifest(string mediaType) => mediaType is OciMediaTypes.ImageManifest or OciMediaTypes.DockerManifest;

    /// <summary>The media type a document says it is (its mediaType field; "manifests" means an index).</summary>
    public static string SniffMediaType(byte[] body)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            var r = doc.RootElement;
            if (r.ValueKind == JsonValueKind.Object && r.TryGetProperty("mediaType", out var mt) && mt.ValueKind == JsonValueKind.String) return mt.GetString()!;
            if (r.ValueKind == JsonValueKind.Object && r.TryGetProperty("manifests", out _)) return OciMediaTypes.ImageIndex;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { }
        return OciMediaTypes.ImageManifest;
    }

    public static OciManifest ParseManifest(byte[] body) => Unicode("manifest", () =>
    {
        using var doc = Parse(body);
        var r = doc.RootElement;
        var config = Descriptor(Required(r, "config"));
        var layers = new List<OciDescriptor>();
        foreach (var l in Array(r, "layers")) layers.Add(Descriptor(l));
        return new OciManifest(OptionalString(r, "mediaType") ?? OciMediaTypes.ImageManifest, config, layers, Annotations(r));
    });

    public static OciIndex ParseIndex(byte[] body) => Unicode("index", () =>
    {
        using var doc = Parse(body);
        var r = doc.RootElement;
        var list = new List<OciDescriptor>();
        foreach (var m in Array(r, "manifests")) list.Add(Descriptor(m));
        return new OciIndex(OptionalString(r, "mediaType") ?? OciMediaTypes.ImageIndex, list, Annotations(r));
    });

    /// <summary>
    /// Runs a parse over a registry's document. JsonDocument checks the UTF-8 of a string or property name, and its
    /// escaped surrogate pairs, only when the string is read (GetString, Name), and then throws
    /// InvalidOperationException; such a document is as bad as one that is not JSON.
    /// </summary>
    internal static T Unicode<T>(string what, Func<T> parse)
    {
        try { return parse(); }
        catch (InvalidOperationException e) { throw new InvalidDataException($"{what} holds a string that is not valid Unicode: {e.Message}"); }
    }

    /// <summary>
    /// Picks the manifest for <paramref name="want"/> from an index: os and architecture must match, a variant when one
    /// is asked for; among matches one marked with <paramref name="preferFeature"/> in os.features wins (nydusify can
    /// put the nydus manifest beside the OCI one in the same index).
    /// </summary>
    public static OciDescriptor? SelectPlatform(OciIndex index, OciPlatform want, string? preferFeature = OciMediaTypes.NydusRemoteImageFeature)
    {
        OciDescriptor? best = null;
        foreach (var m in index.Manifests)
        {
            if (m.Platform is not { } p || p.Os != want.Os || p.Architecture != want.Architecture) continue;
            if (want.Variant is not null && p.Variant != want.Variant) continue;
            bool featured = preferFeature is not null && p.OsFeatures?.Contains(preferFeature) == true;
            if (featured) return m;
            best ??= m;
        }
        return best;
    }

    public static byte[] WriteManifest(OciManifest m) => Write(w =>
    {
        w.WriteNumber("schemaVersion", 2);
        w.WriteString("mediaType", m.MediaType);
        w.WritePropertyName("config");
        WriteDescriptor(w, m.Config);
        w.WriteStartArray("layers");
        foreach (var l in m.Layers) WriteDescriptor(w, l);
        w.WriteEndArray();
        WriteAnnotations(w, m.Annotations);
    });

    public static byte[] WriteIndex(OciIndex i) => Write(w =>
    {
        w.WriteNumber("schemaVersion", 2);
        w.WriteString("mediaType", i.MediaType);
        w.WriteStartArray("manifests");
        foreach (var m in i.Manifests) WriteDescriptor(w, m);
        w.WriteEndArray();
        WriteAnnotations(w, i.Annotations);
    });

    /// <summary>An image config (OCI image-spec "config.md") with the platform and the layers' diff ids.</summary>
    public static byte[] WriteConfig(OciPlatform platform, IReadOnlyList<string> diffIds, DateTimeOffset? created = null) => Write(w =>
    {
        if (created is { } c) w.WriteString("created", c.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture));
        w.WriteString("architecture", platform.Architecture);
        w.WriteString("os", platform.Os);
        if (platform.Variant is not null) w.WriteString("variant", platform.Variant);
        w.WriteStartObject("config");
        w.WriteEndObject();
        w.WriteStartObject("rootfs");
        w.WriteString("type", "layers");
        w.WriteStartArray("diff_ids");
        foreach (var d in diffIds) w.WriteStringValue(d);
        w.WriteEndArray();
        w.WriteEndObject();
    });

    private static byte[] Write(Action<Utf8JsonWriter> body)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = false }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static void WriteDescriptor(Utf8JsonWriter w, OciDescriptor d)
    {
        w.WriteStartObject();
        w.WriteString("mediaType", d.MediaType);
        w.WriteString("digest", d.Digest);
        w.WriteNumber("size", d.Size);
        WriteAnnotations(w, d.Annotations);
        if (d.Platform is { } p)
        {
            w.WriteStartObject("platform");
            w.WriteString("architecture", p.Architecture);
            w.WriteString("os", p.Os);
            if (p.Variant is not null) w.WriteString("variant", p.Variant);
            if (p.OsFeatures is { Count: > 0 } f)
            {
                w.WriteStartArray("os.features");
                foreach (var x in f) w.WriteStringValue(x);
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    private static void WriteAnnotations(Utf8JsonWriter w, IReadOnlyDictionary<string, string>? a)
    {
        if (a is not { Count: > 0 }) return;
        w.WriteStartObject("annotations");
        foreach (var kv in a.OrderBy(k => k.Key, StringComparer.Ordinal)) w.WriteString(kv.Key, kv.Value);
        w.WriteEndObject();
    }

    private static JsonDocument Parse(byte[] body) => ParseObject(body, "document", 16);

    /// <summary>Parses a JSON document whose root must be an object; anything else is <see cref="InvalidDataException"/>
    /// naming <paramref name="what"/>.</summary>
    internal static JsonDocument ParseObject(byte[] body, string what, int maxDepth)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = maxDepth }); }
        catch (JsonException e) { throw new InvalidDataException($"{what} is not JSON: {e.Message}"); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object) { doc.Dispose(); throw new InvalidDataException($"{what} is not a JSON object"); }
        return doc;
    }

    private static OciDescriptor Descriptor(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new InvalidDataException("descriptor is not an object");
        string mt = OptionalString(e, "mediaType") ?? throw new InvalidDataException("descriptor has no mediaType");
        string digest = OptionalString(e, "digest") ?? throw new InvalidDataException("descriptor has no digest");
        if (!OciDigest.IsValid(digest)) throw new InvalidDataException($"descriptor digest '{digest}' is not sha256:<64 hex>");
        if (!e.TryGetProperty("size", out var sz) || !sz.TryGetInt64(out long size) || size < 0) throw new InvalidDataException("descriptor has no valid size");
        OciPlatform? platform = null;
        if (e.TryGetProperty("platform", out var p) && p.ValueKind == JsonValueKind.Object)
        {
            List<string>? features = null;
            if (p.TryGetProperty("os.features", out var f) && f.ValueKind == JsonValueKind.Array)
            {
                features = new List<string>();
                foreach (var x in f.EnumerateArray())
                    if (x.ValueKind == JsonValueKind.String && features.Count < 64) features.Add(x.GetString()!);
            }
            platform = new OciPlatform(OptionalString(p, "os") ?? "", OptionalString(p, "architecture") ?? "", OptionalString(p, "variant"), features);
        }
        return new OciDescriptor(mt, digest, size, Annotations(e), platform);
    }

    private static Dictionary<string, string>? Annotations(JsonElement e)
    {
        if (!e.TryGetProperty("annotations", out var a) || a.ValueKind != JsonValueKind.Object) return null;
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in a.EnumerateObject())
        {
            if (d.Count >= MaxEntries) throw new InvalidDataException("too many annotations");
            if (p.Value.ValueKind == JsonValueKind.String) d[p.Name] = p.Value.GetString()!;
        }
        return d;
    }

    private static JsonElement Required(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) ? v : throw new InvalidDataException($"missing '{name}'");

    private static List<JsonElement> Array(JsonElement e, string name)
    {
        var v = Required(e, name);
        if (v.ValueKind != JsonValueKind.Array) throw new InvalidDataException($"'{name}' is not an array");
        if (v.GetArrayLength() > MaxEntries) throw new InvalidDataException($"'{name}' has more than {MaxEntries} entries");
        return v.EnumerateArray().ToList();
    }

    private static string? OptionalString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
