using System.Buffers;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;

namespace VirtioFs.Storage.Cache;

/// <summary>
/// Brings chunks into the cache: claims missing chunks in the blob's <see cref="ChunkMap"/> (so one chunk is fetched
/// once however many readers want it), extends a claim over the chunks that follow in the blob (amplification), fetches
/// contiguous claims in one merged backend read, verifies each chunk, writes it to the cache file, hands it to the
/// reader that asked (<see cref="Delivery"/>) and completes the claims so waiting readers go on.
/// </summary>
internal sealed class ChunkFetcher(CacheContext context, ChunkVerifier verifier)
{
    private const int EIO = Errno.EIO;

    /// <summary>Largest merged backend read: the amplification size, but at least 1 MiB for the chunks one read needs.</summary>
    private readonly int _mergeCap = Math.Max(context.Options.AmplificationBytes, 1 << 20);

    /// <summary>
    /// Makes every chunk of <paramref name="chunks"/> from index <paramref name="first"/> that starts before
    /// <paramref name="end"/> ready: claims the missing ones, extends the last claim with following missing chunks
    /// (amplification), fetches them in merged backend reads, then waits for chunks other readers are fetching.
    /// Returns 0 or the errno of the first needed chunk that failed; a chunk another reader failed to fetch is tried
    /// once more here.
    /// </summary>
    public int EnsureReady(IReadOnlyList<RafsChunk> chunks, int first, ulong end, bool retryFailedWaits = true) =>
        EnsureReady(chunks, first, end, default, retryFailedWaits);

    public int EnsureReady(IReadOnlyList<RafsChunk> chunks, int first, ulong end, Delivery delivery, bool retryFailedWaits = true)
    {
        List<(int Index, Inflight Flight)>? claimed = null;
        List<(int Index, Inflight Flight)>? waits = null;
        int rc = 0, lastNeeded = -1;
        for (int i = first; i < chunks.Count && chunks[i].FileOffset < end; i++)
        {
            var chunk = chunks[i];
            lastNeeded = i;
            if (chunk.IsHole) continue;
            if (!context.Validate(chunk, out var blob)) { rc = EIO; break; }
            switch (blob.Map!.TryClaim(chunk.ChunkIndex, out var flight))
            {
                case ClaimResult.Ready:
                    Interlocked.Increment(ref context.Counters.Hits);
                    break;
                case ClaimResult.Pending:
                    Interlocked.Increment(ref context.Counters.PendingWaits);
                    (waits ??= new()).Add((i, flight!));
                    break;
                default:
                    Interlocked.Increment(ref context.Counters.Misses);
                    (claimed ??= new()).Add((i, flight!));
                    break;
            }
        }
        if (claimed is not null)
        {
            // Every claim must be completed, so fetch them even if a later chunk was refused.
            if (rc == 0 && claimed[^1].Index == lastNeeded) chunks = Amplify(chunks, claimed);
            int fetchRc = FetchClaimed(chunks, claimed, lastNeeded, prefetch: false, delivery);
            if (rc == 0) rc = fetchRc;
        }
        if (waits is not null)
        {
            foreach (var (index, flight) in waits)
            {
                int waitRc = flight.Wait();
                // The other fetcher (often a background prefetch) failed: try once ourselves before failing the read,
                // so a transient backend error there does not become a guest EIO here.
                if (waitRc != 0 && retryFailedWaits) waitRc = EnsureReady(chunks, index, chunks[index].FileOffset + 1, retryFailedWaits: false);
                if (rc == 0 && waitRc != 0) rc = waitRc;
            }
        }
        return rc;
    }

    /// <summary>
    /// Claims the missing chunks that follow the last claimed one while they continue it in the blob, up to the
    /// amplification size (nydus amplify_io): one backend read then brings what the next reads will want. At the end of
    /// the file the run goes on into the chunks the blob holds next (the next files of the directory, as the builder laid
    /// them out) when <see cref="CacheContext.Neighbours"/> knows them; the list returned then has those after the
    /// file's own, so claim indexes keep pointing into it.
    /// </summary>
    private IReadOnlyList<RafsChunk> Amplify(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed)
    {
        long budget = context.Options.AmplificationBytes;
        var previous = chunks[claimed[^1].Index];
        for (int j = claimed[^1].Index + 1; j < chunks.Count; j++)
        {
            var chunk = chunks[j];
            if (chunk.IsHole) continue;
            if (budget <= 0 || chunk.BlobIndex != previous.BlobIndex || chunk.CompressedOffset != previous.CompressedOffset + previous.CompressedSize) return chunks;
            if (chunk.CompressedSize > budget || !context.Validate(chunk, out var blob)) return chunks;
            if (!blob.Map!.TryClaimMissing(chunk.ChunkIndex, out var flight)) return chunks;
            claimed.Add((j, flight!));
            budget -= chunk.CompressedSize;
            previous = chunk;
        }
        if (context.Neighbours is not { } index) return chunks;
        List<RafsChunk>? more = null;
        for (uint next = previous.ChunkIndex + 1; budget > 0 && next != 0 && index.TryGet(previous.BlobIndex, next, out var chunk); next++)
        {
            if (chunk.CompressedOffset != previous.CompressedOffset + previous.CompressedSize || chunk.CompressedSize > budget || !context.Validate(chunk, out var blob)) break;
            if (!blob.Map!.TryClaimMissing(chunk.ChunkIndex, out var flight)) break;
            more ??= new();
            claimed.Add((chunks.Count + more.Count, flight!));
            more.Add(chunk);
            budget -= chunk.CompressedSize;
            previous = chunk;
        }
        if (more is not null) Interlocked.Add(ref context.Counters.CrossFileChunks, more.Count);
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
    public int FetchClaimed(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int lastNeeded, bool prefetch) =>
        FetchClaimed(chunks, claimed, lastNeeded, prefetch, default);

    private int FetchClaimed(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int lastNeeded, bool prefetch, Delivery delivery)
    {
        int rc = 0;
        IAsyncBlobBackend? remote = AsyncRemote;
        for (int start = 0, stop; start < claimed.Count; start = stop)
        {
            stop = RunEnd(chunks, claimed, start);
            int runRc = remote is not null && stop < claimed.Count
                ? FetchRunsOverlapped(remote, chunks, claimed, start, ref stop, lastNeeded, prefetch, delivery)
                : FetchRun(chunks, claimed, start, stop, lastNeeded, prefetch, delivery);
            if (rc == 0 && runRc != 0) rc = runRc;
        }
        return rc;
    }

    /// <summary>The backend when it reads asynchronously over the network; null for local (mapped) ones, which are
    /// read synchronously where they lie.</summary>
    private IAsyncBlobBackend? AsyncRemote => context.Backend is IAsyncBlobBackend r and not IMappedBlobBackend ? r : null;

    /// <summary>Most runs of one read whose requests are on the wire at once.</summary>
    private const int MaxOverlappedRuns = 8;

    /// <summary>
    /// A read whose missing chunks fall into several runs (other chunks ready or being fetched in between, or another
    /// blob) over a remote backend: the requests for the runs after the first go out at once, asynchronously, while
    /// the first is read here, so the read pays one round trip rather than one per run. Up to
    /// <see cref="MaxOverlappedRuns"/> runs from <paramref name="start"/>; <paramref name="stop"/> comes back as the end
    /// of the last. Each run is verified and its claims completed as in <see cref="FetchRun"/>.
    /// </summary>
    private int FetchRunsOverlapped(IAsyncBlobBackend remote, IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, ref int stop,
        int lastNeeded, bool prefetch, Delivery delivery)
    {
        var ahead = new List<(int Start, int Stop, byte[] Buffer, Task<int> Read)>();
        int firstStop = stop;
        while (stop < claimed.Count && ahead.Count < MaxOverlappedRuns - 1)
        {
            int runStart = stop;
            stop = RunEnd(chunks, claimed, runStart);
            var head = chunks[claimed[runStart].Index];
            int total = RunBytes(chunks, claimed, runStart, stop);
            byte[] buffer = ArrayPool<byte>.Shared.Rent(total);
            ahead.Add((runStart, stop, buffer, ReadBackendAsync(remote, context.Blobs[head.BlobIndex], head.CompressedOffset, buffer.AsMemory(0, total), CancellationToken.None).AsTask()));
        }
        int rc = 0, done = 0;
        try
        {
            rc = FetchRun(chunks, claimed, start, firstStop, lastNeeded, prefetch, delivery);
            for (; done < ahead.Count; done++)
            {
                var (runStart, runStop, buffer, read) = ahead[done];
                // ReadBackendAsync never throws; the wait is bounded by the backend's deadlines and retries.
                int readRc = read.GetAwaiter().GetResult();
                int runRc = CompleteRun(chunks, claimed, runStart, runStop, lastNeeded, prefetch, delivery, buffer.AsSpan(0, RunBytes(chunks, claimed, runStart, runStop)), readRc);
                ArrayPool<byte>.Shared.Return(buffer);
                if (rc == 0 && runRc != 0) rc = runRc;
            }
        }
        finally
        {
            // Only if something threw above: the remaining runs' claims must still be completed, or readers would wait forever.
            for (; done < ahead.Count; done++)
            {
                var (runStart, runStop, _, read) = ahead[done];
                read.Wait();
                CompleteRun(chunks, claimed, runStart, runStop, int.MaxValue, prefetch, default, default, EIO);
            }
        }
        return rc;
    }

    /// <summary>
    /// Prefetch's fetch of claimed chunks. With a backend that reads asynchronously (HTTP), each merged run is an awaited
    /// request: no thread waits while it is on the wire, so the prefetcher's in-flight reads cost no pool threads (they
    /// used to block one each, and the pool grows slowly past its minimum). Other backends (a local directory, mapped)
    /// are read synchronously on a pool thread, as they are fast. Every claim is completed, whatever happens; a
    /// cancelled read completes its claims with EIO, and a guest read waiting on one then fetches the chunk itself.
    /// </summary>
    /// <remarks>A run may span holes of up to <paramref name="maxGap"/> bytes between claimed chunks (read and dropped).</remarks>
    public async Task FetchClaimedAsync(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int maxGap, CancellationToken ct)
    {
        if (AsyncRemote is not { } remote)
        {
            await Task.Run(() => FetchClaimed(chunks, claimed, int.MaxValue, prefetch: true, default), CancellationToken.None).ConfigureAwait(false);
            return;
        }
        for (int start = 0, stop; start < claimed.Count; start = stop)
        {
            stop = RunEnd(chunks, claimed, start, maxGap);
            await FetchRunAsync(remote, chunks, claimed, start, stop, ct).ConfigureAwait(false);
        }
    }

    /// <summary>End (exclusive) of the merged run of claims from <paramref name="start"/>: same blob, contiguous compressed
    /// ranges, within the merge cap.</summary>
    private int RunEnd(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, int maxGap = 0)
    {
        var head = chunks[claimed[start].Index];
        ulong runEnd = head.CompressedOffset + head.CompressedSize;
        int stop = start + 1;
        while (stop < claimed.Count)
        {
            var chunk = chunks[claimed[stop].Index];
            if (chunk.BlobIndex != head.BlobIndex || chunk.CompressedOffset < runEnd || chunk.CompressedOffset - runEnd > (ulong)maxGap) break;
            ulong end = chunk.CompressedOffset + chunk.CompressedSize;
            if (end - head.CompressedOffset > (ulong)_mergeCap) break;
            runEnd = end;
            stop++;
        }
        return stop;
    }

    private int RunBytes(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, int stop)
    {
        var head = chunks[claimed[start].Index];
        var tail = chunks[claimed[stop - 1].Index];
        return (int)(tail.CompressedOffset + tail.CompressedSize - head.CompressedOffset);
    }

    private int FetchRun(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, int stop, int lastNeeded, bool prefetch, Delivery delivery)
    {
        var head = chunks[claimed[start].Index];
        var blob = context.Blobs[head.BlobIndex];
        int total = RunBytes(chunks, claimed, start, stop);
        // A local blob is read where it lies in the page cache (mapped); any other backend into a buffer.
        if (TryMapBackend(blob, head.CompressedOffset, total, out var mapping))
        {
            try { return CompleteRun(chunks, claimed, start, stop, lastNeeded, prefetch, delivery, mapping.Data, 0); }
            finally { mapping.Dispose(); }
        }
        byte[] stored = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            int readRc = ReadBackend(blob, head.CompressedOffset, stored.AsSpan(0, total));
            return CompleteRun(chunks, claimed, start, stop, lastNeeded, prefetch, delivery, stored.AsSpan(0, total), readRc);
        }
        finally { ArrayPool<byte>.Shared.Return(stored); }
    }

    private async Task FetchRunAsync(IAsyncBlobBackend remote, IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, int stop, CancellationToken ct)
    {
        var head = chunks[claimed[start].Index];
        var blob = context.Blobs[head.BlobIndex];
        int total = RunBytes(chunks, claimed, start, stop);
        byte[] stored = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            int readRc = await ReadBackendAsync(remote, blob, head.CompressedOffset, stored.AsMemory(0, total), ct).ConfigureAwait(false);
            CompleteRun(chunks, claimed, start, stop, int.MaxValue, prefetch: true, default, stored.AsSpan(0, total), readRc);
        }
        finally { ArrayPool<byte>.Shared.Return(stored); }
    }

    /// <summary>
    /// Verifies, stores and hands out the chunks of one merged run read into <paramref name="run"/> (when
    /// <paramref name="readRc"/> is 0), then completes every claim of the run, failed ones with EIO. Returns the first
    /// errno among chunks at or before <paramref name="lastNeeded"/>.
    /// </summary>
    private int CompleteRun(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, int start, int stop, int lastNeeded, bool prefetch,
        Delivery delivery, ReadOnlySpan<byte> run, int readRc)
    {
        var head = chunks[claimed[start].Index];
        var blob = context.Blobs[head.BlobIndex];
        var results = new int[stop - start];
        Array.Fill(results, EIO);
        byte[] plain = ArrayPool<byte>.Shared.Rent((int)blob.Info.ChunkSize);
        try
        {
            if (readRc != 0) return ErrorOfNeeded(claimed, start, results, lastNeeded);
            int fetched = 0;
            long fetchedBytes = 0;
            for (int k = start; k < stop; k++)
            {
                var chunk = chunks[claimed[k].Index];
                var source = run.Slice((int)(chunk.CompressedOffset - head.CompressedOffset), (int)chunk.CompressedSize);
                // A chunk the reader wants whole, in one piece of its destination, is decoded (or copied) straight there
                // and written to the cache file from there: one pass over the plain bytes fewer than decoding into our
                // buffer and delivering a copy. Otherwise a chunk stored uncompressed is checked and written from where
                // it was read.
                var target = delivery.WholeChunk(claimed[k].Index, chunk);
                scoped ReadOnlySpan<byte> data;
                int verified;
                if (target.IsEmpty && !chunk.IsCompressed)
                {
                    data = source;
                    verified = verifier.Verify(chunk, blob, source);
                }
                else
                {
                    var into = target.IsEmpty ? plain.AsSpan(0, (int)chunk.UncompressedSize) : target;
                    verified = verifier.DecodeVerify(chunk, blob, source, into);
                    data = into;
                }
                if (verified != 0)
                {
                    target.Clear(); // no unverified byte stays in the reader's memory
                    continue;
                }
                if (!Store(blob, chunk, data)) continue;
                results[k - start] = 0;
                if (target.IsEmpty) delivery.Deliver(claimed[k].Index, chunk, data);
                else delivery.MarkDone(claimed[k].Index);
                fetched++;
                fetchedBytes += chunk.CompressedSize;
            }
            if (fetched == 0) return ErrorOfNeeded(claimed, start, results, lastNeeded);
            // Ready for readers now; durable (fdatasync, then the ready bits, never the other way round) with the
            // blob's next group commit (BlobCacheFiles.Commit).
            Span<uint> ready = fetched <= 256 ? stackalloc uint[fetched] : new uint[fetched];
            int n = 0;
            long plainBytes = 0;
            for (int k = start; k < stop; k++)
            {
                if (results[k - start] != 0) continue;
                ready[n++] = chunks[claimed[k].Index].ChunkIndex;
                plainBytes += chunks[claimed[k].Index].UncompressedSize;
            }
            blob.Files!.Commit(ready, plainBytes);
            Interlocked.Add(ref context.Counters.ChunksFetched, fetched);
            if (prefetch)
            {
                Interlocked.Add(ref context.Counters.PrefetchChunks, fetched);
                Interlocked.Add(ref context.Counters.PrefetchBytes, fetchedBytes);
            }
            return ErrorOfNeeded(claimed, start, results, lastNeeded);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(plain);
            for (int k = start; k < stop; k++)
            {
                if (prefetch && results[k - start] != 0) Interlocked.Increment(ref context.Counters.PrefetchErrors);
                blob.Map!.Complete(chunks[claimed[k].Index].ChunkIndex, claimed[k].Flight, results[k - start]);
            }
        }
    }

    /// <summary>
    /// Writes a verified chunk to the cache file at its uncompressed offset. A chunk of zeros is stored as a hole
    /// (fallocate PUNCH_HOLE): it reads back as zeros and takes no disk space, as the sparse blob would; the byte written
    /// at its end first makes the file long enough, since a punched hole never extends a file. Logs and returns false
    /// when the file cannot be written.
    /// </summary>
    private bool Store(BlobState blob, in RafsChunk chunk, ReadOnlySpan<byte> plain)
    {
        long offset = (long)chunk.UncompressedOffset;
        try
        {
            if (plain.IndexOfAnyExcept((byte)0) >= 0)
            {
                RandomAccess.Write(blob.Data!, plain, offset);
                return true;
            }
            RandomAccess.Write(blob.Data!, plain[^1..], offset + plain.Length - 1);
            int fd = (int)blob.Data!.DangerousGetHandle();
            if (Interop.fallocate(fd, Interop.FALLOC_FL_PUNCH_HOLE | Interop.FALLOC_FL_KEEP_SIZE, offset, plain.Length) == 0)
            {
                Interlocked.Increment(ref context.Counters.ZeroChunksAsHoles);
                return true;
            }
            // A file system without hole punching (EOPNOTSUPP): store the zeros as data.
            RandomAccess.Write(blob.Data!, plain, offset);
            return true;
        }
        catch (IOException e)
        {
            StorageLog.CacheIoFailed(context.Logger, blob.DataPath, "pwrite", e.Message);
            return false;
        }
    }

    private static int ErrorOfNeeded(List<(int Index, Inflight Flight)> claimed, int start, int[] results, int lastNeeded)
    {
        for (int k = 0; k < results.Length; k++)
            if (results[k] != 0 && claimed[start + k].Index <= lastNeeded) return results[k];
        return 0;
    }

    /// <summary>The range mapped, when the backend lends its blobs that way (<see cref="IMappedBlobBackend"/>), counted
    /// as a backend read; false when it must be read with <see cref="ReadBackend"/>.</summary>
    public bool TryMapBackend(BlobState blob, ulong offset, int length, out BlobRange range)
    {
        range = default;
        if (context.Backend is not IMappedBlobBackend mapper || !mapper.TryMap(blob.Info.BlobId, offset, length, out range)) return false;
        Interlocked.Increment(ref context.Counters.BackendReads);
        Interlocked.Add(ref context.Counters.BackendBytes, length);
        return true;
    }

    /// <summary><see cref="ReadBackend"/> without a thread waiting on the request; never throws.</summary>
    private async ValueTask<int> ReadBackendAsync(IAsyncBlobBackend remote, BlobState blob, ulong offset, Memory<byte> destination, CancellationToken ct)
    {
        Interlocked.Increment(ref context.Counters.BackendReads);
        int rc;
        try
        {
            rc = await remote.ReadAtAsync(blob.Info.BlobId, offset, destination, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            rc = EIO; // the contract is an errno; a stray exception must still complete the run's claims
        }
        if (rc == 0) Interlocked.Add(ref context.Counters.BackendBytes, destination.Length);
        else StorageLog.BackendFailed(context.Logger, blob.Info.BlobId, offset, destination.Length, rc);
        return rc;
    }

    /// <summary>Backend read with the cache's own accounting; returns 0 or a positive errno (logged).</summary>
    public int ReadBackend(BlobState blob, ulong offset, Span<byte> destination)
    {
        Interlocked.Increment(ref context.Counters.BackendReads);
        int rc;
        try
        {
            rc = context.Backend.ReadAt(blob.Info.BlobId, offset, destination);
        }
        catch (Exception e) when (e is IOException or TimeoutException or OperationCanceledException or UnauthorizedAccessException)
        {
            rc = EIO; // a backend should return errno results; a stray exception is still only a failed read
        }
        if (rc == 0) Interlocked.Add(ref context.Counters.BackendBytes, destination.Length);
        else StorageLog.BackendFailed(context.Logger, blob.Info.BlobId, offset, destination.Length, rc);
        return rc;
    }
}

/// <summary>Where a reader wants the chunks it fetches itself: its destination, the file range it covers, and which
/// chunks (by index from <see cref="First"/>) have been copied there. Chunks a read fetches are copied to it from the
/// buffer they were verified in, rather than written to the cache file and read back (a copy less per byte).</summary>
/// <remarks>Chunks are decoded straight into the destination (<see cref="WholeChunk"/>) only when it is the process's own
/// memory (<paramref name="ownMemory"/>): the cache file is written from there after the digest check, and guest memory
/// could be changed by the guest in between, which would put unverified bytes into a cache that is trusted afterwards.</remarks>
internal readonly ref struct Delivery(ReadOnlySpan<IoSegment> destination, ulong offset, ulong end, int first, Span<bool> done, bool ownMemory)
{
    /// <summary>Most chunks one read tracks (a 1 MiB read of 4 KiB chunks, plus one).</summary>
    public const int MaxTracked = 260;

    private readonly ReadOnlySpan<IoSegment> _destination = destination;
    private readonly Span<bool> _done = done;
    public int First { get; } = first;

    /// <summary>The reader's memory for all of chunk <paramref name="index"/> when the read covers the whole chunk and
    /// that part of the destination is one piece; empty otherwise.</summary>
    public Span<byte> WholeChunk(int index, in RafsChunk chunk)
    {
        int slot = index - First;
        if (!ownMemory || slot < 0 || slot >= _done.Length || chunk.FileOffset < offset || chunk.UncompressedSize > end - chunk.FileOffset) return default;
        var cursor = new SegmentCursor(_destination);
        return cursor.TrySkip((long)(chunk.FileOffset - offset)) ? cursor.Contiguous((int)chunk.UncompressedSize) : default;
    }

    /// <summary>Records that chunk <paramref name="index"/> was decoded straight into <see cref="WholeChunk"/>.</summary>
    public void MarkDone(int index) => _done[index - First] = true;

    /// <summary>Copies the part of chunk <paramref name="index"/> (verified plain data) the reader wants.</summary>
    public void Deliver(int index, in RafsChunk chunk, ReadOnlySpan<byte> plain)
    {
        int slot = index - First;
        if (slot < 0 || slot >= _done.Length) return;
        ulong from = Math.Max(chunk.FileOffset, offset), to = Math.Min(chunk.FileOffset + (ulong)plain.Length, end);
        if (from >= to) return;
        var cursor = new SegmentCursor(_destination);
        // Within the destination: [from - offset, to - offset) lies inside [0, end - offset), which the caller sized.
        if (cursor.TrySkip((long)(from - offset)) && cursor.TryWrite(plain.Slice((int)(from - chunk.FileOffset), (int)(to - from))))
        {
            _done[slot] = true;
        }
    }
}
