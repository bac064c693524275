using System.Globalization;
using System.Text.Json;

namespace VirtioFs.Oci;

/// <summary>What a converter needs from a source image config (OCI image-spec "config.md"): its platform, the
/// layers' diff ids (the sha256 of each uncompressed layer tar) and its creation time.</summary>
public sealed record OciImageConfigInfo(string Os, string Architecture, string? Variant, IReadOnlyList<string> DiffIds, DateTimeOffset? Created)
{
    public OciPlatform Platform => new(Os, Architecture, Variant);
}

/// <summary>
/// Reads a source image config and rewrites it for a nydus image the way nydusify's converter does
/// (contrib/nydusify/pkg/converter/manifest.go): every member of the source config is kept (config.Env, Entrypoint,
/// Cmd, WorkingDir, User, Labels, ExposedPorts, created, author, ...), <c>rootfs.diff_ids</c> is replaced by the nydus
/// layers' diff ids and <c>history</c> is dropped, since it describes layers the nydus image no longer has.
/// </summary>
public static class OciImageConfig
{
    /// <summary>Largest config accepted (the same bound distribution puts on manifests).</summary>
    public const int MaxConfigBytes = 4 << 20;

    private const int MaxDiffIds = 10_000;

    /// <summary>Parses the parts of a config a converter checks; throws <see cref="InvalidDataException"/> on a bad one.</summary>
    public static OciImageConfigInfo Parse(byte[] body) => OciJson.Unicode("image config", () =>
    {
        if (body.Length > MaxConfigBytes) throw new InvalidDataException($"image config of {body.Length} bytes exceeds {MaxConfigBytes}");
        using var doc = ParseObject(body);
        var r = doc.RootElement;
        string os = Str(r, "os") ?? throw new InvalidDataException("image config has no 'os'");
        string arch = Str(r, "architecture") ?? throw new InvalidDataException("image config has no 'architecture'");
        var diffIds = new List<string>();
        if (!r.TryGetProperty("rootfs", out var rootfs) || rootfs.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException("image config has no 'rootfs' object");
        if (!rootfs.TryGetProperty("diff_ids", out var ids) || ids.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException("image config has no 'rootfs.diff_ids' array");
        if (ids.GetArrayLength() > MaxDiffIds) throw new InvalidDataException($"image config lists more than {MaxDiffIds} diff ids");
        foreach (var id in ids.EnumerateArray())
        {
            string? s = id.ValueKind == JsonValueKind.String ? id.GetString() : null;
            if (s is null || !OciDigest.IsValid(s)) throw new InvalidDataException($"image config diff id '{id}' is not sha256:<64 hex>");
            diffIds.Add(s);
        }
        DateTimeOffset? created = null;
        if (Str(r, "created") is { } c && DateTimeOffset.TryParse(c, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t)) created = t;
        return new OciImageConfigInfo(os, arch, Str(r, "variant"), diffIds, created);
    });

    /// <summary>The nydus image's config: <paramref name="source"/> with <c>rootfs</c> = {type: layers, diff_ids:
    /// <paramref name="diffIds"/>} and without <c>history</c>; every other member is copied as is and in order.</summary>
    public static byte[] ForNydus(byte[] source, IReadOnlyList<string> diffIds) => OciJson.Unicode("image config", () =>
    {
        using var doc = ParseObject(source);
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            bool wroteRootfs = false;
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.NameEquals("history")) continue;
                if (p.NameEquals("rootfs"))
                {
                    WriteRootfs(w, diffIds);
                    wroteRootfs = true;
                    continue;
                }
                p.WriteTo(w);
            }
            if (!wroteRootfs) WriteRootfs(w, diffIds);
            w.WriteEndObject();
        }
        return ms.ToArray();
    });

    private static void WriteRootfs(Utf8JsonWriter w, IReadOnlyList<string> diffIds)
    {
        w.WriteStartObject("rootfs");
        w.WriteString("type", "layers");
        w.WriteStartArray("diff_ids");
        foreach (var d in diffIds) w.WriteStringValue(d);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static JsonDocument ParseObject(byte[] body) => OciJson.ParseObject(body, "image config", 32);

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
