using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Cache;

namespace VirtioFs.Storage.Prefetch;

/// <summary>
/// Background prefetch into a cache: walks a list of files in order, plans runs of missing chunks that one backend read
/// can bring, claims them and starts their fetch through the <see cref="ChunkFetcher"/> without waiting for it, so up to
/// <see cref="PrefetchOptions.MaxConcurrency"/> reads are in flight at once, across files and within a large one. Paced by
/// a bandwidth limit and, when asked (<see cref="PrefetchOptions.YieldToGuestReads"/>), yielding to guest reads.
/// Progress goes to the shared <see cref="CacheCounters"/>.
/// </summary>
/// <remarks>One loop plans and claims; the reads are awaited HTTP requests (<see cref="ChunkFetcher.FetchClaimedAsync"/>),
/// so no thread is parked per read in flight. Before this, each of the workers blocked a pool thread in the synchronous
/// backend read, and the pool, which grows slowly past its minimum, had to be raised by hand to start them all.</remarks>
internal sealed class Prefetcher(CacheContext context, ChunkFetcher fetcher)
{
    /// <summary>See <see cref="BlobCacheManager.PrefetchAsync"/>.</summary>
    public async Task PrefetchAsync(IEnumerable<IReadOnlyList<RafsChunk>> files, PrefetchOptions options, CancellationToken ct)
    {
        // Files are pulled one at a time, so a lazy plan (every file of a large image) never sits in memory whole.
        if (files is IReadOnlyCollection<IReadOnlyList<RafsChunk>> known) Interlocked.Add(ref context.Counters.PrefetchFilesTotal, known.Count);
        bool countAsPulled = files is not IReadOnlyCollection<IReadOnlyList<RafsChunk>>;
        var limiter = options.BandwidthBytesPerSecond > 0 ? new RateLimiter(options.BandwidthBytesPerSecond, options.TimeProvider) : null;
        long chunksBefore = Volatile.Read(ref context.Counters.PrefetchChunks);
        long bytesBefore = Volatile.Read(ref context.Counters.PrefetchBytes);
        long errorsBefore = Volatile.Read(ref context.Counters.PrefetchErrors);
        long filesBefore = Volatile.Read(ref context.Counters.PrefetchFilesDone);
        // One slot per read in flight; a read gives its slot back when its claims are complete.
        using var slots = new SemaphoreSlim(options.MaxConcurrency, options.MaxConcurrency);
        Begin(options.MaxConcurrency);
        var outcome = PrefetchState.Stopped;
        try
        {
            // Files are taken in batches: a start-up list is mostly small files (a profile of benchmarks/cold-start.sh
            // showed reads of 23 to 1,000 bytes, one request and one round trip each, holding the slots while the
            // large libraries waited). A batch's chunks, in blob order, plan into runs that span neighbouring files.
            var batch = new List<RafsChunk>();
            int batchFiles = 0;
            foreach (var file in files)
            {
                ct.ThrowIfCancellationRequested();
                if (countAsPulled) Interlocked.Increment(ref context.Counters.PrefetchFilesTotal);
                CountQueued(file);
                batch.AddRange(file);
                batchFiles++;
                if (batchFiles < BatchFiles && batch.Count < BatchChunks) continue;
                await PrefetchFileAsync(InBlobOrder(batch), batchFiles, slots, limiter, options.YieldToGuestReads, ct).ConfigureAwait(false);
                batch.Clear();
                batchFiles = 0;
            }
            if (batchFiles > 0) await PrefetchFileAsync(InBlobOrder(batch), batchFiles, slots, limiter, options.YieldToGuestReads, ct).ConfigureAwait(false);
            outcome = PrefetchState.Finished;
        }
        finally
        {
            // No read outlives the prefetch: wait for every slot back (a cancelled read ends at once, with EIO).
            for (int i = 0; i < options.MaxConcurrency; i++) await slots.WaitAsync(CancellationToken.None).ConfigureAwait(false);
            End(options.MaxConcurrency, outcome);
        }
        if (options.LogOutcome) StorageLog.PrefetchDone(context.Logger, Volatile.Read(ref context.Counters.PrefetchFilesDone) - filesBefore,
            Volatile.Read(ref context.Counters.PrefetchChunks) - chunksBefore, Volatile.Read(ref context.Counters.PrefetchBytes) - bytesBefore,
            Volatile.Read(ref context.Counters.PrefetchErrors) - errorsBefore);
    }

    private void Begin(int workers)
    {
        Interlocked.CompareExchange(ref context.Counters.PrefetchBeganMs, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), 0);
        Interlocked.Add(ref context.Counters.PrefetchWorkers, workers);
        Interlocked.Increment(ref context.Counters.PrefetchRunning);
    }

    private void End(int workers, PrefetchState outcome)
    {
        Volatile.Write(ref context.Counters.PrefetchLastState, (int)outcome);
        Volatile.Write(ref context.Counters.PrefetchEndedMs, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        Interlocked.Add(ref context.Counters.PrefetchWorkers, -workers);
        Interlocked.Decrement(ref context.Counters.PrefetchRunning);
    }

    /// <summary>Adds a file's data chunks to the prefetch totals as the walk reaches it.</summary>
    private void CountQueued(IReadOnlyList<RafsChunk> chunks)
    {
        long count = 0, bytes = 0;
        for (int i = 0; i < chunks.Count; i++)
        {
            var chunk = chunks[i];
            if (chunk.IsHole) continue;
            count++;
            bytes += chunk.CompressedSize;
        }
        Interlocked.Add(ref context.Counters.PrefetchQueuedChunks, count);
        Interlocked.Add(ref context.Counters.PrefetchQueuedBytes, bytes);
    }

    /// <summary>Counts a file as done when the last of its reads in flight ends (the planning loop holds one reference).</summary>
    private sealed class FileReads(CacheContext context, int files)
    {
        private int _pending = 1;
        public void Add() => Interlocked.Increment(ref _pending);
        public void Release()
        {
            if (Interlocked.Decrement(ref _pending) == 0) Interlocked.Add(ref context.Counters.PrefetchFilesDone, files);
        }
    }

    /// <summary>Files and chunks planned together at most (a batch's chunk list is held in memory).</summary>
    private const int BatchFiles = 64, BatchChunks = 4096;

    /// <summary>Largest hole between two chunks one prefetch read still spans (its bytes are read and dropped): far
    /// cheaper than the round trip of a second request, and bounded by the run's size limit as well.</summary>
    internal const int MaxGapBytes = 16 << 10;

    /// <summary>A batch's chunks sorted by blob and offset, each chunk once (files share deduplicated chunks).</summary>
    private static List<RafsChunk> InBlobOrder(List<RafsChunk> batch)
    {
        var sorted = new List<RafsChunk>(batch.Count);
        foreach (var c in batch) if (!c.IsHole) sorted.Add(c);
        sorted.Sort(static (a, b) => a.BlobIndex != b.BlobIndex ? a.BlobIndex.CompareTo(b.BlobIndex) : a.CompressedOffset.CompareTo(b.CompressedOffset));
        int n = 0;
        for (int k = 0; k < sorted.Count; k++)
        {
            if (n > 0 && sorted[n - 1].BlobIndex == sorted[k].BlobIndex && sorted[n - 1].ChunkIndex == sorted[k].ChunkIndex) continue;
            sorted[n++] = sorted[k];
        }
        sorted.RemoveRange(n, sorted.Count - n);
        return sorted;
    }

    private async Task PrefetchFileAsync(IReadOnlyList<RafsChunk> chunks, int files, SemaphoreSlim slots, RateLimiter? limiter, bool yieldToGuestReads, CancellationToken ct)
    {
        var file = new FileReads(context, files);
        try
        {
            int i = 0;
            while (i < chunks.Count)
            {
                ct.ThrowIfCancellationRequested();
                var chunk = chunks[i];
                if (chunk.IsHole || !context.ValidateQuiet(chunk)) { i++; continue; }
                if (context.IsCached(chunk)) { Interlocked.Increment(ref context.Counters.PrefetchAlreadyCached); i++; continue; }
                // Plan the run before claiming anything, and claim only once a slot and the bandwidth are ours: a claimed
                // chunk must not sit behind either, since a guest read of it would wait too.
                int stop = PlanRun(chunks, i, out long bytes);
                await slots.WaitAsync(ct).ConfigureAwait(false);
                bool started = false;
                try
                {
                    if (yieldToGuestReads) await context.Gate.WaitIdleAsync(ct).ConfigureAwait(false);
                    if (limiter is not null) await limiter.AcquireAsync(bytes, ct).ConfigureAwait(false);
                    if (yieldToGuestReads) await context.Gate.WaitIdleAsync(ct).ConfigureAwait(false);
                    // A slot given back by a read that cancellation ended can reach this wait before the cancellation
                    // does (SemaphoreSlim grants it): start nothing new once cancelled.
                    ct.ThrowIfCancellationRequested();
                    var claimed = new List<(int Index, Inflight Flight)>();
                    for (int k = i; k < stop; k++)
                    {
                        var candidate = chunks[k];
                        if (candidate.IsHole) continue;
                        // A guest read got there first.
                        if (!context.Blobs[candidate.BlobIndex].Map!.TryClaimMissing(candidate.ChunkIndex, out var flight)) break;
                        claimed.Add((k, flight!));
                    }
                    if (claimed.Count == 0) { i++; continue; }
                    i = claimed[^1].Index + 1;
                    file.Add();
                    started = true;
                    _ = FetchAsync(chunks, claimed, slots, file, ct);
                }
                finally
                {
                    if (!started) slots.Release();
                }
            }
        }
        finally
        {
            file.Release();
        }
    }

    /// <summary>One read in flight: fetches and completes its claims, then gives its slot back. Never throws (it is not
    /// awaited; the planning loop waits for its slot instead).</summary>
    private async Task FetchAsync(IReadOnlyList<RafsChunk> chunks, List<(int Index, Inflight Flight)> claimed, SemaphoreSlim slots, FileReads file, CancellationToken ct)
    {
        try
        {
            await fetcher.FetchClaimedAsync(chunks, claimed, MaxGapBytes, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The fetcher completes every claim itself; should something escape it, no reader may wait forever.
            Interlocked.Add(ref context.Counters.PrefetchErrors, claimed.Count);
            foreach (var (index, flight) in claimed) context.Blobs[chunks[index].BlobIndex].Map!.Complete(chunks[index].ChunkIndex, flight, Errno.EIO);
        }
        finally
        {
            file.Release();
            slots.Release();
        }
    }

    /// <summary>End (exclusive) of the run of missing chunks starting at <paramref name="i"/> that one backend read can
    /// bring: same blob, ascending compressed ranges with holes of at most <see cref="MaxGapBytes"/>, within the
    /// amplification size counting the holes (at least one chunk).</summary>
    private int PlanRun(IReadOnlyList<RafsChunk> chunks, int i, out long bytes)
    {
        var previous = chunks[i];
        bytes = previous.CompressedSize;
        int j = i + 1;
        for (; j < chunks.Count; j++)
        {
            var chunk = chunks[j];
            if (chunk.IsHole) continue;
            ulong previousEnd = previous.CompressedOffset + previous.CompressedSize;
            if (chunk.BlobIndex != previous.BlobIndex || chunk.CompressedOffset < previousEnd || chunk.CompressedOffset - previousEnd > MaxGapBytes) break;
            long gap = (long)(chunk.CompressedOffset - previousEnd);
            if (bytes + gap + chunk.CompressedSize > context.Options.AmplificationBytes || context.IsCached(chunk) || !context.ValidateQuiet(chunk)) break;
            bytes += gap + chunk.CompressedSize;
            previous = chunk;
        }
        return j;
    }
}
