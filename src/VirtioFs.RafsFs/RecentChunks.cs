using System.Runtime.InteropServices;
using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage;
using VirtioFs.Storage.Cache;

namespace VirtioFs.RafsFs;

/// <summary>
/// Decoded chunks kept for the next READ. The kernel reads a file in readahead windows of 128-256 KiB while a chunk is
/// typically 1 MiB; read-through (no chunk cache), each window would fetch, verify and decompress the whole chunk again
/// (measured: 7.4x the blob's bytes and 6.5x slower than with a cache). A few slots, indexed by (blob, chunk), hold the
/// last chunks decoded, so a sequential reader decodes each chunk once and copies the parts it asks for. Identical
/// chunks shared by several files share a slot. Slots are allocated once (native memory, chunk-size each); a read
/// allocates nothing.
/// <para>
/// With a chunk cache, a chunk already in it is read from the cache file straight into the reply, past the slots; one
/// that is missing is fetched into a slot, decoded and written to the cache file from there, and the READs of its
/// other parts are answered from the slot. Without the slot, the first read of a chunk copied it out of a decode
/// buffer into the reply and the next READs read it back from the cache file: a copy of each such chunk fewer. What it
/// saves is small beside this machine's noise: on image-read.sh's 400 MB tree read cold through `vfsd mount` filling
/// --cache-dir (2 readers, 4 alternating runs), a first comparison gave CPU medians of 0.60 s before and 0.48 s after,
/// a second one 0.51 s and 0.51-0.57 s (no cache: 0.37 s): the copies saved are not what the fill costs (the write
/// into the cache file's page cache is, ~20% of the profile).
/// </para>
/// <para>
/// A READ that wants a whole chunk (a small file read at once, or a readahead window that happens to cover a chunk)
/// bypasses the slots: the chunk is decoded straight into the reply, so it neither costs a copy nor evicts a slot a
/// sequential reader of a large file is about to come back to. Slots are two-way set associative with the older of the
/// pair evicted, so two files read side by side (the kernel's readahead of each, several readers) do not keep
/// evicting each other's chunk between READs: each eviction would fetch, verify and decode a chunk again.
/// </para>
/// <para>
/// Over /dev/fuse a READ need not copy out of a slot at all: the reply refers to the slot's memory
/// (<see cref="IReplyReferences"/>) and is sent with writev, the slot pinned until then. The kernel's readahead windows
/// (256 KiB, 512 KiB, 1 MiB from the first read of a file) never line up with 1 MiB chunks, so most READs of a large
/// file used to copy part of a slot (libc memmove, ~6.5% of a cold read-all's CPU). A pinned slot is never refilled;
/// a reader that needs it for another chunk reads that chunk without a slot rather than wait, so a writev holding a pin
/// never waits on another reader.
/// </para>
/// </summary>
internal sealed class RecentChunks : IReplyPin, IDisposable
{
    /// <summary>Memory the slots may use together.</summary>
    private const long Budget = 64L << 20;

    private sealed class Slot(int id)
    {
        public readonly int Id = id;
        public readonly Lock Lock = new();
        public bool Valid;
        public uint Blob;
        public uint Index;
        // Native memory of the slot's capacity, allocated on first fill and freed by Dispose (or by the last Unpin
        // after Dispose).
        public unsafe byte* Data;
        public long LastUse;
        // Replies in flight that refer to Data: while non-zero the slot holds its chunk (taken under Lock, dropped
        // by Unpin).
        public int Pins;
    }

    private readonly Slot[] _slots;
    private readonly int _sets;
    private readonly int _capacity;
    private long _clock;
    private int _disposed;

    /// <summary>When a reader starts on a chunk, decode the file's next chunk into its slot on the thread pool.</summary>
    private readonly bool _decodeAhead;

    public RecentChunks(uint chunkSize, int slots = 16, bool decodeAhead = false)
    {
        _decodeAhead = decodeAhead;
        _ahead = decodeAhead ? [new AheadWork(this), new AheadWork(this), new AheadWork(this), new AheadWork(this)] : [];
        _capacity = (int)Math.Min(chunkSize, 16u << 20);
        int n = (int)Math.Clamp(Budget / Math.Max(1, _capacity), 2, Math.Max(2, slots)) & ~1;
        _slots = new Slot[n];
        _sets = n / 2;
        for (int i = 0; i < n; i++) _slots[i] = new Slot(i);
    }

    /// <summary>Whole-chunk READs that went straight to the reply (for tests and metrics).</summary>
    public long Bypassed => Interlocked.Read(ref _bypassed);
    private long _bypassed;

    /// <summary>Chunk decodes into a slot (a sequential reader does one per chunk).</summary>
    public long Decodes => Interlocked.Read(ref _decodes);
    private long _decodes;

    /// <summary>Of <see cref="Decodes"/>, those done ahead of the reader on the thread pool.</summary>
    public long DecodedAhead => Interlocked.Read(ref _decodedAhead);
    private long _decodedAhead;

    /// <summary>
    /// Reads up to <paramref name="length"/> bytes at <paramref name="offset"/> of a file (its chunk list and size) into
    /// <paramref name="destination"/>. Returns the byte count, or a negative errno when any chunk it needs fails.
    /// </summary>
    public int Read(BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize, ulong offset, int length, ReadOnlySpan<IoSegment> destination)
        => Read(cache, chunks, fileSize, offset, length, destination, null);

    /// <summary>READs that referred to a slot instead of copying out of it (for tests and metrics).</summary>
    public long Referenced => Interlocked.Read(ref _referenced);
    private long _referenced;

    /// <summary>As <see cref="Read(BlobCacheManager, RafsChunk[], ulong, ulong, int, ReadOnlySpan{IoSegment})"/>; with
    /// <paramref name="references"/>, what comes out of a slot is referred to (the slot pinned) rather than copied.</summary>
    public unsafe int Read(BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize, ulong offset, int length, ReadOnlySpan<IoSegment> destination,
        IReplyReferences? references)
    {
        // SAFETY: slot memory is read only under the slot's lock, after Fill has written [0, chunk size) of it, and
        // within + take <= chunk size; a referred range stays valid while the slot is pinned (Fill refuses a pinned slot).

        if (offset >= fileSize || length <= 0) return 0;
        ulong end = Math.Min(fileSize, offset + (ulong)length);
        int i = Find(chunks, offset);
        if (i < 0) return -Errno.EIO;
        var cursor = new SegmentCursor(destination);
        bool cached = cache.CacheDir is not null;
        ulong pos = offset;
        while (pos < end)
        {
            if (i >= chunks.Length) return -Errno.EIO; // the chunk list does not cover the file size
            ref readonly RafsChunk c = ref chunks[i];
            ulong cEnd = c.FileOffset + c.UncompressedSize;
            if (pos < c.FileOffset || pos >= cEnd)
            {
                if (pos >= cEnd) { i++; continue; }
                return -Errno.EIO; // a gap between chunks: the image is inconsistent
            }
            int take = (int)(Math.Min(end, cEnd) - pos);
            int within = (int)(pos - c.FileOffset);
            if (c.IsHole || c.UncompressedSize > _capacity)
            {
                if (c.IsHole)
                {
                    if (!cursor.TryZero(take)) return -Errno.EIO;
                }
                else
                {
                    // Larger than a slot (an impossible chunk): let the storage layer judge it.
                    int r = ReadDirect(cache, chunks, fileSize, pos, take, ref cursor);
                    if (r < 0) return r;
                }
            }
            else if (within == 0 && take == (int)Math.Min(c.UncompressedSize, fileSize - c.FileOffset))
            {
                // The whole chunk: into the reply directly (the storage layer decodes in place when it can).
                int r = ReadInto(cache, chunks, fileSize, pos, take, ref cursor);
                if (r < 0) return r;
                Interlocked.Increment(ref _bypassed);
            }
            else if (cached && !IsIn(Pick(c.BlobIndex, c.ChunkIndex), c) && cache.IsCached(c))
            {
                // In the chunk cache already: preadv straight from the cache file into the reply (guest memory for
                // virtio-fs), one copy; a slot would add one. (Unlocked peek at the slot: a stale answer only costs
                // that copy.)
                int r = ReadInto(cache, chunks, fileSize, pos, take, ref cursor);
                if (r < 0) return r;
            }
            else
            {
                // A sequential reader entering a chunk will want the next one soon: decode it meanwhile, so the fetch,
                // digest check and decompression overlap with the reader working through this one.
                if (_decodeAhead && within == 0 && i + 1 < chunks.Length) DecodeAhead(cache, chunks, fileSize, i + 1);
                Slot s = Pick(c.BlobIndex, c.ChunkIndex);
                lock (s.Lock)
                {
                    if (!IsIn(s, c) && s.Pins != 0)
                    {
                        // The slot's chunk is still being sent: never wait for that (its sender may be waiting on us).
                        int r = ReadDirect(cache, chunks, fileSize, pos, take, ref cursor);
                        if (r < 0) return r;
                        pos += (ulong)take;
                        i++;
                        continue;
                    }
                    if (!IsIn(s, c))
                    {
                        int r = Fill(s, cache, chunks, fileSize, c);
                        if (r < 0) return r;
                    }
                    else if (cached)
                    {
                        cache.CountCopyHit();
                    }
                    s.LastUse = Interlocked.Increment(ref _clock);
                    var piece = new IoSegment(s.Data + within, take);
                    // Pinned under the lock, before anyone could refill it; Unpin comes only once the reply is sent,
                    // after this READ has returned.
                    if (references is not null && references.TryAdd(cursor.Consumed, piece, this, s.Id))
                    {
                        Interlocked.Increment(ref s.Pins);
                        Interlocked.Increment(ref _referenced);
                        if (!cursor.TrySkip(take)) return -Errno.EIO; // cannot happen: TryAdd checked the reply space
                    }
                    else if (!cursor.TryWrite(piece.AsSpan()))
                    {
                        return -Errno.EIO;
                    }
                }
            }
            pos += (ulong)take;
            i++;
        }
        return (int)(end - offset);
    }

    private static bool IsIn(Slot s, in RafsChunk c) => s.Valid && s.Blob == c.BlobIndex && s.Index == c.ChunkIndex;

    /// <summary>Decodes chunk <paramref name="c"/> into slot <paramref name="s"/>, whose lock the caller holds: the whole
    /// chunk through the storage layer (fetch, digest check, decompress). 0 or a negative errno.</summary>
    private unsafe int Fill(Slot s, BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize, in RafsChunk c)
    {
        // SAFETY: the caller holds the slot's lock and no reply refers to it (Pins == 0); Data holds _capacity bytes
        // and size <= _capacity (chunks larger than a slot never come here).
        if (s.Pins != 0) return -Errno.EBUSY;
        s.Valid = false;
        if (Volatile.Read(ref _disposed) != 0) return -Errno.EIO;
        if (s.Data is null) s.Data = (byte*)NativeMemory.Alloc((nuint)_capacity);
        int size = (int)Math.Min(c.UncompressedSize, fileSize - c.FileOffset);
        int r = cache.ReadFile(chunks, fileSize, c.FileOffset, new Span<byte>(s.Data, size));
        if (r < 0) return r;
        if (r != size) return -Errno.EIO;
        s.Blob = c.BlobIndex;
        s.Index = c.ChunkIndex;
        s.Valid = true;
        Interlocked.Increment(ref _decodes);
        return 0;
    }

    /// <summary>
    /// Queues the decode of chunk <paramref name="next"/> into its slot, unless it is there already, is a hole or a
    /// file's short tail, or another thread holds its slot (decoding it, most likely). Best effort: a failure
    /// is left for the reader, which will fetch the chunk itself and get the error then.
    /// </summary>
    private void DecodeAhead(BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize, int next)
    {
        RafsChunk c = chunks[next];
        if (c.IsHole || c.UncompressedSize > _capacity || c.FileOffset >= fileSize) return;
        // A file's short last chunk is likely read whole by one READ, which bypasses the slots: decoding it here too
        // would fetch it twice.
        if (Math.Min(c.UncompressedSize, fileSize - c.FileOffset) < (ulong)_capacity) return;
        Slot s = Pick(c.BlobIndex, c.ChunkIndex);
        if (IsIn(s, c) || Volatile.Read(ref _disposed) != 0) return;
        // A free work item from the small pool (no allocation per READ); none free means enough is in flight already.
        foreach (var w in _ahead)
        {
            if (Interlocked.CompareExchange(ref w.Busy, 1, 0) != 0) continue;
            w.Cache = cache;
            w.Chunks = chunks;
            w.FileSize = fileSize;
            w.Next = next;
            w.Slot = s;
            ThreadPool.UnsafeQueueUserWorkItem(w, preferLocal: false);
            return;
        }
    }

    private readonly AheadWork[] _ahead;

    /// <summary>One queued decode-ahead; reused once it has run.</summary>
    private sealed class AheadWork(RecentChunks owner) : IThreadPoolWorkItem
    {
        public int Busy;
        public BlobCacheManager? Cache;
        public RafsChunk[]? Chunks;
        public ulong FileSize;
        public int Next;
        public Slot? Slot;

        public void Execute()
        {
            var (cache, chunks, s) = (Cache!, Chunks!, Slot!);
            RafsChunk c = chunks[Next];
            try
            {
                owner.FillAhead(s, c, cache, chunks, FileSize);
            }
            finally
            {
                Cache = null;
                Chunks = null;
                Slot = null;
                Volatile.Write(ref Busy, 0);
            }
        }
    }

    /// <summary>The decode-ahead itself, on a pool thread: skipped when the slot is busy (its holder is decoding, or a
    /// reader is copying out of it) or has been taken for another chunk meanwhile.</summary>
    private void FillAhead(Slot s, in RafsChunk c, BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize)
    {
        if (!s.Lock.TryEnter()) return;
        try
        {
            if (ReferenceEquals(Pick(c.BlobIndex, c.ChunkIndex), s) && !IsIn(s, c) && s.Pins == 0 && Fill(s, cache, chunks, fileSize, c) == 0)
            {
                s.LastUse = Interlocked.Increment(ref _clock);
                Interlocked.Increment(ref _decodedAhead);
            }
        }
        catch (Exception e) when (e is ObjectDisposedException or IOException or InvalidOperationException)
        {
            // The image is being unmounted under us: nothing to do; a reader, if any, reports its own error.
        }
        finally
        {
            s.Lock.Exit();
        }
    }

    /// <summary>
    /// The slot for a chunk: the one of its set that holds it, else the one used longer ago (a racing reader may pick
    /// the same victim: both then decode under its lock in turn, which is correct, only slower).
    /// </summary>
    private Slot Pick(uint blob, uint index)
    {
        int set = (int)((blob * 0x9E3779B1u ^ index * 0x85EBCA6Bu) % (uint)_sets);
        Slot a = _slots[2 * set], b = _slots[2 * set + 1];
        // Unlocked peeks: a stale answer only picks a worse victim; the lock re-checks the identity.
        if (a.Valid && a.Blob == blob && a.Index == index) return a;
        if (b.Valid && b.Blob == blob && b.Index == index) return b;
        if (!a.Valid) return a;
        if (!b.Valid) return b;
        // A slot a reply still refers to cannot be refilled: prefer the other.
        bool aPinned = Volatile.Read(ref a.Pins) != 0, bPinned = Volatile.Read(ref b.Pins) != 0;
        if (aPinned != bPinned) return aPinned ? b : a;
        return Volatile.Read(ref a.LastUse) <= Volatile.Read(ref b.LastUse) ? a : b;
    }

    /// <summary>Most pieces a whole-chunk READ is handed on in (a guest's READ arrives in pages: 256 for 1 MiB).</summary>
    private const int MaxPieces = 256;

    /// <summary>Reads [pos, pos + take) of the file straight into the next <paramref name="take"/> reply bytes.</summary>
    private static int ReadInto(BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize, ulong pos, int take, ref SegmentCursor cursor)
    {
        // A guest READ of a whole small file comes as one 4 KiB page per descriptor: with room for only 16, a file of
        // 64-128 KiB went through ReadDirect (a new array per READ, two more copies of the data).
        Span<IoSegment> iov = stackalloc IoSegment[MaxPieces];
        int n = cursor.Slice(take, iov);
        if (n < 0) return ReadDirect(cache, chunks, fileSize, pos, take, ref cursor);
        int r = cache.ReadFile(chunks, fileSize, pos, take, iov[..n]);
        if (r < 0) return r;
        if (r != take) return -Errno.EIO;
        return cursor.TrySkip(take) ? r : -Errno.EIO;
    }

    private static int ReadDirect(BlobCacheManager cache, RafsChunk[] chunks, ulong fileSize, ulong pos, int take, ref SegmentCursor cursor)
    {
        byte[] tmp = System.Buffers.ArrayPool<byte>.Shared.Rent(take);
        try
        {
            int r = cache.ReadFile(chunks, fileSize, pos, tmp.AsSpan(0, take));
            if (r < 0) return r;
            return cursor.TryWrite(tmp.AsSpan(0, r)) ? r : -Errno.EIO;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(tmp);
        }
    }

    /// <summary>Index of the chunk holding <paramref name="offset"/> (chunks are in file order), or -1.</summary>
    private static int Find(RafsChunk[] chunks, ulong offset)
    {
        int lo = 0, hi = chunks.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = lo + (hi - lo) / 2;
            if (chunks[mid].FileOffset <= offset) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }

    /// <summary>A reply that referred to slot <paramref name="token"/> has been sent.</summary>
    public void Unpin(int token)
    {
        Slot s = _slots[token];
        if (Interlocked.Decrement(ref s.Pins) == 0 && Volatile.Read(ref _disposed) != 0)
        {
            lock (s.Lock) Free(s);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var s in _slots)
        {
            lock (s.Lock)
            {
                s.Valid = false;
                // A slot a reply in flight still refers to is freed by its last Unpin.
                if (Volatile.Read(ref s.Pins) == 0) Free(s);
            }
        }
    }

    /// <summary>Frees a slot's memory; the caller holds its lock and no reply refers to it.</summary>
    private static unsafe void Free(Slot s)
    {
        // SAFETY: Data was allocated by Fill with NativeMemory.Alloc and nothing refers to it (Pins == 0, lock held);
        // it is set to null so it is freed once.
        if (s.Pins != 0) return;
        if (s.Data is not null) NativeMemory.Free(s.Data);
        s.Data = null;
    }
}
