using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;

namespace VirtioFs.Oci;

/// <summary>
/// How a nydus image sits in a registry, as nydusify's converter writes it: every data blob is a layer of media type
/// <c>application/vnd.oci.image.layer.nydus.blob.v1</c> annotated <c>containerd.io/snapshot/nydus-blob: "true"</c>,
/// and the bootstrap is the last layer, a gzip'd tar holding <c>image/image.boot</c>, annotated
/// <c>containerd.io/snapshot/nydus-bootstrap: "true"</c> (plus the RAFS version). The config's diff_ids are the
/// blob digests (a nydus blob is not compressed as a whole) and the bootstrap tar's digest. The index entry's
/// platform carries <c>os.features: ["nydus.remoteimage.v1"]</c>.
/// </summary>
public static class NydusImage
{
    /// <summary>Largest bootstrap accepted from a registry (a bootstrap is metadata: a million files is ~200 MiB).</summary>
    public const long MaxBootstrapBytes = 1L << 30;

    /// <summary>A built bootstrap layer: the gzip'd tar, its digest and the digest of the tar (the diff id).</summary>
    public sealed record BootstrapLayer(byte[] Compressed, string Digest, string DiffId);

    /// <summary>Packs a bootstrap into its layer. Deterministic: fixed mtime, owner and mode, so pushing the same
    /// image twice gives the same digest (and the registry dedups it).</summary>
    public static BootstrapLayer CreateBootstrapLayer(string bootstrapPath)
    {
        var tar = new MemoryStream();
        using (var w = new TarWriter(tar, TarEntryFormat.Pax, leaveOpen: true))
        {
            var dir = new PaxTarEntry(TarEntryType.Directory, "image/")
            {
                Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute,
                ModificationTime = DateTimeOffset.UnixEpoch,
            };
            w.WriteEntry(dir);
            using var data = File.OpenRead(bootstrapPath);
            var e = new PaxTarEntry(TarEntryType.RegularFile, OciMediaTypes.BootstrapTarPath)
            {
                Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
                ModificationTime = DateTimeOffset.UnixEpoch,
                DataStream = data,
            };
            w.WriteEntry(e);
        }
        tar.Position = 0;
        string diffId = "sha256:" + Convert.ToHexStringLower(SHA256.HashData(tar));
        tar.Position = 0;
        var gz = new MemoryStream();
        using (var z = new GZipStream(gz, CompressionLevel.Optimal, leaveOpen: true)) tar.CopyTo(z);
        var bytes = gz.ToArray();
        return new BootstrapLayer(bytes, OciDigest.Sha256(bytes), diffId);
    }

    /// <summary>Finds <c>image/image.boot</c> in a bootstrap layer (gzip'd tar) and copies it to <paramref name="output"/>;
    /// refuses a bootstrap larger than <see cref="MaxBootstrapBytes"/>.</summary>
    public static void ExtractBootstrap(Stream layer, Stream output)
    {
        using var gz = new GZipStream(layer, CompressionMode.Decompress, leaveOpen: true);
        using var r = new TarReader(gz, leaveOpen: false);
        TarEntry? e;
        try
        {
            while ((e = r.GetNextEntry()) is not null)
            {
                string name = e.Name.TrimStart('.', '/');
                if (name != OciMediaTypes.BootstrapTarPath || e.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                if (e.Length > MaxBootstrapBytes) throw new InvalidDataException($"bootstrap of {e.Length} bytes exceeds {MaxBootstrapBytes}");
                if (e.DataStream is null) throw new InvalidDataException("bootstrap entry has no data");
                e.DataStream.CopyTo(output);
                return;
            }
        }
        catch (Exception ex) when (ex is FormatException or EndOfStreamException) { throw new InvalidDataException($"bootstrap layer is not a tar: {ex.Message}"); }
        throw new InvalidDataException($"bootstrap layer has no {OciMediaTypes.BootstrapTarPath}");
    }

    /// <summary>Layer descriptor of one data blob (<paramref name="blobId"/> is the blob's sha256 hex, as RAFS names blobs).</summary>
    public static OciDescriptor BlobLayer(string blobId, long size) =>
        new(OciMediaTypes.NydusBlob, "sha256:" + blobId, size, new Dictionary<string, string> { [OciMediaTypes.AnnotationNydusBlob] = "true" });

    public static OciDescriptor BootstrapDescriptor(BootstrapLayer b, int fsVersion) =>
        new(OciMediaTypes.LayerTarGzip, b.Digest, b.Compressed.Length, new Dictionary<string, string>
        {
            [OciMediaTypes.AnnotationNydusBootstrap] = "true",
            [OciMediaTypes.AnnotationNydusFsVersion] = fsVersion.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [OciMediaTypes.AnnotationUncompressed] = b.DiffId,
        });

    /// <summary>The bootstrap layer of a nydus manifest: the layer annotated nydus-bootstrap (the last one, by convention).</summary>
    public static OciDescriptor? FindBootstrap(OciManifest m)
    {
        for (int i = m.Layers.Count - 1; i >= 0; i--)
            if (m.Layers[i].Annotation(OciMediaTypes.AnnotationNydusBootstrap) == "true") return m.Layers[i];
        return null;
    }

    /// <summary>The data blob layers of a nydus manifest.</summary>
    public static IEnumerable<OciDescriptor> FindBlobs(OciManifest m) =>
        m.Layers.Where(l => l.MediaType == OciMediaTypes.NydusBlob || l.Annotation(OciMediaTypes.AnnotationNydusBlob) == "true");

    /// <summary>Platform of a nydus manifest in an index.</summary>
    public static OciPlatform NydusPlatform(OciPlatform p) => p with { OsFeatures = [OciMediaTypes.NydusRemoteImageFeature] };
}
