using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using VirtioFs.Oci;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;

namespace VirtioFs.ImageTool.Registry;

/// <summary>
/// <c>vfs-image convert SRC DST</c>: an OCI image (registry or OCI layout directory) becomes a nydus image in a
/// registry, as nydusify does it: the source is resolved for one platform, every layer is downloaded and checked
/// (descriptor digest while streaming, then the config's diff id over the uncompressed tar), the layers are flattened
/// into one tree (whiteouts and opaque directories applied) and built into one bootstrap and one data blob with chunks
/// deduplicated across all layers, and the result is pushed with the source config kept (env, entrypoint, ...) and
/// its rootfs rewritten for the nydus layers. The push is the same code as <c>vfs-image push</c>.
/// </summary>
public static partial class RegistryCommands
{
    public const string ConvertUsage = "convert SRC DST [--platform OS/ARCH|all|OS/ARCH,OS/ARCH...] [--fs-version 6|5] [--compressor none|lz4_block|zstd] [--digester blake3|sha256] "
        + "[--chunk-size N] [--chunk-dict PATH|bootstrap=PATH|bootstrap:registry:REF] [--work-dir DIR] [--mount-from REPO] [--bom [--bom-format spdx|cyclonedx]] [--backend-type s3|oss --backend-config FILE [--multipart-threshold N]] [--prefetch-files LIST] [--sign KEY] "
        + "[--insecure] [REGISTRY OPTIONS] [--json]";

    /// <summary>Most bytes all layers of one image may expand to (a decompression bomb stops here, not at a full disk).</summary>
    internal static long MaxUnpackedBytes { get; set; } = 64L << 30;

    public static int Convert(IEnumerable<string> rest, TextWriter o, bool terminal = false)
    {
        var a = Parse(rest, [.. CommonValued, "--fs-version", "--compressor", "--digester", "--chunk-size", "--work-dir", "--mount-from", "--bom-format", "--backend-type", "--backend-config", "--multipart-threshold", "--prefetch-files", "--sign", "--chunk-dict"], [.. CommonFlags, "--insecure", "--bom"]);
        if (a.Positional.Count != 2) throw new Program.UsageException("usage: vfs-image " + ConvertUsage);
        string src = a.Positional[0];
        var dst = Ref(a.Positional[1]);
        if (dst.Digest is not null) throw new Program.UsageException("convert DST takes a tag, not a digest");
        var platforms = ParsePlatforms(a.Get("--platform"));
        string? mountFrom = a.Get("--mount-from");
        if (mountFrom is not null && !OciReference.IsValidRepository(mountFrom)) throw new Program.UsageException($"bad --mount-from repository '{mountFrom}'");
        var build = new BuildOptions
        {
            BlobDir = "",
            Bootstrap = "",
            FsVersion = a.Get("--fs-version") is { } v ? Program.ParseInt(v, "--fs-version") : 6,
            ChunkSize = a.Get("--chunk-size") is { } cs ? Program.ParseSize(cs) : 1u << 20,
            Compressor = a.Get("--compressor") is { } c ? Program.Wrap(() => Codec.ParseCompressor(c)) : Compressor.Zstd,
            Digester = a.Get("--digester") is { } d ? Program.Wrap(() => Codec.ParseDigester(d)) : Digester.Blake3,
        };
        Program.ApplySignAndPrefetch(a.Get("--sign"), a.Get("--prefetch-files"), build); // read now: a bad key or list fails before any download
        try { build.Validate(); } catch (RafsFormatException e) { throw new Program.UsageException(e.Message); }
        var dictArg = a.Get("--chunk-dict") is { } cd ? ChunkDictArg.Parse(cd) : null;
        bool json = a.Flags.Contains("--json");
        var log = json ? TextWriter.Null : o;
        // --bom: attach the converted image's bill of materials as a referrer (Bom/BomCommand.AttachBuilt).
        string? bomFormat = a.Flags.Contains("--bom") ? a.Get("--bom-format") ?? "spdx" : a.Get("--bom-format") is null ? null : throw new Program.UsageException("--bom-format needs --bom");
        if (bomFormat is not (null or "spdx" or "cyclonedx")) throw new Program.UsageException($"--bom-format {bomFormat}: expected spdx or cyclonedx");
        // --backend-type s3|oss: the blobs go to object storage and the registry gets the bootstrap only (nydusify
        // --backend-type, docs/nydusify.md). The config is read now so a bad one fails before any conversion work.
        string? backendType = a.Get("--backend-type");
        Oci.ObjectStorage.ObjectStorageOptions? backend = null;
        long threshold = DefaultMultipartThreshold;
        if (backendType is not null)
        {
            backend = ReadBackendConfig(backendType, a.Get("--backend-config") ?? throw new Program.UsageException("convert --backend-type needs --backend-config FILE"));
            if (a.Get("--multipart-threshold") is { } mt) threshold = ParseSize(mt);
        }
        else if (a.Get("--backend-config") is not null || a.Get("--multipart-threshold") is not null)
            throw new Program.UsageException("--backend-config and --multipart-threshold go with --backend-type s3|oss");
        if (dictArg is not null && backend is not null)
            throw new Program.UsageException("--chunk-dict with --backend-type: the dictionary's blobs would have to be in the bucket; not supported");

        // Everything this run writes lives in one directory of its own, removed at the end whatever happens.
        string workRoot = a.Get("--work-dir") ?? Path.GetTempPath();
        Directory.CreateDirectory(workRoot);
        string work = Path.Combine(workRoot, $"vfs-convert-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        try
        {
            OciReference? srcRef = null;
            using var source = OpenSource(a, src, ref srcRef);
            using var dict = dictArg is null ? null : new ChunkDict(dictArg, a, work, log);
            // Same registry: let it mount blobs from the source repository instead of receiving them again.
            if (mountFrom is null && srcRef is not null && srcRef.Host == dst.Host && srcRef.Repository != dst.Repository) mountFrom = srcRef.Repository;
            using var client = new RegistryClient(Options(a, dst));
            var (sourceIndex, wanted) = platforms.Merge ? PlanPlatforms(source, platforms) : (null, platforms.Listed);

            var done = new List<Converted>();
            foreach (var platform in wanted)
            {
                var one = ConvertOne(source, platform, build, dict, dst, client, mountFrom, backend, backendType, threshold, bomFormat, !platforms.Merge, Path.Combine(work, $"p{done.Count}"), log, terminal);
                done.Add(one);
            }
            string indexDigest = platforms.Merge
                ? sourceIndex is null
                    ? Run(client.PutManifestAsync(dst.Reference, OciMediaTypes.ImageIndex, OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex, [.. done.Select(x => x.Report.Descriptor(x.Platform))]))))
                    : PushMergedIndex(client, dst, source, srcRef, sourceIndex, [.. done.Select(x => x.Report.Descriptor(x.Platform))], work, log, terminal)
                : done[0].Report.IndexDigest;

            if (json)
            {
                WriteJson(o, w =>
                {
                    w.WriteString("source", source.Name);
                    if (!platforms.Merge) { WriteConverted(w, done[0], dst, backendType, backend); return; }
                    w.WriteString("reference", dst.ToString());
                    w.WriteString("index", indexDigest);
                    w.WriteNumber("kept_entries", sourceIndex?.Manifests.Count ?? 0);
                    w.WriteStartArray("platforms");
                    foreach (var x in done)
                    {
                        w.WriteStartObject();
                        w.WriteString("platform", x.Platform.ToString());
                        WriteConverted(w, x, dst, backendType, backend);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                });
            }
            else if (!platforms.Merge)
            {
                var x = done[0];
                o.WriteLine($"converted {source.Name} -> {dst} ({x.Image.ConfigInfo.Platform}) index {indexDigest} manifest {x.Report.ManifestDigest}, {x.Report.Uploaded} blobs uploaded"
                    + (backend is null ? "" : $"; data blobs in {Where(backendType!, backend)} ({x.Stored!.Count(r => r.Outcome != "already present")} uploaded)"));
            }
            else o.WriteLine($"converted {source.Name} -> {dst} ({string.Join(", ", done.Select(x => x.Platform))}) index {indexDigest}: "
                + $"{done.Count} nydus manifests beside the source index's {sourceIndex?.Manifests.Count ?? 0} entries");
            return 0;
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>One platform converted and pushed (its manifest; the caller writes the index).</summary>
    private sealed record Converted(OciPlatform Platform, ResolvedImage Image, BuildResult Built, long Unpacked, PushReport Report, List<PushedBlob>? Stored);

    /// <summary>
    /// Resolves <paramref name="platform"/> in the source, fetches and flattens its layers, builds the bootstrap and
    /// blob (against the chunk dictionary's bootstrap for this platform when there is one) and pushes the manifest; a
    /// single-platform convert also tags a nydus-only index, as before.
    /// </summary>
    private static Converted ConvertOne(OciImageSource source, OciPlatform platform, BuildOptions template, ChunkDict? dict, OciReference dst, RegistryClient client,
        string? mountFrom, Oci.ObjectStorage.ObjectStorageOptions? backend, string? backendType, long threshold, string? bomFormat, bool tagIndex, string work, TextWriter log, bool terminal)
    {
        Directory.CreateDirectory(work);
        var image = Run(source.ResolveAsync(platform));
        var layers = image.Manifest.Layers;
        log.WriteLine($"source {source.Name} manifest {image.ManifestDigest}: {layers.Count} layers, {image.ConfigInfo.Platform}");
        var build = new BuildOptions
        {
            FsVersion = template.FsVersion, ChunkSize = template.ChunkSize, Compressor = template.Compressor, Digester = template.Digester,
            PrefetchFiles = template.PrefetchFiles, SigningKey = template.SigningKey,
            BlobDir = Path.Combine(work, "blobs"),
            Bootstrap = Path.Combine(work, "image.boot"),
            BuildTime = BuildTime(image.ConfigInfo),
            ChunkDict = dict?.Bootstrap(platform),
        };

        BuildResult built;
        long unpacked = 0;
        using (var tree = new OciSource(work))
        {
            for (int i = 0; i < layers.Count; i++)
                unpacked += ApplyLayer(source, layers[i], image.ConfigInfo.DiffIds[i], tree, work, MaxUnpackedBytes - unpacked, log, terminal);
            tree.Flush();
            Directory.CreateDirectory(build.BlobDir);
            built = ImageBuilder.Build(tree.Root, build);
        }
        var s = built.Stats;
        log.WriteLine($"built RAFS v{build.FsVersion}: {built.Inodes} inodes, {s.Files} files, {s.Chunks} chunks ({s.UniqueChunks} unique"
            + (dict is null ? "" : $", {s.DictChunks} from chunk dict {dict.Describe}") + $"), {TransferProgress.Size(unpacked)} of layers -> {TransferProgress.Size(s.BytesOut)} blob");

        List<PushedBlob>? stored = backend is null ? null : UploadBlobs(build.Bootstrap, build.BlobDir, backend, DefaultPartSize, threshold, log, terminal);
        Func<string, ExternalBlob?>? external = dict is null ? null : id => dict.Blob(id, platform, dst, client);
        byte[] MakeConfig(IReadOnlyList<string> diffIds) => OciImageConfig.ForNydus(image.Config, diffIds);
        var report = tagIndex
            ? PushImage(client, dst, build.Bootstrap, build.BlobDir, image.ConfigInfo.Platform, MakeConfig, mountFrom, 0, log, terminal, blobsInRegistry: backend is null, external)
            : PushManifest(client, build.Bootstrap, build.BlobDir, MakeConfig, mountFrom, 0, log, terminal, blobsInRegistry: backend is null, external);
        if (bomFormat is not null) Bom.BomCommand.AttachBuilt(client, dst, report.ManifestDigest, build.Bootstrap, build.BlobDir, bomFormat, log);
        return new Converted(image.ConfigInfo.Platform, image, built, unpacked, report, stored);
    }

    private static void WriteConverted(System.Text.Json.Utf8JsonWriter w, Converted x, OciReference dst, string? backendType, Oci.ObjectStorage.ObjectStorageOptions? backend)
    {
        var s = x.Built.Stats;
        w.WriteString("source_manifest", x.Image.ManifestDigest);
        w.WriteNumber("source_layers", x.Image.Manifest.Layers.Count);
        w.WriteNumber("unpacked_bytes", x.Unpacked);
        w.WriteNumber("files", s.Files);
        w.WriteNumber("chunks", s.Chunks);
        w.WriteNumber("unique_chunks", s.UniqueChunks);
        w.WriteNumber("dict_chunks", s.DictChunks);
        w.WriteNumber("blob_bytes", s.BytesOut);
        if (x.Built.Blob is { } b) w.WriteString("blob", "sha256:" + b.BlobId);
        WritePushReport(w, dst, x.Report);
        if (backend is not null)
        {
            w.WriteStartObject("object_storage");
            w.WriteString("backend", Where(backendType!, backend));
            WriteObjectStorageBlobs(w, x.Stored!);
            w.WriteEndObject();
        }
    }

    /// <summary>SRC is <c>oci:DIR</c>, a directory holding an OCI layout, or a registry reference.</summary>
    private static OciImageSource OpenSource(Args a, string src, ref OciReference? reference)
    {
        if (src.StartsWith("oci:", StringComparison.Ordinal))
        {
            string dir = src[4..];
            if (!Directory.Exists(dir)) throw new IOException($"{dir}: no such directory");
            return OciImageSource.FromLayout(dir);
        }
        if (OciImageSource.IsLayout(src)) return OciImageSource.FromLayout(src);
        if (Directory.Exists(src)) throw new InvalidDataException($"{src} is a directory but not an OCI image layout (no oci-layout and index.json)");
        reference = Ref(src);
        return OciImageSource.FromRegistry(new RegistryClient(Options(a, reference)), reference, ownsClient: true);
    }

    /// <summary>
    /// Fetches one layer (digest-checked), decompresses it by media type and applies it to <paramref name="tree"/>,
    /// hashing the uncompressed tar to check it against the config's diff id. Returns the uncompressed size; more than
    /// <paramref name="budget"/> bytes fails the conversion.
    /// </summary>
    private static long ApplyLayer(OciImageSource source, OciDescriptor layer, string diffId, OciSource tree, string work, long budget, TextWriter log, bool terminal)
    {
        string name = "layer " + layer.Digest[7..19];
        var progress = new TransferProgress(log, name, layer.Size, terminal);
        using var stored = Run(source.OpenBlobAsync(layer, work, progress));
        progress.Done("fetched");
        OciImageSource.TryGetLayerCompression(layer.MediaType, out var compression);
        try
        {
            using Stream plain = compression switch
            {
                LayerCompression.Gzip => new GZipStream(stored, CompressionMode.Decompress, leaveOpen: true),
                LayerCompression.Zstd => new ZstdSharp.DecompressionStream(stored, leaveOpen: true),
                _ => stored,
            };
            using var tar = new DiffIdStream(plain, budget, layer.Digest);
            tree.ApplyTar(tar, $"layer {layer.Digest}");
            tar.Drain(); // bytes after the end-of-archive blocks are part of the diff id too
            string got = tar.Digest();
            if (got != diffId) throw new InvalidDataException($"layer {layer.Digest}: uncompressed content has digest {got}, the config's diff id is {diffId}");
            log.WriteLine($"{name}: applied {TransferProgress.Size(tar.Count)} of files");
            return tar.Count;
        }
        catch (Exception e) when (e is InvalidDataException or ZstdSharp.ZstdException or EndOfStreamException && e.Message.Length > 0 && !e.Message.StartsWith("layer ", StringComparison.Ordinal))
        {
            throw new InvalidDataException($"layer {layer.Digest}: {e.Message}", e);
        }
    }

    /// <summary>The image's own creation time, so converting the same image twice gives the same bytes; else
    /// SOURCE_DATE_EPOCH, else 0.</summary>
    private static ulong BuildTime(OciImageConfigInfo info)
    {
        if (info.Created is { } c && c.ToUnixTimeSeconds() >= 0) return (ulong)c.ToUnixTimeSeconds();
        var sde = Environment.GetEnvironmentVariable("SOURCE_DATE_EPOCH");
        return ulong.TryParse(sde, NumberStyles.None, CultureInfo.InvariantCulture, out ulong t) ? t : 0;
    }

    /// <summary>Read-through stream over an uncompressed layer: hashes what passes (the diff id, image-spec
    /// "config.md") and fails once more than <c>limit</c> bytes came out of the decompressor.</summary>
    private sealed class DiffIdStream(Stream inner, long limit, string what) : Stream
    {
        private readonly IncrementalHash _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public long Count { get; private set; }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = inner.Read(buffer);
            Count += n;
            // An IOException, not InvalidDataException: the tar reader reports the latter as "not a valid tar".
            if (Count > limit) throw new IOException($"layer {what} expands to more than {limit} bytes (the limit for all layers together)");
            _sha.AppendData(buffer[..n]);
            return n;
        }

        public void Drain()
        {
            var buf = new byte[1 << 16];
            while (Read(buf) > 0) { }
        }

        public string Digest() => "sha256:" + System.Convert.ToHexStringLower(_sha.GetHashAndReset());

        protected override void Dispose(bool disposing)
        {
            if (disposing) _sha.Dispose();
            base.Dispose(disposing);
        }
    }
}
