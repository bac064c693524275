using System.Buffers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Prefetch;
using static Tmds.Linux.LibC;

namespace VirtioFs.Storage.Cache;

// Overview: the cache turns "bytes [offset, offset+length) of a file" into chunk reads. A file is a list of chunks
// (RafsImage.GetChunks); each chunk lives compressed in a data blob and is identified by (blob, chunk index). A chunk is
// fetched from the backend at most once: the chunk map records which chunks are ready and which are being fetched, and
// readers of a pending chunk wait for the fetcher. A fetched chunk is decompressed and checked against its digest
// (digest of the uncompressed data, with the blob's digester) before it is written to the cache or returned; a mismatch
// is EIO and a logged error (nydus storage/src/cache/mod.rs validates the same way). Cached data lives uncompressed at
// the chunk's uncompressed offset in a sparse per-blob file, so a ready chunk is read with one preadv straight into the
// destination.

/// <summary>
/// Reads file data of one image through a persistent chunk cache (or straight from the backend when no cache directory
/// is set). Thread-safe: many FUSE workers may read at once, and a background prefetch may run beside them.
/// The backend is not owned: dispose it after this object.
/// </summary>
public sealed class BlobCacheManager : IDisposable
{
    /// <summary>Internal result: the cached copy is missing or proved corrupt; fetch it again.</summary>
    // Named here so they win over LibC's identically named values (using static Tmds.Linux.LibC above).
    private const int EIO = Errno.EIO, EINVAL = Errno.EINVAL, EINTR = Errno.EINTR;
    private const int Stale = -1;
    private const int MaxChunkCount = 1 << 24;

    private sealed class BlobState(RafsBlobInfo info)
    {
        public RafsBlobInfo Info { get; } = info;
        /// <summary>Why the blob cannot be read at all (impossible chunk size, count or id in the image; or another image
        /// in this process uses the same blob id with a different layout), or null.</summary>
        public string? Unusable { get; set; }
        public BlobCacheFiles? Files { get; set; }
        public ChunkMap? Map => Files?.Map;
        public SafeFileHandle? Data => Files?.Data;
        public string DataPath => Files?.DataPath ?? "";
        public uint MaxCompressed { get; set; }
    }

    private readonly BlobState[] _blobs;
    private readonly IBlobBackend _backend;
    private readonly CacheOptions _options;
    private readonly ILogger _logger;
    private readonly bool _cached;
    private readonly int _mergeCap;
    private readonly ForegroundGate _gate = new();
    private int _disposed;
    private long _reads, _readErrors, _hits, _misses, _pendingWaits, _fetched, _backendReads, _backendBytes, _digestErrors, _repairs;
    private long _pfTotal, _pfDone, _pfChunks, _pfBytes, _pfErrors;
    // Prefetch progress beyond CacheMetrics: what the walk has queued so far, what it found cached, when it ran.
    private long _pfQueuedChunks, _pfQueuedBytes, _pfCached, _pfBeganMs, _pfEndedMs;
    private int _pfRunning, _pfWorkers, _pfState;

    /// <summary>Every chunk of the image by blob position, once built (<see cref="BlobChunkIndex"/>): lets a cache miss
    /// at the end of a file also bring the next files' chunks. Null (the default) keeps amplification within files.</summary>
    public BlobChunkIndex? Neighbours
    {
        get => Volatile.Read(ref _neighbours);
        set => Volatile.Write(ref _neighbours, value);
    }

    private BlobChunkIndex? _neighbours;
    private long _crossFileChunks;

    /// <summary>Chunks fetched ahead from other files than the one read (cross-file amplification), for tests.</summary>
    internal long CrossFileChunks => Interlocked.Read(ref _crossFileChunks);

    public BlobCacheManager(IReadOnlyList<RafsBlobInfo> blobs, IBlobBackend backend, CacheOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(blobs);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _backend = backend;
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _cached = options.CacheDir is not null;
        _mergeCap = Math.Max(options.AmplificationBytes, 1 << 20);
        if (_cached) Directory.CreateDirectory(options.CacheDir!);
        _blobs = new BlobState[blobs.Count];
        try
        {
            for (int i = 0; i < blobs.Count; i++) _blobs[i] = OpenBlob(blobs[i]);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private BlobState OpenBlob(RafsBlobInfo info)
    {
        var b = new BlobState(info);
        uint cs = info.ChunkSize;
        if (cs < 4096 || cs > CacheOptions.MaxChunkSize || (cs & (cs - 1)) != 0) b.Unusable = $"chunk size {cs} is not a power of two in 4 KiB..16 MiB";
        else if (info.ChunkCount > MaxChunkCount) b.Unusable = $"chunk count {info.ChunkCount} above {MaxChunkCount}";
        else if (!LocalDirectoryBackend.IsValidBlobId(info.BlobId)) b.Unusable = "blob id is not a plain file name";
        // Compressed data may exceed the plain size a little (incompressible input with framing); nothing more.
        b.MaxCompressed = (uint)Math.Max((long)cs, Codec.MaxCompressedSize(info.Compressor, (int)Math.Min(cs, CacheOptions.MaxChunkSize))) + cs / 256 + 4096;
        if (!_cached || b.Unusable is not null) return b;

        b.Files = BlobCacheFiles.Acquire(_options.CacheDir!, info, _logger, out var refusal);
        b.Unusable = refusal;
        return b;
    }

    /// <summary>The shared cache files of blob <paramref name="blob"/> (null without a cache directory), for tests.</summary>
    internal BlobCacheFiles? FilesOf(int blob) => _blobs[blob].Files;

    /// <summary>The cache directory (<see cref="CacheOptions.CacheDir"/>), null when nothing is cached.</summary>
    public string? CacheDir => _options.CacheDir;

    /// <summary>
    /// The data files this cache keeps, by name (<c>&lt;blobId&gt;.blob.data</c>, as nydus's filecache lists them in
    /// <c>underlying_files</c>; nydus-snapshotter's blob GC keeps the blobs named there).
    /// </summary>
    public IReadOnlyList<string> DataFileNames
    {
        get
        {
            var names = new List<string>();
            foreach (var b in _blobs)
            {
                if (b?.Files is not null) names.Add(b.Info.BlobId + ".blob.data");
            }
            return names;
        }
    }

    public CacheMetrics Metrics
    {
        get
        {
            long ready = 0, total = 0;
            foreach (var b in _blobs)
            {
                if (b is null) continue;
                total += b.Info.ChunkCount;
                ready += b.Map?.ReadyCount ?? 0;
            }
            return new CacheMetrics(R(ref _reads), R(ref _readErrors), R(ref _hits), R(ref _misses), R(ref _pendingWaits),
                R(ref _fetched), R(ref _backendReads), R(ref _backendBytes), R(ref _digestErrors), R(ref _repairs),
                R(ref _pfTotal), R(ref _pfDone), R(ref _pfChunks), R(ref _pfBytes), R(ref _pfErrors), ready, total);
            static long R(ref long v) => Volatile.Read(ref v);
        }
    }

    /// <summary>Where the background prefetch stands (files, chunks and bytes done of what it queued so far).</summary>
    public PrefetchProgress PrefetchProgress
    {
        get
        {
            long began = Volatile.Read(ref _pfBeganMs), ended = Volatile.Read(ref _pfEndedMs);
            var state = Volatile.Read(ref _pfRunning) > 0 ? PrefetchState.Running : (PrefetchState)Volatile.Read(ref _pfState);
            return new PrefetchProgress(state, R(ref _pfTotal), R(ref _pfDone), R(ref _pfQueuedChunks), R(ref _pfChunks), R(ref _pfCached),
                R(ref _pfQueuedBytes), R(ref _pfBytes), R(ref _pfErrors), Volatile.Read(ref _pfWorkers),
                began == 0 ? null : DateTimeOffset.FromUnixTimeMilliseconds(began),
                ended == 0 || state == PrefetchState.Running ? null : DateTimeOffset.FromUnixTimeMilliseconds(ended));
            static long R(ref long v) => Volatile.Read(ref v);
        }
    }

    /// <summary>True when chunk <paramref name="c"/> is in the cache (holes count as ready).</summary>
    public bool IsCached(in RafsChunk c) =>
        c.IsHole || (c.BlobIndex < (uint)_blobs.Length && _blobs[c.BlobIndex].Map is { } m && m.IsReady(c.ChunkIndex));

    // ------------------------------------------------------------------ reads

    /// <summary>Convenience form of <see cref="ReadFile(IReadOnlyList{RafsChunk}, ulong, ulong, int, ReadOnlySpan{IoSegment})"/>
    /// for a managed buffer.</summary>
    public unsafe int ReadFile(IReadOnlyList<RafsChunk> chunks, ulong fileSize, ulong offset, Span<byte> destination)
    {
        fixed (byte* p = destination)
        {
            var one = new IoSegment(p, destination.Length);
            // SAFETY: `destination` stays pinned by `fixed` for the whole call; the iovec describes exactly it.
            return ReadFile(chunks, fileSize, offset, destination.Length, new ReadOnlySpan<IoSegment>(ref one));
        }
    }

    /// <summary>
    /// Reads up to <paramref name="length"/> bytes of a file at <paramref name="offset"/> into <paramref name="destination"/>
    /// (memory the caller keeps valid for the call, e.g. guest buffers of a FUSE READ). <paramref name="chunks"/> is the
    /// file's chunk list in file order, as RafsImage.GetChunks returns it. Holes read as zeros; reading at or past
    /// <paramref name="fileSize"/> returns 0. Returns the number of bytes read, or a negative errno
    /// (-EIO when a chunk cannot be fetched, fails its digest, or the image describes it impossibly).
    /// </summary>
    public int ReadFile(IReadOnlyList<RafsChunk> chunks, ulong fileSize, ulong offset, int length, ReadOnlySpan<IoSegment> destination)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        Interlocked.Increment(ref _reads);
        if (length < 0) return -EINVAL;
        long room = 0;
        foreach (var s in destination)
        {
            room += s.Length;
        }
        if (offset >= fileSize || length == 0 || room == 0) return 0;
        int n = (int)Math.Min(Math.Min((ulong)length, (ulong)room), fileSize - offset);
        _gate.Enter();
        try
        {
            int rc = ReadCore(chunks, offset, n, destination);
            if (rc == 0) return n;
            Interlocked.Increment(ref _readErrors);
            return -rc;
        }
        finally
        {
            _gate.Exit();
        }
    }

    /// <summary>Index of the chunk holding <paramref name="offset"/> (the last one starting at or before it), or -1.</summary>
    private static int FindFirst(IReadOnlyList<RafsChunk> chunks, ulong offset)
    {
        int lo = 0, hi = chunks.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + (hi - lo) / 2;
            if (chunks[mid].FileOffset <= offset) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }

    private int ReadCore(IReadOnlyList<RafsChunk> chunks, ulong offset, int n, ReadOnlySpan<IoSegment> destination)
    {
        ulong end = offset + (ulong)n;
        int first = FindFirst(chunks, offset);
        if (first < 0) return EIO; // the image gives the file a size but no chunk for this range
        // Chunks this read fetches itself are copied to the destination from the buffer they were verified in, rather
        // than written to the cache file and read back (a copy less per byte on a cold read with --cache-dir).
        Span<bool> delivered = _cached ? stackalloc bool[Math.Min(chunks.Count - first, MaxDelivered)] : default;
        if (_cached)
        {
            int rc = EnsureReady(chunks, first, end, new Delivery(destination, offset, end, first, delivered));
            if (rc != 0) return rc;
        }
        var cursor = new SegmentCursor(destination);
        ulong pos = offset;
        for (int i = first; pos < end; i++)
        {
            if (i >= chunks.Count) return EIO;
            var c = chunks[i];
            // Chunks must tile the file: a gap or overlap means a corrupt (or unsorted) chunk list.
            if (c.FileOffset > pos || c.UncompressedSize <= pos - c.FileOffset) return EIO;
            int inOff = (int)(pos - c.FileOffset);
            int len = (int)Math.Min(c.UncompressedSize - (ulong)inOff, end - pos);
            int rc;
            if (c.IsHole)
            {
                rc = cursor.TryZero(len) ? 0 : EIO;
            }
            else if (!Validate(c, out var b))
            {
                rc = EIO;
            }
            else if (!_cached)
            {
                rc = ReadDirect(c, b, inOff, len, ref cursor);
            }
            else if (i - first < delivered.Length && delivered[i - first])
            {
                rc = cursor.TrySkip(len) ? 0 : EIO; // already copied in by the fetch
            }
            else
            {
                rc = CopyFromCache(c, b, inOff, len, ref cursor);
                if (rc == Stale)
                {
                    // The cached copy is gone or bad: fetch this chunk again and copy once more.
                    rc = EnsureReady(chunks, i, c.FileOffset + 1);
                    if (rc == 0) rc = CopyFromCache(c, b, inOff, len, ref cursor);
                    if (rc == Stale) rc = EIO;
                }
            }
            if (rc != 0) return rc;
            pos += (ulong)len;
        }
        return 0;
    }

    /// <summary>Checks a chunk record against its blob; logs and returns false when it is impossible.</summary>
    private bool Validate(in RafsChunk c, out BlobState b)
    {
        string? why = CheckChunk(c, out b!);
        if (why is null) return true;
        StorageLog.BadChunk(_logger, b?.Info.BlobId ?? "?", c.ChunkIndex, why);
        return false;
    }

    /// <summary>Why a chunk record is impossible for its blob (everything in it comes from the image), or null.</summary>
    private string? CheckChunk(in RafsChunk c, out BlobState? b)
    {
        b = null;
        if (c.BlobIndex >= (uint)_blobs.Length) return $"blob index {c.BlobIndex} beyond the {_blobs.Length} blobs";
        b = _blobs[c.BlobIndex];
        if (b.Unusable is not null) return b.Unusable;
        if (c.UncompressedSize == 0 || c.UncompressedSize > b.Info.ChunkSize) return $"uncompressed size {c.UncompressedSize} vs chunk size {b.Info.ChunkSize}";
        if (c.CompressedSize == 0 || c.CompressedSize > b.MaxCompressed) return $"compressed size {c.CompressedSize}";
        if (!c.IsCompressed && c.CompressedSize != c.UncompressedSize) return "uncompressed chunk whose sizes differ";
        if ((c.Flags & (ChunkFlags.Encrypted | ChunkFlags.Batch)) != 0) return $"unsupported chunk flags {c.Flags}";
        if (c.CompressedOffset > (ulong)long.MaxValue - c.CompressedSize) return "compressed offset out of range";
        if (c.UncompressedOffset > (ulong)long.MaxValue - c.UncompressedSize) return "uncompressed offset out of range";
        // The cache file is sparse, but an offset far past the blob's own size would still grow it absurdly.
        if (b.Info.UncompressedSize != 0 && c.UncompressedOffset + c.UncompressedSize > AlignUp(b.Info.UncompressedSize))
            return $"uncompressed range beyond the blob's {b.Info.UncompressedSize} bytes";
        if (_cached && c.ChunkIndex >= b.Info.ChunkCount) return $"chunk index beyond the blob's {b.Info.ChunkCount} chunks";
        return null;
    }

    private static ulong AlignUp(ulong v) => v > ulong.MaxValue - 4095 ? ulong.MaxValue : (v + 4095) & ~4095UL;

    /// <summary>Backend read with the cache's own accounting; returns 0 or a positive errno (logged).</summary>
    private int ReadBackend(BlobState b, ulong offset, Span<byte> dst)
    {
        Interlocked.Increment(ref _backendReads);
        int rc;
        try
        {
            rc = _backend.ReadAt(b.Info.BlobId, offset, dst);
        }
        catch (Exception e) when (e is IOException or TimeoutException or OperationCanceledException or UnauthorizedAccessException)
        {
            rc = EIO; // a backend should return errno results; a stray exception is still only a failed read
        }
        if (rc == 0) Interlocked.Add(ref _backendBytes, dst.Length);
        else StorageLog.BackendFailed(_logger, b.Info.BlobId, offset, dst.Length, rc);
        return rc;
    }

    /// <summary>Decompresses a chunk into <paramref name="dst"/> (its uncompressed size) and checks its digest.</summary>
    private int DecodeVerify(in RafsChunk c, BlobState b, ReadOnlySpan<byte> src, Span<byte> dst)
    {
        bool ok = c.IsCompressed ? Codec.Decompress(c.Compressor, src, dst) : src.Length == dst.Length;
        if (!c.IsCompressed && ok) src.CopyTo(dst);
        if (!ok)
        {
            Interlocked.Increment(ref _digestErrors);
            StorageLog.DecompressFailed(_logger, b.Info.BlobId, c.ChunkIndex, Codec.Name(c.Compressor));
            return EIO;
        }
        return Verify(c, b, dst);
    }

    /// <summary>Checks a chunk's plain data against its digest; logs and counts a mismatch.</summary>
    private int Verify(in RafsChunk c, BlobState b, ReadOnlySpan<byte> plain)
    {
        string actual = "(wrong size)";
        if (plain.Length == (int)c.UncompressedSize && DigestMatches(c, b, plain, out actual)) return 0;
        Interlocked.Increment(ref _digestErrors);
        var want = c.Digest;
        StorageLog.DigestMismatch(_logger, b.Info.BlobId, c.ChunkIndex, actual, Convert.ToHexStringLower(want));
        return EIO;
    }

    private static bool DigestMatches(in RafsChunk c, BlobState b, ReadOnlySpan<byte> data, out string actual)
    {
        Span<byte> d = stackalloc byte[Codec.DigestSize];
        Codec.Hash(b.Info.Digester, data, d);
        var want = c.Digest;
        bool ok = d.SequenceEqual(want);
        actual = ok ? "" : Convert.ToHexStringLower(d);
        return ok;
    }

    /// <summary>No cache: fetch, verify and decompress the chunk, then copy the wanted part. When the read wants the
    /// whole chunk and the destination holds it in one piece (a whole-file read of a small file, or a chunk-sized
    /// buffer such as RafsFs's decoded-chunk slots), it is decompressed straight there, or for a chunk stored
    /// uncompressed (incompressible data) read from the backend straight there, saving a copy of every byte; should it
    /// then fail to decode or verify, the destination is zeroed again so no unverified byte stays in it.</summary>
    private int ReadDirect(in RafsChunk c, BlobState b, int inOff, int len, ref SegmentCursor cursor)
    {
        Interlocked.Increment(ref _misses);
        Span<byte> direct = inOff == 0 && len == (int)c.UncompressedSize ? cursor.Contiguous(len) : default;
        if (!c.IsCompressed && !direct.IsEmpty)
        {
            // CheckChunk made sure the stored size is the plain size.
            int rc = ReadBackend(b, c.CompressedOffset, direct);
            if (rc == 0) rc = Verify(c, b, direct);
            if (rc != 0)
            {
                direct.Clear();
                return EIO;
            }
            Interlocked.Increment(ref _fetched);
            return cursor.TrySkip(len) ? 0 : EIO;
        }
        byte[] comp = ArrayPool<byte>.Shared.Rent((int)c.CompressedSize);
        byte[]? plain = null;
        try
        {
            var src = comp.AsSpan(0, (int)c.CompressedSize);
            int rc = ReadBackend(b, c.CompressedOffset, src);
            if (rc != 0) return EIO;
            Span<byte> dst;
            if (!c.IsCompressed)
            {
                dst = src; // verified where it was read
                rc = Verify(c, b, dst);
            }
            else
            {
                dst = direct.IsEmpty ? (plain = ArrayPool<byte>.Shared.Rent((int)c.UncompressedSize)).AsSpan(0, (int)c.UncompressedSize) : direct;
                rc = DecodeVerify(c, b, src, dst);
            }
            if (rc != 0)
            {
                if (!direct.IsEmpty) direct.Clear();
                return rc;
            }
            Interlocked.Increment(ref _fetched);
            bool moved = dst == direct ? cursor.TrySkip(len) : cursor.TryWrite(dst.Slice(inOff, len));
            return moved ? 0 : EIO;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(comp);
            if (plain is not null) ArrayPool<byte>.Shared.Return(plain);
        }
    }

    /// <summary>
    /// Copies part of a ready chunk from the cache file. With verify=fetch the bytes go straight from the file into the
    /// destination (preadv); with verify=always the whole chunk is read and checked first. Returns <see cref="Stale"/>
    /// (cursor unmoved) when the chunk is not ready or its cached copy is short or corrupt.
    /// </summary>
    private unsafe int CopyFromCache(in RafsChunk c, BlobState b, int inOff, int len, ref SegmentCursor cursor)
    {
        var map = b.Map!;
        if (!map.IsReady(c.ChunkIndex)) return Stale;
        long fileOff = (long)c.UncompressedOffset;
        if (_options.Verify == VerifyMode.Always)
        {
            byte[] buf = ArrayPool<byte>.Shared.Rent((int)c.UncompressedSize);
            try
            {
                var whole = buf.AsSpan(0, (int)c.UncompressedSize);
                int rc = PreadFull(b, whole, fileOff);
                if (rc == Stale) return Corrupt(c, b, "cache file shorter than the chunk");
                if (rc != 0) return rc;
                if (!DigestMatches(c, b, whole, out var actual)) return Corrupt(c, b, $"digest {actual}");
                return cursor.TryWrite(whole.Slice(inOff, len)) ? 0 : EIO;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
            }
        }

        Span<IoSegment> iov = stackalloc IoSegment[16];
        int count = cursor.Slice(len, iov);
        if (count < 0)
        {
            // A destination in many small pieces: bounce through one buffer rather than many syscalls.
            byte[] buf = ArrayPool<byte>.Shared.Rent(len);
            try
            {
                int rc = PreadFull(b, buf.AsSpan(0, len), fileOff + inOff);
                if (rc == Stale) return Corrupt(c, b, "cache file shorter than the chunk");
                if (rc != 0) return rc;
                return cursor.TryWrite(buf.AsSpan(0, len)) ? 0 : EIO;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
            }
        }
        int fd = (int)b.Data!.DangerousGetHandle();
        int done = 0, first = 0;
        while (done < len)
        {
            nint r;
            fixed (IoSegment* p = iov)
            {
                // SAFETY: iov[first..count] describe destination memory the caller keeps valid; fd is open until Dispose.
                r = Interop.preadv(fd, p + first, count - first, fileOff + inOff + done);
            }
            if (r < 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                if (errno == EINTR) continue;
                StorageLog.CacheIoFailed(_logger, b.DataPath, "preadv", $"errno {errno}");
                return EIO;
            }
            if (r == 0) return Corrupt(c, b, "cache file shorter than the chunk");
            done += (int)r;
            // Drop the iovecs this read filled and trim the one it stopped in.
            long left = r;
            while (first < count && left >= iov[first].Length) { left -= (long)iov[first].Length; first++; }
            if (left > 0)
            {
                iov[first].Pointer += left;
                iov[first].Length -= (int)left;
            }
        }
        return cursor.TrySkip(len) ? 0 : EIO;
    }

    private int PreadFull(BlobState b, Span<byte> dst, long fileOff)
    {
        int done = 0;
        try
        {
            while (done < dst.Length)
            {
                int r = RandomAccess.Read(b.Data!, dst[done..], fileOff + done);
                if (r == 0) return Stale; // short file: the caller forgets the chunk and fetches it again
                done += r;
            }
        }
        catch (IOException e)
        {
            StorageLog.CacheIoFailed(_logger, b.DataPath, "pread", e.Message);
            return EIO;
        }
        return 0;
    }

    private int Corrupt(in RafsChunk c, BlobState b, string reason)
    {
        StorageLog.CacheCorrupt(_logger, b.Info.BlobId, c.ChunkIndex, reason);
        Interlocked.Increment(ref _repairs);
        b.Map!.ClearReady(c.ChunkIndex);
        return Stale;
    }

    // ------------------------------------------------------------------ fetching

    /// <summary>
    /// Makes every chunk of <paramref name="chunks"/> from index <paramref name="first"/> that starts before
    /// <paramref name="end"/> ready: claims the missing ones, extends the last claim with following missing chunks
    /// (amplification), fetches them in merged backend reads, then waits for chunks other readers are fetching.
    /// Returns 0 or the errno of the first needed chunk that failed; a chunk another reader failed to fetch is tried
    /// once more here.
    /// </summary>
    private int EnsureReady(IReadOnlyList<RafsChunk> chunks, int first, ulong end, bool retryFailedWaits = true) =>
        EnsureReady(chunks, first, end, default, retryFailedWaits);

    private int EnsureReady(IReadOnlyList<RafsChunk> chunks, int first, ulong end, Delivery delivery, bool retryFailedWaits = true)
    {
        List<(int Index, Inflight Flight)>? claimed = null;
        List<(int Index, Inflight Flight)>? waits = null;
        int rc = 0, lastNeeded = -1;
        for (int i = first; i < chunks.Count && chunks[i].FileOffset < end; i++)
        {
            var c = chunks[i];
            lastNeeded = i;
            if (c.IsHole) continue;
            if (!Validate(c, out var b)) { rc = EIO; break; }
            switch (b.Map!.TryClaim(c.ChunkIndex, out var f))
            {
                case ClaimResult.Ready:
                    Interlocked.Increment(ref _hits);
                    break;
                case ClaimResult.Pending:
                    Interlocked.Increment(ref _pendingWaits);
                    (waits ??= new()).Add((i, f!));
                    break;
                default:
                    Interlocked.Increment(ref _misses);
                    (claimed ??= new()).Add((i, f!));
                    break;
            }
        }
        if (claimed is not null)
        {
            // Every claim must be completed, so fetch them even if a later chunk was refused.
            if (rc == 0 && claimed[^1].Index == lastNeeded) chunks = Amplify(chunks, claimed);
            int frc = FetchClaimed(chunks, claimed, lastNeeded, prefetch: false, delivery);
            if (rc == 0) rc = frc;
        }
        if (waits is not null)
        {
            foreach (var (index, flight) in waits)
            {
                int r = flight.Wait();
                // The other fetcher (often a background prefetch) failed: try once ourselves before failing the read,
                // so a transient backend error there does not become a guest EIO here.
                if (r != 0 && retryFailedWaits) r = EnsureReady(chunks, index, chunks[index].FileOffset + 1, retryFailedWaits: false);
                if (rc == 0 && r != 0) rc = r;
            }
        }
        return rc;
    }

    /// <summary>
    /// Claims the missing chunks that follow the last claimed one while they continue it in the blob, up to the
    /// amplification size (nydus amplify_io): one backend read then brings what the next reads will want. At the end of
    /// the file the run goes on into the chunks the blob holds next (the next files of the directory, as the builder laid
    /// them out) when <see cref="Neighbours"/> knows them; the list returned then has those after the file's own, so
    /// claim indexes keep pointing into it.
    /// </summary>
    private IReadOnlyList<RafsChunk> Amplify(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed)
    {
        long budget = _options.AmplificationBytes;
        var prev = chunks[claimed[^1].Index];
        for (int j = claimed[^1].Index + 1; j < chunks.Count; j++)
        {
            var c = chunks[j];
            if (c.IsHole) continue;
            if (budget <= 0 || c.BlobIndex != prev.BlobIndex || c.CompressedOffset != prev.CompressedOffset + prev.CompressedSize) return chunks;
            if (c.CompressedSize > budget || !Validate(c, out var b)) return chunks;
            if (!b.Map!.TryClaimMissing(c.ChunkIndex, out var f)) return chunks;
            claimed.Add((j, f!));
            budget -= c.CompressedSize;
            prev = c;
        }
        if (Neighbours is not { } index) return chunks;
        List<RafsChunk>? more = null;
        for (uint ci = prev.ChunkIndex + 1; budget > 0 && ci != 0 && index.TryGet(prev.BlobIndex, ci, out var c); ci++)
        {
            if (c.CompressedOffset != prev.CompressedOffset + prev.CompressedSize || c.CompressedSize > budget || !Validate(c, out var b)) break;
            if (!b.Map!.TryClaimMissing(c.ChunkIndex, out var f)) break;
            more ??= new();
            claimed.Add((chunks.Count + more.Count, f!));
            more.Add(c);
            budget -= c.CompressedSize;
            prev = c;
        }
        if (more is not null) Interlocked.Add(ref _crossFileChunks, more.Count);
        return more is null ? chunks : new ChunkListWithTail(chunks, more);
    }

    /// <summary>A file's chunk list followed by chunks of other files (a view; nothing is copied).</summary>
    private sealed class ChunkListWithTail(IReadOnlyList<RafsChunk> head, List<RafsChunk> tail) : IReadOnlyList<RafsChunk>
    {
        public int Count => head.Count + tail.Count;
        public RafsChunk this[int index] => index < head.Count ? head[index] : tail[index - head.Count];
        public IEnumerator<RafsChunk> GetEnumerator() => head.Concat(tail).GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>Fetches claimed chunks, merging neighbours (same blob, contiguous compressed ranges) into one backend
    /// read each, and completes every claim. Returns the first errno among chunks at or before <paramref name="lastNeeded"/>.</summary>
    private int FetchClaimed(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int lastNeeded, bool prefetch) =>
        FetchClaimed(chunks, claimed, lastNeeded, prefetch, default);

    private int FetchClaimed(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int lastNeeded, bool prefetch, Delivery delivery)
    {
        int rc = 0;
        int start = 0;
        while (start < claimed.Count)
        {
            var head = chunks[claimed[start].Index];
            ulong runEnd = head.CompressedOffset + head.CompressedSize;
            int stop = start + 1;
            while (stop < claimed.Count)
            {
                var c = chunks[claimed[stop].Index];
                if (c.BlobIndex != head.BlobIndex || c.CompressedOffset != runEnd || runEnd + c.CompressedSize - head.CompressedOffset > (ulong)_mergeCap) break;
                runEnd += c.CompressedSize;
                stop++;
            }
            int r = FetchRun(chunks, claimed, start, stop, lastNeeded, prefetch, delivery);
            if (rc == 0 && r != 0) rc = r;
            start = stop;
        }
        return rc;
    }

    /// <summary>Where a reader wants the chunks it fetches itself: its destination, the file range it covers, and which
    /// chunks (by index from <see cref="First"/>) have been copied there.</summary>
    private readonly ref struct Delivery(ReadOnlySpan<IoSegment> destination, ulong offset, ulong end, int first, Span<bool> done)
    {
        private readonly ReadOnlySpan<IoSegment> _destination = destination;
        private readonly Span<bool> _done = done;
        public int First { get; } = first;

        /// <summary>Copies the part of chunk <paramref name="index"/> (verified plain data) the reader wants.</summary>
        public void Deliver(int index, in RafsChunk c, ReadOnlySpan<byte> plain)
        {
            int slot = index - First;
            if (slot < 0 || slot >= _done.Length) return;
            ulong from = Math.Max(c.FileOffset, offset), to = Math.Min(c.FileOffset + (ulong)plain.Length, end);
            if (from >= to) return;
            var cursor = new SegmentCursor(_destination);
            // Within the destination: [from - offset, to - offset) lies inside [0, end - offset), which the caller sized.
            if (cursor.TrySkip((long)(from - offset)) && cursor.TryWrite(plain.Slice((int)(from - c.FileOffset), (int)(to - from))))
            {
                _done[slot] = true;
            }
        }
    }

    /// <summary>Most chunks one read tracks for <see cref="Delivery"/> (a 1 MiB read of 4 KiB chunks, plus one).</summary>
    private const int MaxDelivered = 260;

    private int FetchRun(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, int stop, int lastNeeded, bool prefetch, Delivery delivery)
    {
        var head = chunks[claimed[start].Index];
        var b = _blobs[head.BlobIndex];
        var tail = chunks[claimed[stop - 1].Index];
        int total = (int)(tail.CompressedOffset + tail.CompressedSize - head.CompressedOffset);
        var results = new int[stop - start];
        Array.Fill(results, EIO);
        byte[] comp = ArrayPool<byte>.Shared.Rent(total);
        byte[] plain = ArrayPool<byte>.Shared.Rent((int)b.Info.ChunkSize);
        try
        {
            if (ReadBackend(b, head.CompressedOffset, comp.AsSpan(0, total)) != 0) return ErrorOfNeeded(claimed, start, results, lastNeeded);
            int ok = 0;
            long okBytes = 0;
            for (int k = start; k < stop; k++)
            {
                var c = chunks[claimed[k].Index];
                var src = comp.AsSpan((int)(c.CompressedOffset - head.CompressedOffset), (int)c.CompressedSize);
                // A chunk stored uncompressed is checked and written from where it was read.
                var dst = c.IsCompressed ? plain.AsSpan(0, (int)c.UncompressedSize) : src;
                if ((c.IsCompressed ? DecodeVerify(c, b, src, dst) : Verify(c, b, src)) != 0) continue;
                try
                {
                    RandomAccess.Write(b.Data!, dst, (long)c.UncompressedOffset);
                }
                catch (IOException e)
                {
                    StorageLog.CacheIoFailed(_logger, b.DataPath, "pwrite", e.Message);
                    continue;
                }
                results[k - start] = 0;
                delivery.Deliver(claimed[k].Index, c, dst);
                ok++;
                okBytes += c.CompressedSize;
            }
            if (ok == 0) return ErrorOfNeeded(claimed, start, results, lastNeeded);
            // Ready for readers now; durable (fdatasync, then the ready bits, never the other way round) with the
            // blob's next group commit (BlobCacheFiles.Commit).
            Span<uint> ready = ok <= 256 ? stackalloc uint[ok] : new uint[ok];
            int n = 0;
            long plainBytes = 0;
            for (int k = start; k < stop; k++)
            {
                if (results[k - start] != 0) continue;
                ready[n++] = chunks[claimed[k].Index].ChunkIndex;
                plainBytes += chunks[claimed[k].Index].UncompressedSize;
            }
            b.Files!.Commit(ready, plainBytes);
            Interlocked.Add(ref _fetched, ok);
            if (prefetch)
            {
                Interlocked.Add(ref _pfChunks, ok);
                Interlocked.Add(ref _pfBytes, okBytes);
            }
            return ErrorOfNeeded(claimed, start, results, lastNeeded);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(comp);
            ArrayPool<byte>.Shared.Return(plain);
            for (int k = start; k < stop; k++)
            {
                if (prefetch && results[k - start] != 0) Interlocked.Increment(ref _pfErrors);
                b.Map!.Complete(chunks[claimed[k].Index].ChunkIndex, claimed[k].Flight, results[k - start]);
            }
        }
    }

    private static int ErrorOfNeeded(List<(int Index, Inflight Flight)> claimed, int start, int[] results, int lastNeeded)
    {
        for (int k = 0; k < results.Length; k++)
            if (results[k] != 0 && claimed[start + k].Index <= lastNeeded) return results[k];
        return 0;
    }

    // ------------------------------------------------------------------ prefetch

    /// <summary>
    /// Fetches the chunks of <paramref name="files"/> into the cache in the background, at most
    /// <see cref="PrefetchOptions.MaxConcurrency"/> files at once and <see cref="PrefetchOptions.BandwidthBytesPerSecond"/>
    /// backend bytes per second, starting no backend read while a guest read is in progress. Chunk failures are logged
    /// and counted, not thrown. Does nothing without a cache directory. Cancelling stops it (OperationCanceledException).
    /// </summary>
    public async Task PrefetchAsync(IEnumerable<IReadOnlyList<RafsChunk>> files, PrefetchOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!_cached) return;
        // Files are pulled one at a time, so a lazy plan (every file of a large image) never sits in memory whole.
        if (files is IReadOnlyCollection<IReadOnlyList<RafsChunk>> known) Interlocked.Add(ref _pfTotal, known.Count);
        bool countAsPulled = files is not IReadOnlyCollection<IReadOnlyList<RafsChunk>>;
        var limiter = options.BandwidthBytesPerSecond > 0 ? new RateLimiter(options.BandwidthBytesPerSecond, options.TimeProvider) : null;
        long before = Volatile.Read(ref _pfChunks), beforeBytes = Volatile.Read(ref _pfBytes), beforeErrors = Volatile.Read(ref _pfErrors);
        long done = 0;
        using var source = files.GetEnumerator();
        var pull = new Lock();
        IReadOnlyList<RafsChunk>? Next()
        {
            lock (pull)
            {
                if (!source.MoveNext()) return null;
                if (countAsPulled) Interlocked.Increment(ref _pfTotal);
                return source.Current;
            }
        }
        BeginPrefetch(options.MaxConcurrency);
        var outcome = PrefetchState.Stopped;
        var workers = new Task[options.MaxConcurrency];
        for (int w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                while (Next() is { } file)
                {
                    CountQueued(file);
                    await PrefetchFileAsync(file, limiter, ct).ConfigureAwait(false);
                    Interlocked.Increment(ref _pfDone);
                    Interlocked.Increment(ref done);
                }
            }, ct);
        }
        try
        {
            await Task.WhenAll(workers).ConfigureAwait(false);
            outcome = PrefetchState.Finished;
        }
        finally
        {
            EndPrefetch(options.MaxConcurrency, outcome);
        }
        StorageLog.PrefetchDone(_logger, done, Volatile.Read(ref _pfChunks) - before, Volatile.Read(ref _pfBytes) - beforeBytes,
            Volatile.Read(ref _pfErrors) - beforeErrors);
    }

    private void BeginPrefetch(int workers)
    {
        Interlocked.CompareExchange(ref _pfBeganMs, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), 0);
        Interlocked.Add(ref _pfWorkers, workers);
        Interlocked.Increment(ref _pfRunning);
    }

    private void EndPrefetch(int workers, PrefetchState outcome)
    {
        Volatile.Write(ref _pfState, (int)outcome);
        Volatile.Write(ref _pfEndedMs, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        Interlocked.Add(ref _pfWorkers, -workers);
        Interlocked.Decrement(ref _pfRunning);
    }

    /// <summary>Adds a file's data chunks to the prefetch totals as the walk reaches it.</summary>
    private void CountQueued(IReadOnlyList<RafsChunk> chunks)
    {
        long n = 0, bytes = 0;
        for (int i = 0; i < chunks.Count; i++)
        {
            var c = chunks[i];
            if (c.IsHole) continue;
            n++;
            bytes += c.CompressedSize;
        }
        Interlocked.Add(ref _pfQueuedChunks, n);
        Interlocked.Add(ref _pfQueuedBytes, bytes);
    }

    private async Task PrefetchFileAsync(IReadOnlyList<RafsChunk> chunks, RateLimiter? limiter, CancellationToken ct)
    {
        var claimed = new List<(int Index, Inflight Flight)>();
        int i = 0;
        while (i < chunks.Count)
        {
            ct.ThrowIfCancellationRequested();
            var c = chunks[i];
            if (c.IsHole || !ValidateQuiet(c)) { i++; continue; }
            if (IsCached(c)) { Interlocked.Increment(ref _pfCached); i++; continue; }
            // Plan the run before claiming anything: a claimed chunk must not sit behind the bandwidth limit, since a
            // guest read of it would wait too.
            int stop = PlanRun(chunks, i, out long bytes);
            await _gate.WaitIdleAsync(ct).ConfigureAwait(false);
            if (limiter is not null) await limiter.AcquireAsync(bytes, ct).ConfigureAwait(false);
            await _gate.WaitIdleAsync(ct).ConfigureAwait(false);
            claimed.Clear();
            for (int k = i; k < stop; k++)
            {
                var x = chunks[k];
                if (x.IsHole) continue;
                if (!_blobs[x.BlobIndex].Map!.TryClaimMissing(x.ChunkIndex, out var f)) break; // a guest read got there first
                claimed.Add((k, f!));
            }
            if (claimed.Count == 0) { i++; continue; }
            FetchClaimed(chunks, claimed, int.MaxValue, prefetch: true);
            i = claimed[^1].Index + 1;
        }
    }

    /// <summary>Impossible chunks are logged by the guest read that meets them; prefetch just skips them.</summary>
    private bool ValidateQuiet(in RafsChunk c) => CheckChunk(c, out _) is null;

    /// <summary>End (exclusive) of the run of missing chunks starting at <paramref name="i"/> that one backend read can
    /// bring: same blob, contiguous compressed ranges, within the amplification size (at least one chunk).</summary>
    private int PlanRun(IReadOnlyList<RafsChunk> chunks, int i, out long bytes)
    {
        var prev = chunks[i];
        bytes = prev.CompressedSize;
        int j = i + 1;
        for (; j < chunks.Count; j++)
        {
            var c = chunks[j];
            if (c.IsHole) continue;
            if (c.BlobIndex != prev.BlobIndex || c.CompressedOffset != prev.CompressedOffset + prev.CompressedSize) break;
            if (bytes + c.CompressedSize > _options.AmplificationBytes || IsCached(c) || !ValidateQuiet(c)) break;
            bytes += c.CompressedSize;
            prev = c;
        }
        return j;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var b in _blobs) b?.Files?.Release();
    }
}
