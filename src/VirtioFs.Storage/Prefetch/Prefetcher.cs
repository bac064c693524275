using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Cache;

namespace VirtioFs.Storage.Prefetch;

/// <summary>
/// Background prefetch into a cache: walks a list of files, plans runs of missing chunks that one backend read can
/// bring, and hands them to the <see cref="ChunkFetcher"/>, paced by a bandwidth limit and, when asked
/// (<see cref="PrefetchOptions.YieldToGuestReads"/>), yielding to guest reads. Progress goes to the shared <see cref="CacheCounters"/>.
/// </summary>
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
        long filesDone = 0;
        using var source = files.GetEnumerator();
        var pull = new Lock();
        IReadOnlyList<RafsChunk>? Next()
        {
            lock (pull)
            {
                if (!source.MoveNext()) return null;
                if (countAsPulled) Interlocked.Increment(ref context.Counters.PrefetchFilesTotal);
                return source.Current;
            }
        }
        ReservePoolThreads(options.MaxConcurrency);
        Begin(options.MaxConcurrency);
        var outcome = PrefetchState.Stopped;
        var workers = new Task[options.MaxConcurrency];
        for (int w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(async () =>
            {
                while (Next() is { } file)
                {
                    CountQueued(file);
                    await PrefetchFileAsync(file, limiter, options.YieldToGuestReads, ct).ConfigureAwait(false);
                    Interlocked.Increment(ref context.Counters.PrefetchFilesDone);
                    Interlocked.Increment(ref filesDone);
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
            End(options.MaxConcurrency, outcome);
        }
        StorageLog.PrefetchDone(context.Logger, filesDone, Volatile.Read(ref context.Counters.PrefetchChunks) - chunksBefore,
            Volatile.Read(ref context.Counters.PrefetchBytes) - bytesBefore, Volatile.Read(ref context.Counters.PrefetchErrors) - errorsBefore);
    }

    /// <summary>
    /// Each worker blocks a pool thread while its backend read runs (the fetcher is synchronous, since FUSE workers call
    /// it from their own threads), and the HTTP continuations that read waits for need pool threads too. Past the
    /// pool's minimum (the core count) new threads are injected slowly, so 8 workers on a 2-core host started at a
    /// trickle: benchmarks/cold-start.sh saw the prefetch fetch at a third of the link for its first second. The minimum
    /// is raised, never lowered, to leave room for every worker.
    /// </summary>
    internal static void ReservePoolThreads(int workers)
    {
        ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
        int wanted = Environment.ProcessorCount + 2 * workers;
        if (minWorkers < wanted) ThreadPool.SetMinThreads(wanted, minIo);
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

    private async Task PrefetchFileAsync(IReadOnlyList<RafsChunk> chunks, RateLimiter? limiter, bool yieldToGuestReads, CancellationToken ct)
    {
        var claimed = new List<(int Index, Inflight Flight)>();
        int i = 0;
        while (i < chunks.Count)
        {
            ct.ThrowIfCancellationRequested();
            var chunk = chunks[i];
            if (chunk.IsHole || !context.ValidateQuiet(chunk)) { i++; continue; }
            if (context.IsCached(chunk)) { Interlocked.Increment(ref context.Counters.PrefetchAlreadyCached); i++; continue; }
            // Plan the run before claiming anything: a claimed chunk must not sit behind the bandwidth limit, since a
            // guest read of it would wait too.
            int stop = PlanRun(chunks, i, out long bytes);
            if (yieldToGuestReads) await context.Gate.WaitIdleAsync(ct).ConfigureAwait(false);
            if (limiter is not null) await limiter.AcquireAsync(bytes, ct).ConfigureAwait(false);
            if (yieldToGuestReads) await context.Gate.WaitIdleAsync(ct).ConfigureAwait(false);
            claimed.Clear();
            for (int k = i; k < stop; k++)
            {
                var candidate = chunks[k];
                if (candidate.IsHole) continue;
                // A guest read got there first.
                if (!context.Blobs[candidate.BlobIndex].Map!.TryClaimMissing(candidate.ChunkIndex, out var flight)) break;
                claimed.Add((k, flight!));
            }
            if (claimed.Count == 0) { i++; continue; }
            fetcher.FetchClaimed(chunks, claimed, int.MaxValue, prefetch: true);
            i = claimed[^1].Index + 1;
        }
    }

    /// <summary>End (exclusive) of the run of missing chunks starting at <paramref name="i"/> that one backend read can
    /// bring: same blob, contiguous compressed ranges, within the amplification size (at least one chunk).</summary>
    private int PlanRun(IReadOnlyList<RafsChunk> chunks, int i, out long bytes)
    {
        var previous = chunks[i];
        bytes = previous.CompressedSize;
        int j = i + 1;
        for (; j < chunks.Count; j++)
        {
            var chunk = chunks[j];
            if (chunk.IsHole) continue;
            if (chunk.BlobIndex != previous.BlobIndex || chunk.CompressedOffset != previous.CompressedOffset + previous.CompressedSize) break;
            if (bytes + chunk.CompressedSize > context.Options.AmplificationBytes || context.IsCached(chunk) || !context.ValidateQuiet(chunk)) break;
            bytes += chunk.CompressedSize;
            previous = chunk;
        }
        return j;
    }
}
