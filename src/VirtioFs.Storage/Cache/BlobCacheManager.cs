using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.Storage.Cache;

// Overview: the cache turns "bytes [offset, offset+length) of a file" into chunk reads. A file is a list of chunks
// (RafsImage.GetChunks); each chunk lives compressed in a data blob and is identified by (blob, chunk index). A chunk is
// fetched from the backend at most once: the chunk map records which chunks are ready and which are being fetched, and
// readers of a pending chunk wait for the fetcher. A fetched chunk is decompressed and checked against its digest
// (digest of the uncompressed data, with the blob's digester) before it is written to the cache or returned; a mismatch
// is EIO and a logged error (nydus storage/src/cache/mod.rs validates the same way). Cached data lives uncompressed at
// the chunk's uncompressed offset in a sparse per-blob file, so a ready chunk is read with one preadv straight into the
// destination.
//
// The work is split by job: ChunkReader (the read path: hits, copies, the no-cache path), ChunkVerifier (decompress and
// digest), ChunkFetcher (claims, amplification, merged backend reads, delivery to the reader that asked) and
// Prefetch/Prefetcher (background prefetch), sharing one CacheContext (blobs, options, counters). This class is the
// façade the rest of the daemon uses.

/// <summary>
/// Reads file data of one image through a persistent chunk cache (or straight from the backend when no cache directory
/// is set). Thread-safe: many FUSE workers may read at once, and a background prefetch may run beside them.
/// The backend is not owned: dispose it after this object.
/// </summary>
public sealed class BlobCacheManager : IDisposable
{
    private const int EINVAL = Errno.EINVAL;

    private readonly CacheContext _context;
    private readonly ChunkReader _reader;
    private readonly Prefetcher _prefetcher;
    private int _disposed;
    private static int _orderZeroLogged;

    public BlobCacheManager(IReadOnlyList<RafsBlobInfo> blobs, IBlobBackend backend, CacheOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(blobs);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var states = new BlobState[blobs.Count];
        _context = new CacheContext(states, backend, options, logger ?? NullLogger.Instance);
        var verifier = new ChunkVerifier(_context);
        var fetcher = new ChunkFetcher(_context, verifier);
        _reader = new ChunkReader(_context, fetcher, verifier);
        _prefetcher = new Prefetcher(_context, fetcher);
        if (_context.Cached) Directory.CreateDirectory(options.CacheDir!);
        if (PageCacheAdvice.Enabled && Interlocked.Exchange(ref _orderZeroLogged, 1) == 0) StorageLog.OrderZeroReads(_context.Logger);
        try
        {
            for (int i = 0; i < blobs.Count; i++) states[i] = OpenBlob(blobs[i]);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private BlobState OpenBlob(RafsBlobInfo info)
    {
        var blob = new BlobState(info);
        uint chunkSize = info.ChunkSize;
        if (chunkSize < 4096 || chunkSize > CacheOptions.MaxChunkSize || (chunkSize & (chunkSize - 1)) != 0)
            blob.Unusable = $"chunk size {chunkSize} is not a power of two in 4 KiB..16 MiB";
        else if (info.ChunkCount > CacheContext.MaxChunkCount) blob.Unusable = $"chunk count {info.ChunkCount} above {CacheContext.MaxChunkCount}";
        else if (!LocalDirectoryBackend.IsValidBlobId(info.BlobId)) blob.Unusable = "blob id is not a plain file name";
        // Compressed data may exceed the plain size a little (incompressible input with framing); nothing more.
        blob.MaxCompressed = (uint)Math.Max((long)chunkSize, Codec.MaxCompressedSize(info.Compressor, (int)Math.Min(chunkSize, CacheOptions.MaxChunkSize)))
            + chunkSize / 256 + 4096;
        if (!_context.Cached || blob.Unusable is not null) return blob;

        blob.Files = BlobCacheFiles.Acquire(_context.Options.CacheDir!, info, _context.Logger, out var refusal);
        blob.Unusable = refusal;
        return blob;
    }

    /// <summary>Every chunk of the image by blob position, once built (<see cref="BlobChunkIndex"/>): lets a cache miss
    /// at the end of a file also bring the next files' chunks. Null (the default) keeps amplification within files.</summary>
    public BlobChunkIndex? Neighbours
    {
        get => _context.Neighbours;
        set => _context.Neighbours = value;
    }

    /// <summary>Chunks fetched ahead from other files than the one read (cross-file amplification), for tests.</summary>
    internal long CrossFileChunks => Interlocked.Read(ref _context.Counters.CrossFileChunks);

    /// <summary>Fetched chunks of zeros stored as holes in the cache file, for tests.</summary>
    internal long ZeroChunksAsHoles => Interlocked.Read(ref _context.Counters.ZeroChunksAsHoles);

    /// <summary>The shared cache files of blob <paramref name="blob"/> (null without a cache directory), for tests.</summary>
    internal BlobCacheFiles? FilesOf(int blob) => _context.Blobs[blob].Files;

    /// <summary>The cache directory (<see cref="CacheOptions.CacheDir"/>), null when nothing is cached.</summary>
    public string? CacheDir => _context.Options.CacheDir;

    /// <summary>
    /// The data files this cache keeps, by name (<c>&lt;blobId&gt;.blob.data</c>, as nydus's filecache lists them in
    /// <c>underlying_files</c>; nydus-snapshotter's blob GC keeps the blobs named there).
    /// </summary>
    public IReadOnlyList<string> DataFileNames
    {
        get
        {
            var names = new List<string>();
            foreach (var blob in _context.Blobs)
            {
                if (blob?.Files is not null) names.Add(blob.Info.BlobId + ".blob.data");
            }
            return names;
        }
    }

    public CacheMetrics Metrics
    {
        get
        {
            long ready = 0, total = 0;
            foreach (var blob in _context.Blobs)
            {
                if (blob is null) continue;
                total += blob.Info.ChunkCount;
                ready += blob.Map?.ReadyCount ?? 0;
            }
            return _context.Counters.Metrics(ready, total);
        }
    }

    /// <summary>Where the background prefetch stands (files, chunks and bytes done of what it queued so far).</summary>
    public PrefetchProgress PrefetchProgress => _context.Counters.Progress();

    /// <summary>A read answered from a decoded copy of a chunk this cache holds (RafsFs's slots), which reached neither
    /// the cache file nor the backend: counted as a read and a hit, as nydus's blobcache counts a read that needs no
    /// backend.</summary>
    public void CountCopyHit()
    {
        if (!_context.Cached) return;
        Interlocked.Increment(ref _context.Counters.Reads);
        Interlocked.Increment(ref _context.Counters.Hits);
    }

    /// <summary>True when chunk <paramref name="chunk"/> is in the cache (holes count as ready).</summary>
    public bool IsCached(in RafsChunk chunk) => _context.IsCached(chunk);

    /// <summary>Form of <see cref="ReadFile(IReadOnlyList{RafsChunk}, ulong, ulong, int, ReadOnlySpan{IoSegment})"/> for
    /// a buffer of this process (managed or native, never guest memory): a chunk read whole and fetched now is decoded
    /// straight into it and written to the cache from there.</summary>
    public unsafe int ReadFile(IReadOnlyList<RafsChunk> chunks, ulong fileSize, ulong offset, Span<byte> destination)
    {
        // SAFETY: `destination` stays pinned by `fixed` for the whole call; the one segment describes exactly it.
        fixed (byte* start = destination)
        {
            var whole = new IoSegment(start, destination.Length);
            return Read(chunks, fileSize, offset, destination.Length, new ReadOnlySpan<IoSegment>(ref whole), ownMemory: true);
        }
    }

    /// <summary>
    /// Reads up to <paramref name="length"/> bytes of a file at <paramref name="offset"/> into <paramref name="destination"/>
    /// (memory the caller keeps valid for the call, e.g. guest buffers of a FUSE READ). <paramref name="chunks"/> is the
    /// file's chunk list in file order, as RafsImage.GetChunks returns it. Holes read as zeros; reading at or past
    /// <paramref name="fileSize"/> returns 0. Returns the number of bytes read, or a negative errno
    /// (-EIO when a chunk cannot be fetched, fails its digest, or the image describes it impossibly).
    /// </summary>
    public int ReadFile(IReadOnlyList<RafsChunk> chunks, ulong fileSize, ulong offset, int length, ReadOnlySpan<IoSegment> destination) =>
        Read(chunks, fileSize, offset, length, destination, ownMemory: false);

    private int Read(IReadOnlyList<RafsChunk> chunks, ulong fileSize, ulong offset, int length, ReadOnlySpan<IoSegment> destination, bool ownMemory)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        Interlocked.Increment(ref _context.Counters.Reads);
        if (length < 0) return -EINVAL;
        long room = SegmentCursor.TotalLength(destination);
        if (offset >= fileSize || length == 0 || room == 0) return 0;
        int count = (int)Math.Min(Math.Min((ulong)length, (ulong)room), fileSize - offset);
        _context.Gate.Enter();
        try
        {
            int rc = _reader.ReadCore(chunks, offset, count, destination, ownMemory);
            if (rc == 0) return count;
            Interlocked.Increment(ref _context.Counters.ReadErrors);
            return -rc;
        }
        finally
        {
            _context.Gate.Exit();
        }
    }

    /// <summary>
    /// Fetches the chunks of <paramref name="files"/> into the cache in the background, at most
    /// <see cref="PrefetchOptions.MaxConcurrency"/> backend reads in flight and <see cref="PrefetchOptions.BandwidthBytesPerSecond"/>
    /// backend bytes per second, and, with <see cref="PrefetchOptions.YieldToGuestReads"/>, starting no backend read
    /// while a guest read is in progress. Chunk failures are logged and counted, not thrown. Does nothing without a cache directory. Cancelling stops it (OperationCanceledException).
    /// </summary>
    public async Task PrefetchAsync(IEnumerable<IReadOnlyList<RafsChunk>> files, PrefetchOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!_context.Cached) return;
        await _prefetcher.PrefetchAsync(files, options, ct).ConfigureAwait(false);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var blob in _context.Blobs) blob?.Files?.Release();
    }
}
