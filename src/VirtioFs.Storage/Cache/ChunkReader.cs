using System.Buffers;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Storage.Cache;

/// <summary>
/// The read path of a cache: maps a file range to its chunks, makes them ready through the <see cref="ChunkFetcher"/>,
/// and copies them into the destination from the cache file (the hit path, <c>preadv</c> straight into the caller's
/// memory; with <see cref="VerifyMode.Always"/> checked first) or, without a cache directory, straight from the backend.
/// A cached copy found short or corrupt is forgotten and fetched again.
/// </summary>
internal sealed class ChunkReader(CacheContext context, ChunkFetcher fetcher, ChunkVerifier verifier)
{
    private const int EIO = Errno.EIO, EINTR = Errno.EINTR;

    /// <summary>Internal result: the cached copy is missing or proved corrupt; fetch it again.</summary>
    private const int Stale = -1;

    /// <summary>Reads <paramref name="length"/> bytes (already clamped to the file and the destination) at
    /// <paramref name="offset"/>; returns 0 or a positive errno. <paramref name="ownMemory"/>: the destination is this
    /// process's memory, not a guest's (see <see cref="Delivery"/>).</summary>
    public int ReadCore(IReadOnlyList<RafsChunk> chunks, ulong offset, int length, ReadOnlySpan<IoSegment> destination, bool ownMemory)
    {
        ulong end = offset + (ulong)length;
        int first = FindFirst(chunks, offset);
        if (first < 0) return EIO; // the image gives the file a size but no chunk for this range
        bool cached = context.Cached;
        Span<bool> delivered = cached ? stackalloc bool[Math.Min(chunks.Count - first, Delivery.MaxTracked)] : default;
        if (cached)
        {
            int rc = fetcher.EnsureReady(chunks, first, end, new Delivery(destination, offset, end, first, delivered, ownMemory));
            if (rc != 0) return rc;
        }
        var cursor = new SegmentCursor(destination);
        ulong position = offset;
        for (int i = first; position < end; i++)
        {
            if (i >= chunks.Count) return EIO;
            var chunk = chunks[i];
            // Chunks must tile the file: a gap or overlap means a corrupt (or unsorted) chunk list.
            if (chunk.FileOffset > position || chunk.UncompressedSize <= position - chunk.FileOffset) return EIO;
            int inChunk = (int)(position - chunk.FileOffset);
            int take = (int)Math.Min(chunk.UncompressedSize - (ulong)inChunk, end - position);
            int rc;
            if (chunk.IsHole)
            {
                rc = cursor.TryZero(take) ? 0 : EIO;
            }
            else if (!context.Validate(chunk, out var blob))
            {
                rc = EIO;
            }
            else if (!cached)
            {
                rc = ReadDirect(chunk, blob, inChunk, take, ref cursor);
            }
            else if (i - first < delivered.Length && delivered[i - first])
            {
                rc = cursor.TrySkip(take) ? 0 : EIO; // already copied in by the fetch
            }
            else
            {
                rc = CopyFromCache(chunk, blob, inChunk, take, ref cursor);
                if (rc == Stale)
                {
                    // The cached copy is gone or bad: fetch this chunk again and copy once more.
                    rc = fetcher.EnsureReady(chunks, i, chunk.FileOffset + 1);
                    if (rc == 0) rc = CopyFromCache(chunk, blob, inChunk, take, ref cursor);
                    if (rc == Stale) rc = EIO;
                }
            }
            if (rc != 0) return rc;
            position += (ulong)take;
        }
        return 0;
    }

    /// <summary>Index of the chunk holding <paramref name="offset"/> (the last one starting at or before it), or -1.</summary>
    public static int FindFirst(IReadOnlyList<RafsChunk> chunks, ulong offset)
    {
        int low = 0, high = chunks.Count - 1, found = -1;
        while (low <= high)
        {
            int middle = low + (high - low) / 2;
            if (chunks[middle].FileOffset <= offset) { found = middle; low = middle + 1; }
            else high = middle - 1;
        }
        return found;
    }

    /// <summary>No cache: fetch, verify and decompress the chunk, then copy the wanted part. When the read wants the
    /// whole chunk and the destination holds it in one piece (a whole-file read of a small file, or a chunk-sized
    /// buffer such as RafsFs's decoded-chunk slots), it is decompressed straight there, or for a chunk stored
    /// uncompressed (incompressible data) read from the backend straight there, saving a copy of every byte; should it
    /// then fail to decode or verify, the destination is zeroed again so no unverified byte stays in it.</summary>
    private int ReadDirect(in RafsChunk chunk, BlobState blob, int inChunk, int take, ref SegmentCursor cursor)
    {
        Interlocked.Increment(ref context.Counters.Misses);
        Span<byte> direct = inChunk == 0 && take == (int)chunk.UncompressedSize ? cursor.Contiguous(take) : default;
        // A local blob is decoded (or, stored plain, checked and copied) where it lies in the page cache, mapped: no
        // pread copy, and the kernel's copy out of the page cache was the largest item of a cold read's profile.
        bool mapped = fetcher.TryMapBackend(blob, chunk.CompressedOffset, (int)chunk.CompressedSize, out var mapping);
        if (!mapped && !chunk.IsCompressed && !direct.IsEmpty)
        {
            // CheckChunk made sure the stored size is the plain size.
            int rc = fetcher.ReadBackend(blob, chunk.CompressedOffset, direct);
            if (rc == 0) rc = verifier.Verify(chunk, blob, direct);
            if (rc != 0)
            {
                direct.Clear();
                return EIO;
            }
            Interlocked.Increment(ref context.Counters.ChunksFetched);
            return cursor.TrySkip(take) ? 0 : EIO;
        }
        byte[]? stored = mapped ? null : ArrayPool<byte>.Shared.Rent((int)chunk.CompressedSize);
        byte[]? plainBuffer = null;
        try
        {
            if (!mapped && fetcher.ReadBackend(blob, chunk.CompressedOffset, stored.AsSpan(0, (int)chunk.CompressedSize)) != 0) return EIO;
            ReadOnlySpan<byte> source = mapped ? mapping.Data : stored.AsSpan(0, (int)chunk.CompressedSize);
            ReadOnlySpan<byte> plain;
            int rc;
            if (!chunk.IsCompressed)
            {
                plain = source; // verified where it was read
                rc = verifier.Verify(chunk, blob, plain);
            }
            else
            {
                var into = direct.IsEmpty
                    ? (plainBuffer = ArrayPool<byte>.Shared.Rent((int)chunk.UncompressedSize)).AsSpan(0, (int)chunk.UncompressedSize)
                    : direct;
                rc = verifier.DecodeVerify(chunk, blob, source, into);
                plain = into;
            }
            if (rc != 0)
            {
                if (!direct.IsEmpty) direct.Clear();
                return rc;
            }
            Interlocked.Increment(ref context.Counters.ChunksFetched);
            bool moved = plain == direct ? cursor.TrySkip(take) : cursor.TryWrite(plain.Slice(inChunk, take));
            return moved ? 0 : EIO;
        }
        finally
        {
            if (mapped) mapping.Dispose();
            else ArrayPool<byte>.Shared.Return(stored!);
            if (plainBuffer is not null) ArrayPool<byte>.Shared.Return(plainBuffer);
        }
    }

    /// <summary>
    /// Copies part of a ready chunk from the cache file. With verify=fetch the bytes go straight from the file into the
    /// destination (preadv); with verify=always the whole chunk is read and checked first. Returns <see cref="Stale"/>
    /// (cursor unmoved) when the chunk is not ready or its cached copy is short or corrupt.
    /// </summary>
    private unsafe int CopyFromCache(in RafsChunk chunk, BlobState blob, int inChunk, int take, ref SegmentCursor cursor)
    {
        if (!blob.Map!.IsReady(chunk.ChunkIndex)) return Stale;
        long fileOffset = (long)chunk.UncompressedOffset;
        // The cache file has no readahead (PageCacheAdvice): a read from the start of a chunk asks for the whole chunk
        // and the window past it, so a sequential reader finds the rest already read or in flight.
        if (inChunk == 0) PageCacheAdvice.WillNeed(blob.Data!, fileOffset, chunk.UncompressedSize);
        if (context.Options.Verify == VerifyMode.Always)
        {
            byte[] buffer = ArrayPool<byte>.Shared.Rent((int)chunk.UncompressedSize);
            try
            {
                var whole = buffer.AsSpan(0, (int)chunk.UncompressedSize);
                int rc = PreadFull(blob, whole, fileOffset);
                if (rc == Stale) return Corrupt(chunk, blob, "cache file shorter than the chunk");
                if (rc != 0) return rc;
                if (!ChunkVerifier.DigestMatches(chunk, blob, whole, out var actual)) return Corrupt(chunk, blob, $"digest {actual}");
                return cursor.TryWrite(whole.Slice(inChunk, take)) ? 0 : EIO;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        // Up to 16 pieces: preadv straight into them; more: one pread into a buffer and a copy out. Measured on a guest
        // reading image-read.sh's 400 MB tree from a warm cache (one 4 KiB page per descriptor, 3-4 alternating runs,
        // vfsd CPU medians): 0.24 s as here, 0.27 s bouncing every READ, 0.31-0.34 s with preadv of up to 260 pieces
        // (the kernel's copy into many page-sized pieces costs more than our one copy out of a buffer in cache).
        Span<IoSegment> iov = stackalloc IoSegment[16];
        int count = cursor.Slice(take, iov);
        if (count < 0)
        {
            // A destination in many small pieces: bounce through one buffer rather than many syscalls.
            byte[] buffer = ArrayPool<byte>.Shared.Rent(take);
            try
            {
                int rc = PreadFull(blob, buffer.AsSpan(0, take), fileOffset + inChunk);
                if (rc == Stale) return Corrupt(chunk, blob, "cache file shorter than the chunk");
                if (rc != 0) return rc;
                return cursor.TryWrite(buffer.AsSpan(0, take)) ? 0 : EIO;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
        int fd = (int)blob.Data!.DangerousGetHandle();
        int done = 0, firstSegment = 0;
        while (done < take)
        {
            nint read;
            fixed (IoSegment* segments = iov)
            {
                // SAFETY: iov[firstSegment..count] describe destination memory the caller keeps valid for the call
                // (cursor.Slice cut them from it); fd stays open until the manager is disposed.
                read = Interop.preadv(fd, segments + firstSegment, count - firstSegment, fileOffset + inChunk + done);
            }
            if (read < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR) continue;
                StorageLog.CacheIoFailed(context.Logger, blob.DataPath, "preadv", $"errno {errno}");
                return EIO;
            }
            if (read == 0) return Corrupt(chunk, blob, "cache file shorter than the chunk");
            done += (int)read;
            // Drop the iovecs this read filled and trim the one it stopped in.
            long left = read;
            while (firstSegment < count && left >= iov[firstSegment].Length) { left -= (long)iov[firstSegment].Length; firstSegment++; }
            if (left > 0)
            {
                iov[firstSegment].Pointer += left;
                iov[firstSegment].Length -= (int)left;
            }
        }
        return cursor.TrySkip(take) ? 0 : EIO;
    }

    private int PreadFull(BlobState blob, Span<byte> destination, long fileOffset)
    {
        int done = 0;
        try
        {
            while (done < destination.Length)
            {
                int read = RandomAccess.Read(blob.Data!, destination[done..], fileOffset + done);
                if (read == 0) return Stale; // short file: the caller forgets the chunk and fetches it again
                done += read;
            }
        }
        catch (IOException e)
        {
            StorageLog.CacheIoFailed(context.Logger, blob.DataPath, "pread", e.Message);
            return EIO;
        }
        return 0;
    }

    private int Corrupt(in RafsChunk chunk, BlobState blob, string reason)
    {
        StorageLog.CacheCorrupt(context.Logger, blob.Info.BlobId, chunk.ChunkIndex, reason);
        Interlocked.Increment(ref context.Counters.Repairs);
        blob.Map!.ClearReady(chunk.ChunkIndex);
        return Stale;
    }
}
