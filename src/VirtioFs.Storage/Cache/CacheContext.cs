using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.Storage.Cache;

/// <summary>One data blob of the image as the cache sees it: its record, its cache files and why it cannot be read.</summary>
internal sealed class BlobState(RafsBlobInfo info)
{
    public RafsBlobInfo Info { get; } = info;
    /// <summary>Why the blob cannot be read at all (impossible chunk size, count or id in the image; or another image
    /// in this process uses the same blob id with a different layout), or null.</summary>
    public string? Unusable { get; set; }
    public BlobCacheFiles? Files { get; set; }
    public ChunkMap? Map => Files?.Map;
    public SafeFileHandle? Data => Files?.Data;
    public string DataPath => Files?.DataPath ?? "";
    /// <summary>Largest compressed size a chunk of this blob may claim.</summary>
    public uint MaxCompressed { get; set; }
}

/// <summary>
/// What the reader (<see cref="ChunkReader"/>), the fetcher (<see cref="ChunkFetcher"/>) and the prefetcher
/// (<see cref="Prefetcher"/>) of one <see cref="BlobCacheManager"/> share: the blobs, the backend, the options, the
/// foreground gate and the counters; and the one check every chunk record from the image passes before it is used.
/// </summary>
internal sealed class CacheContext(BlobState[] blobs, IBlobBackend backend, CacheOptions options, ILogger logger)
{
    public const int MaxChunkCount = 1 << 24;

    public BlobState[] Blobs { get; } = blobs;
    public IBlobBackend Backend { get; } = backend;
    public CacheOptions Options { get; } = options;
    public ILogger Logger { get; } = logger;
    /// <summary>True with a cache directory; false reads straight from the backend.</summary>
    public bool Cached { get; } = options.CacheDir is not null;
    /// <summary>Guest reads enter it; the prefetcher waits for it to be idle before each backend read.</summary>
    public ForegroundGate Gate { get; } = new();

    /// <summary>The counters; a field so that Interlocked updates reach the one instance.</summary>
    public CacheCounters Counters;

    private BlobChunkIndex? _neighbours;

    /// <summary>See <see cref="BlobCacheManager.Neighbours"/>.</summary>
    public BlobChunkIndex? Neighbours
    {
        get => Volatile.Read(ref _neighbours);
        set => Volatile.Write(ref _neighbours, value);
    }

    /// <summary>True when chunk <paramref name="chunk"/> is in the cache (holes count as ready).</summary>
    public bool IsCached(in RafsChunk chunk) =>
        chunk.IsHole || (chunk.BlobIndex < (uint)Blobs.Length && Blobs[chunk.BlobIndex].Map is { } map && map.IsReady(chunk.ChunkIndex));

    /// <summary>Checks a chunk record against its blob; logs and returns false when it is impossible.</summary>
    public bool Validate(in RafsChunk chunk, out BlobState blob)
    {
        string? why = CheckChunk(chunk, out blob!);
        if (why is null) return true;
        StorageLog.BadChunk(Logger, blob?.Info.BlobId ?? "?", chunk.ChunkIndex, why);
        return false;
    }

    /// <summary>Impossible chunks are logged by the guest read that meets them; prefetch just skips them.</summary>
    public bool ValidateQuiet(in RafsChunk chunk) => CheckChunk(chunk, out _) is null;

    /// <summary>Why a chunk record is impossible for its blob (everything in it comes from the image), or null.</summary>
    private string? CheckChunk(in RafsChunk chunk, out BlobState? blob)
    {
        blob = null;
        if (chunk.BlobIndex >= (uint)Blobs.Length) return $"blob index {chunk.BlobIndex} beyond the {Blobs.Length} blobs";
        blob = Blobs[chunk.BlobIndex];
        var info = blob.Info;
        if (blob.Unusable is not null) return blob.Unusable;
        if (chunk.UncompressedSize == 0 || chunk.UncompressedSize > info.ChunkSize) return $"uncompressed size {chunk.UncompressedSize} vs chunk size {info.ChunkSize}";
        if (chunk.CompressedSize == 0 || chunk.CompressedSize > blob.MaxCompressed) return $"compressed size {chunk.CompressedSize}";
        if (!chunk.IsCompressed && chunk.CompressedSize != chunk.UncompressedSize) return "uncompressed chunk whose sizes differ";
        if ((chunk.Flags & (ChunkFlags.Encrypted | ChunkFlags.Batch)) != 0) return $"unsupported chunk flags {chunk.Flags}";
        if (chunk.CompressedOffset > (ulong)long.MaxValue - chunk.CompressedSize) return "compressed offset out of range";
        if (chunk.UncompressedOffset > (ulong)long.MaxValue - chunk.UncompressedSize) return "uncompressed offset out of range";
        // The cache file is sparse, but an offset far past the blob's own size would still grow it absurdly.
        if (info.UncompressedSize != 0 && chunk.UncompressedOffset + chunk.UncompressedSize > AlignUp(info.UncompressedSize))
            return $"uncompressed range beyond the blob's {info.UncompressedSize} bytes";
        if (Cached && chunk.ChunkIndex >= info.ChunkCount) return $"chunk index beyond the blob's {info.ChunkCount} chunks";
        return null;
    }

    private static ulong AlignUp(ulong value) => value > ulong.MaxValue - 4095 ? ulong.MaxValue : (value + 4095) & ~4095UL;
}
