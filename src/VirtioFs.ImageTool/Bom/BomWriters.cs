using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using VirtioFs.Rafs;

namespace VirtioFs.ImageTool.Bom;

/// <summary>Writes a <see cref="BomDocument"/> as SPDX 2.3 JSON or CycloneDX 1.5 JSON (Utf8JsonWriter: the tool is NativeAOT).</summary>
public static partial class BomWriters
{
    public const string SpdxMediaType = "application/spdx+json";
    public const string CycloneDxMediaType = "application/vnd.cyclonedx+json";

    /// <summary>A license string taken as an SPDX expression only when it looks like one (ids joined by AND/OR/WITH);
    /// free text ("BSD-like", "GPL v2 or later") becomes NOASSERTION rather than an invalid expression.</summary>
    [GeneratedRegex(@"^\(?[A-Za-z0-9.+-]+\)?( (AND|OR|WITH) \(?[A-Za-z0-9.+-]+\)?)*$")]
    private static partial Regex SpdxExpression();

    private static string SpdxLicense(string? l) => l is not null && SpdxExpression().IsMatch(l) ? l : "NOASSERTION";

    /// <summary>SPDX 2.3 checksum algorithm names (spdx-spec schemas, Checksum.algorithm) and CycloneDX 1.5 hash-alg.</summary>
    private static string SpdxAlgorithm(Digester d) => d == Digester.Sha256 ? "SHA256" : "BLAKE3";
    private static string CdxAlgorithm(Digester d) => d == Digester.Sha256 ? "SHA-256" : "BLAKE3";

    private static string Timestamp(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>A stable UUID from the image digest, so one image's document has one name (RFC 4122 v5-style layout).</summary>
    private static Guid StableUuid(string seed)
    {
        var h = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(seed));
        h[6] = (byte)((h[6] & 0x0f) | 0x50);
        h[8] = (byte)((h[8] & 0x3f) | 0x80);
        return new Guid(h.AsSpan(0, 16), bigEndian: true);
    }

    private static string DigestNote(BomDocument doc)
    {
        int fromBoot = doc.Files.Count(f => f.Digest.FromBootstrap);
        int notHeld = doc.Files.Count(f => f.Digest.Value is null);
        if (notHeld > 0)
        {
            return $"File hashes are digests of each file's content, taken from the RAFS bootstrap without reading data, for {fromBoot} of {doc.Files.Count} files "
                + $"(the whole-file digest its merkle row records, or stored as one chunk, or empty). The other {notHeld} files are stored as several chunks, of which the bootstrap holds only the chunk "
                + "digests: they carry no content hash, and the property vfs-image:chunk-digests lists their chunk digests in file order instead.";
        }
        return $"File checksums are digests of each file's content. {fromBoot} of {doc.Files.Count} come from the RAFS bootstrap without reading data "
            + "(the whole-file digest recorded at build time in the file's merkle row, which the image's merkle tree covers; in images without it, "
            + "a file stored as one chunk: the chunk digest is the digest of the whole file; an empty file: the digest of nothing); "
            + $"{doc.Files.Count - fromBoot} files of several chunks were read and hashed, because the bootstrap holds only digests of their chunks.";
    }

    public static void WriteSpdx(BomDocument doc, Stream output)
    {
        using var w = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("spdxVersion", "SPDX-2.3");
        w.WriteString("dataLicense", "CC0-1.0");
        w.WriteString("SPDXID", "SPDXRef-DOCUMENT");
        w.WriteString("name", doc.ImageName);
        w.WriteString("documentNamespace", $"https://virtiofs.invalid/spdx/{Purl.Encode(doc.ImageName)}-{StableUuid(doc.ImageDigest)}");
        w.WriteString("comment", DigestNote(doc));
        w.WriteStartObject("creationInfo");
        w.WriteString("created", Timestamp(doc.Created));
        w.WriteStartArray("creators");
        w.WriteStringValue($"Tool: vfs-image-{doc.ToolVersion}");
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteStartArray("documentDescribes");
        w.WriteStringValue("SPDXRef-Image");
        w.WriteEndArray();

        w.WriteStartArray("packages");
        w.WriteStartObject();
        w.WriteString("SPDXID", "SPDXRef-Image");
        w.WriteString("name", doc.ImageName);
        w.WriteString("downloadLocation", "NOASSERTION");
        w.WriteBoolean("filesAnalyzed", false);
        w.WriteString("primaryPackagePurpose", "CONTAINER");
        w.WriteString("comment", $"image {doc.ImageDigest}");
        w.WriteEndObject();
        for (int i = 0; i < doc.Packages.Count; i++)
        {
            var p = doc.Packages[i];
            w.WriteStartObject();
            w.WriteString("SPDXID", $"SPDXRef-Package-{p.Type}-{i + 1}");
            w.WriteString("name", p.Name);
            w.WriteString("versionInfo", p.Version);
            w.WriteString("downloadLocation", "NOASSERTION");
            w.WriteBoolean("filesAnalyzed", false);
            w.WriteString("licenseConcluded", "NOASSERTION");
            w.WriteString("licenseDeclared", SpdxLicense(p.License));
            w.WriteString("copyrightText", "NOASSERTION");
            w.WriteString("sourceInfo", $"found in {p.FoundIn}");
            w.WriteStartArray("externalRefs");
            w.WriteStartObject();
            w.WriteString("referenceCategory", "PACKAGE-MANAGER");
            w.WriteString("referenceType", "purl");
            w.WriteString("referenceLocator", p.Purl);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();

        var fileIds = new Dictionary<string, string>(StringComparer.Ordinal);
        w.WriteStartArray("files");
        for (int i = 0; i < doc.Files.Count; i++)
        {
            var (e, d) = doc.Files[i];
            string id = $"SPDXRef-File-{i + 1}";
            fileIds[e.Path] = id;
            w.WriteStartObject();
            w.WriteString("SPDXID", id);
            w.WriteString("fileName", "." + e.Path);
            w.WriteStartArray("checksums");
            w.WriteStartObject();
            w.WriteString("algorithm", SpdxAlgorithm(d.Algorithm));
            w.WriteString("checksumValue", Convert.ToHexStringLower(d.Value ?? throw new InvalidOperationException("SPDX needs every file's content digest")));
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteString("licenseConcluded", "NOASSERTION");
            w.WriteString("copyrightText", "NOASSERTION");
            w.WriteString("comment", $"size {e.Attr.Size}");
            w.WriteEndObject();
        }
        w.WriteEndArray();

        w.WriteStartArray("relationships");
        Relationship(w, "SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image");
        for (int i = 0; i < doc.Packages.Count; i++)
        {
            var p = doc.Packages[i];
            string pid = $"SPDXRef-Package-{p.Type}-{i + 1}";
            Relationship(w, "SPDXRef-Image", "CONTAINS", pid);
            foreach (var f in p.Files)
            {
                if (fileIds.TryGetValue(f, out var fid)) Relationship(w, pid, "CONTAINS", fid);
            }
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void Relationship(Utf8JsonWriter w, string from, string type, string to)
    {
        w.WriteStartObject();
        w.WriteString("spdxElementId", from);
        w.WriteString("relationshipType", type);
        w.WriteString("relatedSpdxElement", to);
        w.WriteEndObject();
    }

    /// <summary>CycloneDX 1.5: packages as library components; each regular file as a file component, nested under
    /// the first package whose database lists it (containment), else at the top level.</summary>
    public static void WriteCycloneDx(BomDocument doc, Stream output)
    {
        using var w = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("bomFormat", "CycloneDX");
        w.WriteString("specVersion", "1.5");
        w.WriteString("serialNumber", $"urn:uuid:{StableUuid(doc.ImageDigest)}");
        w.WriteNumber("version", 1);
        w.WriteStartObject("metadata");
        w.WriteString("timestamp", Timestamp(doc.Created));
        w.WriteStartObject("tools");
        w.WriteStartArray("components");
        w.WriteStartObject();
        w.WriteString("type", "application");
        w.WriteString("name", "vfs-image");
        w.WriteString("version", doc.ToolVersion);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteStartObject("component");
        w.WriteString("type", "container");
        w.WriteString("bom-ref", "image");
        w.WriteString("name", doc.ImageName);
        w.WriteString("description", $"image {doc.ImageDigest}");
        w.WriteEndObject();
        w.WriteStartArray("properties");
        Property(w, "vfs-image:file-digests", DigestNote(doc));
        w.WriteEndArray();
        w.WriteEndObject();

        var owner = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < doc.Packages.Count; i++)
        {
            foreach (var f in doc.Packages[i].Files) owner.TryAdd(f, i);
        }
        var nested = new List<(ImageEntry, FileDigest, int)>[doc.Packages.Count];
        var top = new List<(ImageEntry, FileDigest, int)>();
        for (int i = 0; i < doc.Files.Count; i++)
        {
            var (e, d) = doc.Files[i];
            if (owner.TryGetValue(e.Path, out int p)) (nested[p] ??= new()).Add((e, d, i));
            else top.Add((e, d, i));
        }
        w.WriteStartArray("components");
        for (int i = 0; i < doc.Packages.Count; i++)
        {
            var p = doc.Packages[i];
            w.WriteStartObject();
            w.WriteString("type", "library");
            w.WriteString("bom-ref", $"pkg-{i + 1}");
            w.WriteString("name", p.Name);
            w.WriteString("version", p.Version);
            w.WriteString("purl", p.Purl);
            if (p.License is { Length: > 0 })
            {
                w.WriteStartArray("licenses");
                w.WriteStartObject();
                w.WriteStartObject("license");
                w.WriteString("name", p.License);
                w.WriteEndObject();
                w.WriteEndObject();
                w.WriteEndArray();
            }
            w.WriteStartArray("properties");
            Property(w, "vfs-image:found-in", p.FoundIn);
            w.WriteEndArray();
            if (nested[i] is { } files)
            {
                w.WriteStartArray("components");
                foreach (var f in files) CdxFile(w, f);
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        foreach (var f in top) CdxFile(w, f);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void CdxFile(Utf8JsonWriter w, (ImageEntry Entry, FileDigest Digest, int Index) f)
    {
        w.WriteStartObject();
        w.WriteString("type", "file");
        w.WriteString("bom-ref", $"file-{f.Index + 1}");
        w.WriteString("name", f.Entry.Path);
        if (f.Digest.Value is { } value)
        {
            w.WriteStartArray("hashes");
            w.WriteStartObject();
            w.WriteString("alg", CdxAlgorithm(f.Digest.Algorithm));
            w.WriteString("content", Convert.ToHexStringLower(value));
            w.WriteEndObject();
            w.WriteEndArray();
        }
        w.WriteStartArray("properties");
        Property(w, "vfs-image:size", f.Entry.Attr.Size.ToString(CultureInfo.InvariantCulture));
        if (f.Digest.ChunkDigests is { } chunks)
        {
            // Not a content digest: the digests of the file's chunks in order, each over that chunk's bytes.
            Property(w, "vfs-image:chunk-digests", $"{Codec.Name(f.Digest.Algorithm)}:" + string.Join(",", chunks.Select(Convert.ToHexStringLower)));
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void Property(Utf8JsonWriter w, string name, string value)
    {
        w.WriteStartObject();
        w.WriteString("name", name);
        w.WriteString("value", value);
        w.WriteEndObject();
    }
}
