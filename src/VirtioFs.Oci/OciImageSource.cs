using System.Security.Cryptography;

namespace VirtioFs.Oci;

/// <summary>How a layer's tar is compressed, from its media type (OCI image-spec "media-types.md", "layer.md").</summary>
public enum LayerCompression { None, Gzip, Zstd }

/// <summary>An OCI image resolved for one platform: its manifest, the raw config and what the config says.</summary>
public sealed record ResolvedImage(string ManifestDigest, OciManifest Manifest, byte[] Config, OciImageConfigInfo ConfigInfo);

/// <summary>
/// Where an OCI image to convert comes from: a registry (<see cref="FromRegistry"/>) or an OCI image layout directory
/// (<see cref="FromLayout"/>; image-spec "image-layout.md": oci-layout, index.json, blobs/sha256/HEX). Both hand out
/// only verified content: every manifest, config and layer is checked against its descriptor's digest and size, and
/// sizes are capped before anything is read, so a hostile source gives an <see cref="InvalidDataException"/> (or a
/// registry error), never an unbounded allocation.
/// </summary>
public abstract class OciImageSource : IDisposable
{
    /// <summary>Most layers an image may have (overlayfs stacks at most 128 in practice; this leaves room).</summary>
    public const int MaxLayers = 512;

    /// <summary>Largest (compressed) layer accepted.</summary>
    public const long MaxLayerBytes = 32L << 30;

    /// <summary>Largest manifest or index accepted (distribution refuses manifests over 4 MiB too).</summary>
    public const int MaxManifestBytes = 4 << 20;

    private const int MaxIndexDepth = 4;

    /// <summary>For messages: the reference or directory.</summary>
    public abstract string Name { get; }

    /// <summary>The top document: the tag's manifest or index, or a layout's index.json.</summary>
    protected abstract Task<(string MediaType, byte[] Body, string Digest)> ReadRootAsync(CancellationToken ct);

    /// <summary>A manifest, index or config named by <paramref name="d"/>, digest-checked, at most <paramref name="cap"/> bytes.</summary>
    protected abstract Task<byte[]> ReadDocumentAsync(OciDescriptor d, int cap, bool isManifest, CancellationToken ct);

    /// <summary>
    /// A layer's bytes as stored (still compressed), verified against <paramref name="d"/>'s digest and size before it
    /// is returned, positioned at 0. A registry layer is downloaded to a file in <paramref name="workDir"/> that is
    /// deleted when the stream is disposed.
    /// </summary>
    public abstract Task<Stream> OpenBlobAsync(OciDescriptor d, string workDir, IProgress<long>? progress = null, CancellationToken ct = default);

    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>The top document as <see cref="ReadRootAsync"/> reads it (vfs-image convert --platform all lists its entries).</summary>
    public Task<(string MediaType, byte[] Body, string Digest)> ReadRootDocumentAsync(CancellationToken ct = default) => ReadRootAsync(ct);

    /// <summary>A manifest or index an index entry names, digest-checked and capped (convert copies the entries it keeps).</summary>
    public Task<byte[]> ReadManifestAsync(OciDescriptor d, CancellationToken ct = default) => ReadDocumentAsync(d, MaxManifestBytes, isManifest: true, ct);

    public static OciImageSource FromRegistry(RegistryClient client, OciReference reference, bool ownsClient = false) =>
        new RegistrySource(client, reference, ownsClient);

    public static OciImageSource FromLayout(string dir) => new LayoutSource(dir);

    /// <summary>True when <paramref name="path"/> is an OCI image layout directory (it has oci-layout and index.json).</summary>
    public static bool IsLayout(string path) =>
        Directory.Exists(path) && File.Exists(Path.Combine(path, "oci-layout")) && File.Exists(Path.Combine(path, "index.json"));

    /// <summary>Classifies a layer media type; false for anything that is not a (possibly compressed) tar layer.</summary>
    public static bool TryGetLayerCompression(string mediaType, out LayerCompression compression)
    {
        compression = mediaType switch
        {
            "application/vnd.oci.image.layer.v1.tar" or "application/vnd.oci.image.layer.nondistributable.v1.tar"
                or "application/vnd.docker.image.rootfs.diff.tar" => LayerCompression.None,
            "application/vnd.oci.image.layer.v1.tar+gzip" or "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                or "application/vnd.docker.image.rootfs.diff.tar.gzip" or "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => LayerCompression.Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd" or "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => LayerCompression.Zstd,
            _ => (LayerCompression)(-1),
        };
        return (int)compression >= 0;
    }

    /// <summary>
    /// Resolves the image for <paramref name="want"/>: an index (nested up to 4 deep) is narrowed to the entry whose
    /// platform matches (entries marked as nydus manifests are skipped: they are conversion outputs, not inputs; a
    /// lone entry without a platform is taken as is), then the manifest and config are read and checked: the image
    /// must not already be a nydus image, every layer must be a tar layer within the caps, and the config must list
    /// one diff id per layer.
    /// </summary>
    public async Task<ResolvedImage> ResolveAsync(OciPlatform want, CancellationToken ct = default)
    {
        var (mediaType, body, digest) = await ReadRootAsync(ct).ConfigureAwait(false);
        for (int depth = 0; OciJson.IsIndex(mediaType); depth++)
        {
            if (depth >= MaxIndexDepth) throw new InvalidDataException($"{Name}: image indexes nested deeper than {MaxIndexDepth}");
            var index = OciJson.ParseIndex(body);
            var pick = SelectPlatform(index, want, out bool nydusOnly) ?? throw new InvalidDataException(nydusOnly
                ? $"{Name} is already a nydus image for {want}"
                : $"{Name} has no image for {want} (it has: {string.Join(", ", index.Manifests.Select(m => m.Platform?.ToString() ?? "no platform"))})");
            if (pick.Size > MaxManifestBytes) throw new InvalidDataException($"{Name}: manifest {pick.Digest} of {pick.Size} bytes exceeds {MaxManifestBytes}");
            body = await ReadDocumentAsync(pick, MaxManifestBytes, isManifest: true, ct).ConfigureAwait(false);
            if (body.LongLength != pick.Size) throw new InvalidDataException($"{Name}: manifest {pick.Digest} is {body.Length} bytes, its descriptor says {pick.Size}");
            mediaType = pick.MediaType;
            digest = pick.Digest;
        }
        if (!OciJson.IsManifest(mediaType)) throw new InvalidDataException($"{Name}: {digest} has media type '{mediaType}', not an image manifest or index");
        var manifest = OciJson.ParseManifest(body);
        if (NydusImage.FindBootstrap(manifest) is not null || NydusImage.FindBlobs(manifest).Any())
            throw new InvalidDataException($"{Name} is already a nydus image");
        if (manifest.Layers.Count > MaxLayers) throw new InvalidDataException($"{Name} has {manifest.Layers.Count} layers, more than {MaxLayers}");
        foreach (var l in manifest.Layers)
        {
            if (!TryGetLayerCompression(l.MediaType, out _)) throw new InvalidDataException($"{Name}: layer {l.Digest} has unsupported media type '{l.MediaType}'");
            if (l.Size > MaxLayerBytes) throw new InvalidDataException($"{Name}: layer {l.Digest} of {l.Size} bytes exceeds {MaxLayerBytes}");
        }
        if (manifest.Config.Size > OciImageConfig.MaxConfigBytes)
            throw new InvalidDataException($"{Name}: config of {manifest.Config.Size} bytes exceeds {OciImageConfig.MaxConfigBytes}");
        var config = await ReadDocumentAsync(manifest.Config, OciImageConfig.MaxConfigBytes, isManifest: false, ct).ConfigureAwait(false);
        var info = OciImageConfig.Parse(config);
        if (info.DiffIds.Count != manifest.Layers.Count)
            throw new InvalidDataException($"{Name}: config lists {info.DiffIds.Count} diff ids for {manifest.Layers.Count} layers");
        return new ResolvedImage(digest, manifest, config, info);
    }

    private static OciDescriptor? SelectPlatform(OciIndex index, OciPlatform want, out bool nydusOnly)
    {
        nydusOnly = false;
        foreach (var m in index.Manifests)
        {
            if (m.Platform is not { } p || p.Os != want.Os || p.Architecture != want.Architecture) continue;
            if (want.Variant is not null && p.Variant != want.Variant) continue;
            if (p.OsFeatures?.Contains(OciMediaTypes.NydusRemoteImageFeature) == true) { nydusOnly = true; continue; }
            return m;
        }
        // A single-image layout (as umoci or `skopeo copy oci:` write it) often has no platform in index.json.
        return index.Manifests is [{ Platform: null } lone] ? lone : null;
    }

    private static void CheckDigest(OciDescriptor d, ReadOnlySpan<byte> body, string where)
    {
        string got = OciDigest.Sha256(body);
        if (got != d.Digest) throw new InvalidDataException($"{where}: {d.Digest} has digest {got}: corrupt or tampered content");
    }

    // ------------------------------------------------------------------ registry

    private sealed class RegistrySource(RegistryClient client, OciReference reference, bool ownsClient) : OciImageSource
    {
        public override string Name => reference.ToString();

        protected override async Task<(string, byte[], string)> ReadRootAsync(CancellationToken ct)
        {
            var m = await client.GetManifestAsync(reference.Reference, ct).ConfigureAwait(false);
            return (m.MediaType, m.Body, m.Digest);
        }

        protected override async Task<byte[]> ReadDocumentAsync(OciDescriptor d, int cap, bool isManifest, CancellationToken ct)
        {
            if (isManifest)
            {
                // GetManifestAsync caps the body and checks it against the digest it was asked for.
                var m = await client.GetManifestAsync(d.Digest, ct).ConfigureAwait(false);
                return m.Body;
            }
            using var ms = new MemoryStream();
            using var capped = new CappedStream(ms, Math.Min(d.Size, cap), d.Digest);
            await client.DownloadBlobAsync(d.Digest, capped, null, ct).ConfigureAwait(false);
            if (ms.Length != d.Size) throw new InvalidDataException($"{Name}: blob {d.Digest} is {ms.Length} bytes, its descriptor says {d.Size}");
            return ms.ToArray();
        }

        public override async Task<Stream> OpenBlobAsync(OciDescriptor d, string workDir, IProgress<long>? progress, CancellationToken ct)
        {
            string path = Path.Combine(workDir, $"layer-{d.Digest[7..19]}-{Guid.NewGuid():N}");
            var f = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.DeleteOnClose | FileOptions.Asynchronous);
            try
            {
                // DownloadBlobAsync hashes while it streams and fails on a digest mismatch; the cap stops a body
                // longer than the descriptor says before it fills the disk.
                using (var capped = new CappedStream(f, d.Size, d.Digest, leaveOpen: true))
                    await client.DownloadBlobAsync(d.Digest, capped, progress, ct).ConfigureAwait(false);
                if (f.Length != d.Size) throw new InvalidDataException($"{Name}: layer {d.Digest} is {f.Length} bytes, its descriptor says {d.Size}");
                f.Position = 0;
                return f;
            }
            catch
            {
                await f.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }

        public override void Dispose()
        {
            if (ownsClient) client.Dispose();
            base.Dispose();
        }
    }

    // ------------------------------------------------------------------ layout directory

    private sealed class LayoutSource(string dir) : OciImageSource
    {
        public override string Name => "oci:" + dir;

        protected override Task<(string, byte[], string)> ReadRootAsync(CancellationToken ct)
        {
            if (!File.Exists(Path.Combine(dir, "oci-layout"))) throw new InvalidDataException($"{dir} is not an OCI image layout (no oci-layout file)");
            var index = Path.Combine(dir, "index.json");
            if (!File.Exists(index)) throw new InvalidDataException($"{dir} is not an OCI image layout (no index.json)");
            var body = ReadCapped(index, MaxManifestBytes, "index.json");
            return Task.FromResult((OciMediaTypes.ImageIndex, body, OciDigest.Sha256(body)));
        }

        protected override Task<byte[]> ReadDocumentAsync(OciDescriptor d, int cap, bool isManifest, CancellationToken ct)
        {
            var path = BlobPath(d);
            if (new FileInfo(path).Length != d.Size) throw new InvalidDataException($"{Name}: blob {d.Digest} is {new FileInfo(path).Length} bytes, its descriptor says {d.Size}");
            var body = ReadCapped(path, cap, d.Digest);
            CheckDigest(d, body, Name);
            return Task.FromResult(body);
        }

        public override async Task<Stream> OpenBlobAsync(OciDescriptor d, string workDir, IProgress<long>? progress, CancellationToken ct)
        {
            var f = new FileStream(BlobPath(d), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            try
            {
                if (f.Length != d.Size) throw new InvalidDataException($"{Name}: layer {d.Digest} is {f.Length} bytes, its descriptor says {d.Size}");
                // Hash the whole file before anything parses it: a layout directory is as untrusted as a registry.
                using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                var buf = new byte[1 << 18];
                long done = 0;
                int n;
                while ((n = await f.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
                {
                    sha.AppendData(buf, 0, n);
                    done += n;
                    progress?.Report(done);
                }
                string got = "sha256:" + Convert.ToHexStringLower(sha.GetHashAndReset());
                if (got != d.Digest) throw new InvalidDataException($"{Name}: layer {d.Digest} has digest {got}: corrupt or tampered content");
                f.Position = 0;
                return f;
            }
            catch
            {
                await f.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }

        private string BlobPath(OciDescriptor d)
        {
            // OciJson accepts only sha256:<64 lowercase hex>, so the name cannot climb out of blobs/sha256.
            if (!OciDigest.IsValid(d.Digest)) throw new InvalidDataException($"{Name}: bad digest '{d.Digest}'");
            var p = Path.Combine(dir, "blobs", "sha256", d.Digest[7..]);
            if (!File.Exists(p)) throw new InvalidDataException($"{Name}: blob {d.Digest} is missing from the layout");
            return p;
        }

        private static byte[] ReadCapped(string path, int cap, string what)
        {
            using var f = File.OpenRead(path);
            if (f.Length > cap) throw new InvalidDataException($"{what}: {f.Length} bytes exceeds {cap}");
            var body = new byte[f.Length];
            f.ReadExactly(body);
            return body;
        }
    }
}

/// <summary>A seekable write-through stream that refuses to grow past <c>cap</c> bytes: a registry body longer than
/// its descriptor fails at once instead of filling memory or disk. Position and length pass through, so a download
/// retry can rewind it.</summary>
internal sealed class CappedStream(Stream inner, long cap, string what, bool leaveOpen = false) : Stream
{
    /// <summary>A write went past the cap (so an <see cref="InvalidDataException"/> from a download was this one).</summary>
    public bool Exceeded { get; private set; }

    public override bool CanRead => false;
    public override bool CanSeek => inner.CanSeek;
    public override bool CanWrite => true;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => inner.Position = value; }
    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken ct) => inner.FlushAsync(ct);
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);

    public override void SetLength(long value)
    {
        Check(value, 0);
        inner.SetLength(value);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Check(inner.Position, buffer.Length);
        inner.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) => WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
    {
        Check(inner.Position, buffer.Length);
        return inner.WriteAsync(buffer, ct);
    }

    private void Check(long at, int count)
    {
        if (at <= cap - count) return;
        Exceeded = true;
        // Not an IOException: the client would take that for a transient network error and download again.
        throw new InvalidDataException($"blob {what}: content is longer than the {cap} bytes its descriptor gives");
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !leaveOpen) inner.Dispose();
        base.Dispose(disposing);
    }
}
