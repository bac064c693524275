using System.Text.Json;
using VirtioFs.ImageTool.Registry;
using VirtioFs.Oci;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// A nydus image in a registry, for <c>vfs-image bom REF</c>: the manifest (picked from an index by platform), the
/// bootstrap (downloaded whole: it is the metadata) and its data blobs, read chunk by chunk with HTTP Range requests.
/// </summary>
public sealed class RemoteImage : IDisposable
{
    public required RegistryClient Client { get; init; }
    public required OciReference Reference { get; init; }
    /// <summary>The image manifest the BOM describes (and an attached BOM's subject).</summary>
    public required RegistryClient.FetchedManifest Manifest { get; init; }
    public required string BootstrapPath { get; init; }
    /// <summary>Bytes of the bootstrap layer as fetched (gzip'd tar).</summary>
    public required long BootstrapLayerBytes { get; init; }
    /// <summary>The image's size in the registry: the config, every layer and the manifest.</summary>
    public required long ImageBytes { get; init; }
    private string? _tempDir;

    /// <summary>Resolves <paramref name="reference"/> to an image manifest (an index's entry for <paramref name="platform"/>).</summary>
    public static RegistryClient.FetchedManifest ResolveManifest(RegistryClient client, OciReference reference, OciPlatform platform)
    {
        var fetched = RegistryCommands.Run(client.GetManifestAsync(reference.Reference));
        if (OciJson.IsIndex(fetched.MediaType))
        {
            var pick = OciJson.SelectPlatform(OciJson.ParseIndex(fetched.Body), platform)
                ?? throw new InvalidDataException($"{reference} has no manifest for {platform}");
            fetched = RegistryCommands.Run(client.GetManifestAsync(pick.Digest));
        }
        if (!OciJson.IsManifest(fetched.MediaType)) throw new InvalidDataException($"{reference}: unexpected media type {fetched.MediaType}");
        return fetched;
    }

    public static RemoteImage Open(RegistryClient client, OciReference reference, OciPlatform platform)
    {
        var fetched = ResolveManifest(client, reference, platform);
        var manifest = OciJson.ParseManifest(fetched.Body);
        var boot = NydusImage.FindBootstrap(manifest)
            ?? throw new InvalidDataException($"{reference} is not a nydus image: no layer is annotated {OciMediaTypes.AnnotationNydusBootstrap}");
        if (boot.Size is < 0 or > NydusImage.MaxBootstrapBytes) throw new InvalidDataException($"{reference}: bootstrap layer of {boot.Size} bytes");
        var dir = Path.Combine(Path.GetTempPath(), $"vfs-image-bom-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var path = Path.Combine(dir, "image.boot");
            using (var layer = new MemoryStream())
            {
                RegistryCommands.Run(client.DownloadBlobAsync(boot.Digest, layer, expectedSize: boot.Size));
                layer.Position = 0;
                using var f = File.Create(path);
                NydusImage.ExtractBootstrap(layer, f);
            }
            long size = manifest.Config.Size + fetched.Body.Length + manifest.Layers.Sum(l => Math.Max(0, l.Size));
            return new RemoteImage
            {
                Client = client, Reference = reference, Manifest = fetched, BootstrapPath = path, BootstrapLayerBytes = boot.Size, ImageBytes = size, _tempDir = dir,
            };
        }
        catch
        {
            Directory.Delete(dir, recursive: true);
            throw;
        }
    }


    public void Dispose()
    {
        if (_tempDir is not null && Directory.Exists(_tempDir)) Directory.Delete(_tempDir, recursive: true);
    }
}

/// <summary>Chunks read from a registry's blobs by HTTP Range (one compressed chunk per request), decompressed and
/// checked against the chunk digest in the bootstrap, so a registry cannot feed a cataloger other bytes.</summary>
public sealed class RemoteChunkSource(RafsImage image, RegistryClient client) : IChunkSource
{
    private long _read;
    public long BytesRead => Interlocked.Read(ref _read);
    public int Requests { get; private set; }

    public string? ReadChunk(in RafsChunk c, Span<byte> dst)
    {
        if (c.IsHole) { dst.Clear(); return null; }
        if (dst.Length != c.UncompressedSize) return "destination size mismatch";
        var blob = image.Blobs[(int)c.BlobIndex];
        if (blob.BlobId.Length != 64 || !OciDigest.IsLowerHex(blob.BlobId)) return $"blob id '{blob.BlobId}' is not a sha256 hex digest";
        if (c.CompressedSize > (16u << 20) + 65536) return $"chunk {c.ChunkIndex} of blob {blob.BlobId}: compressed size {c.CompressedSize} is too large";
        if (c.CompressedOffset > (ulong)(long.MaxValue - c.CompressedSize)) return $"chunk {c.ChunkIndex} of blob {blob.BlobId}: offset {c.CompressedOffset} out of range";
        var src = new byte[c.CompressedSize];
        RegistryCommands.Run(client.ReadBlobAsync("sha256:" + blob.BlobId, (long)c.CompressedOffset, src));
        Interlocked.Add(ref _read, src.Length);
        Requests++;
        if (c.IsCompressed)
        {
            if (!Codec.Decompress(c.Compressor, src, dst)) return $"chunk {c.ChunkIndex} of blob {blob.BlobId} does not decompress";
        }
        else
        {
            if (src.Length != dst.Length) return "uncompressed chunk size mismatch";
            src.CopyTo(dst);
        }
        Span<byte> d = stackalloc byte[Codec.DigestSize];
        Codec.Hash(blob.Digester, dst, d);
        var want = c.Digest;
        if (!d.SequenceEqual(want)) return $"chunk {c.ChunkIndex} of blob {blob.BlobId} has digest {Convert.ToHexStringLower(d)}, expected {want}";
        return null;
    }

    public void Dispose() { }
}
