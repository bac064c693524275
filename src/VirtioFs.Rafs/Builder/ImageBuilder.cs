using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Rafs.Builder;

/// <summary>Options named as nydus-image names them.</summary>
public sealed class BuildOptions
{
    public int FsVersion { get; set; } = 6;
    public uint ChunkSize { get; set; } = 1 << 20;
    public Compressor Compressor { get; set; } = Compressor.Zstd;
    public Digester Digester { get; set; } = Digester.Blake3;
    public string? ChunkDict { get; set; }
    public IReadOnlyList<string> PrefetchFiles { get; set; } = [];
    public required string BlobDir { get; set; }
    public required string Bootstrap { get; set; }
    public ulong BuildTime { get; set; }
    /// <summary>Ed25519 private key (32-byte seed) to sign the root digest with, or null.</summary>
    public byte[]? SigningKey { get; set; }

    public void Validate()
    {
        if (FsVersion is not (5 or 6)) throw new RafsFormatException($"--fs-version {FsVersion}: expected 5 or 6");
        if (ChunkSize < 4096 || ChunkSize > 16u << 20 || (ChunkSize & (ChunkSize - 1)) != 0)
            throw new RafsFormatException($"--chunk-size {ChunkSize} must be a power of two from 4 KiB to 16 MiB");
        if (Compressor == Compressor.Gzip) throw new RafsFormatException("--compressor gzip is not supported for building");
    }
}

/// <summary>What a build produced.</summary>
public sealed record BuildResult(string Bootstrap, BlobOutput? Blob, BuildStats Stats, byte[] RootDigest, int Inodes)
{
    public double DedupRatio => Stats.Chunks == 0 ? 1.0 : (double)Stats.Chunks / Math.Max(1, Stats.UniqueChunks);
}

/// <summary>The build pipeline: tree -> chunk/hash/compress (parallel) -> dedup -> blob -> merkle -> bootstrap.</summary>
public static class ImageBuilder
{
    public static BuildResult Build(BuildInode root, BuildOptions o, ILogger? logger = null)
    {
        logger ??= NullLogger.Instance;
        o.Validate();
        Log.BuildStarted(logger, o.FsVersion, o.Bootstrap, Codec.Name(o.Compressor), Codec.Name(o.Digester), o.ChunkSize);
        var order = BuildTree.Finalize(root);
        var blobs = new List<BlobDesc>();
        List<ChunkRecord>? dict = null;
        if (o.ChunkDict is not null)
        {
            using var d = RafsImage.Open(o.ChunkDict);
            if (d.Digester != o.Digester) throw new RafsFormatException($"--chunk-dict uses digester {Codec.Name(d.Digester)}, this build {Codec.Name(o.Digester)}");
            if (d.ChunkSize != o.ChunkSize) throw new RafsFormatException($"--chunk-dict uses chunk size {d.ChunkSize}, this build {o.ChunkSize}");
            dict = ChunkDictionary.Load(d);
            Log.ChunkDictLoaded(logger, o.ChunkDict, dict.Count, d.Blobs.Count);
            foreach (var b in d.Blobs)
                blobs.Add(new BlobDesc(b.BlobId, b.CompressedSize, b.UncompressedSize, b.ChunkCount, b.Compressor, b.Digester, b.ChunkSize,
                    b.CiCompressor, b.CiOffset, b.CiCompressedSize, b.CiUncompressedSize, b.Features));
        }
        var files = order.Where(n => n.IsReg).ToList();
        var chunker = new Chunker(o.ChunkSize, o.Compressor, o.Digester, (uint)blobs.Count, dict);
        var blob = chunker.Run(files, o.BlobDir);
        if (blob is not null) Log.BlobWritten(logger, blob.BlobId, blob.ChunkCount, blob.CompressedSize);
        if (blob is not null) blobs.Add(new BlobDesc(blob.BlobId, blob.CompressedSize, blob.UncompressedSize, blob.ChunkCount, o.Compressor, o.Digester, o.ChunkSize,
            blob.CiCompressor, blob.CiOffset, blob.CiCompressedSize, blob.CiUncompressedSize));

        // Drop dictionary blobs nothing references, renumbering the rest (nydus keeps only used blobs).
        var used = new SortedSet<uint>(files.SelectMany(f => f.Chunks).Select(c => c.BlobIndex));
        var remap = new Dictionary<uint, uint>();
        var kept = new List<BlobDesc>();
        foreach (var u in used) { remap[u] = (uint)kept.Count; kept.Add(blobs[(int)u]); }
        var rewritten = new Dictionary<ChunkRecord, ChunkRecord>(ReferenceEqualityComparer.Instance);
        foreach (var f in files)
        {
            for (int i = 0; i < f.Chunks.Length; i++)
            {
                var c = f.Chunks[i];
                if (remap[c.BlobIndex] == c.BlobIndex) continue;
                if (!rewritten.TryGetValue(c, out var r))
                {
                    r = new ChunkRecord { Digest = c.Digest, BlobIndex = remap[c.BlobIndex], Index = c.Index, Flags = c.Flags, CompressedOffset = c.CompressedOffset, CompressedSize = c.CompressedSize, UncompressedOffset = c.UncompressedOffset, UncompressedSize = c.UncompressedSize };
                    rewritten[c] = r;
                }
                f.Chunks[i] = r;
            }
        }

        var rootDigest = Merkle.Compute(order, o.Digester, o.FsVersion);
        var prefetch = new List<BuildInode>();
        foreach (var p in o.PrefetchFiles)
        {
            var n = Resolve(root, p) ?? throw new RafsFormatException($"--prefetch-files: '{p}' is not in the image");
            prefetch.Add(n);
        }
        var layout = new LayoutInput
        {
            Order = order,
            Blobs = kept,
            ChunkSize = o.ChunkSize,
            Compressor = o.Compressor,
            Digester = o.Digester,
            BuildTime = o.BuildTime,
            Prefetch = prefetch,
            RootDigest = rootDigest,
            Signature = o.SigningKey is null ? [] : Signing.Sign(o.SigningKey, rootDigest),
        };
        var bytes = o.FsVersion == 5 ? V5Writer.Write(layout, root) : V6Writer.Write(layout);
        var dir = Path.GetDirectoryName(Path.GetFullPath(o.Bootstrap))!;
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(o.Bootstrap, bytes);
        var result = new BuildResult(o.Bootstrap, blob, chunker.Stats, rootDigest, order.Count);
        Log.BuildFinished(logger, o.Bootstrap, order.Count, chunker.Stats.Chunks, chunker.Stats.UniqueChunks, result.DedupRatio, Convert.ToHexStringLower(rootDigest));
        return result;
    }

    public static BuildInode? Resolve(BuildInode root, string path)
    {
        var cur = root;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            var e = BuildTree.Find(cur, System.Text.Encoding.UTF8.GetBytes(part));
            if (e is null) return null;
            cur = e.Inode;
        }
        return cur;
    }
}

/// <summary>Loads the chunks of an earlier image so a new build references rather than stores them.</summary>
public static class ChunkDictionary
{
    public static List<ChunkRecord> Load(RafsImage image)
    {
        var list = new List<ChunkRecord>();
        var seen = new HashSet<(uint, uint)>();
        var chunks = new List<RafsChunk>();
        foreach (var (ino, attr) in ImageWalker.Inodes(image))
        {
            if ((attr.Mode & 0xF000) != 0x8000) continue;
            chunks.Clear();
            int rc = image.GetChunks(ino, chunks);
            if (rc != 0) throw new RafsFormatException($"chunk dictionary: inode {ino} has a corrupt chunk list (errno {rc})");
            foreach (var c in chunks)
            {
                if (c.IsHole || !seen.Add((c.BlobIndex, c.ChunkIndex))) continue;
                var r = new ChunkRecord { BlobIndex = c.BlobIndex, Index = c.ChunkIndex, Flags = c.Flags, CompressedOffset = c.CompressedOffset, CompressedSize = c.CompressedSize, UncompressedOffset = c.UncompressedOffset, UncompressedSize = c.UncompressedSize };
                var dg = c.Digest;
                ((ReadOnlySpan<byte>)dg).CopyTo(r.Digest);
                list.Add(r);
            }
        }
        return list;
    }
}
