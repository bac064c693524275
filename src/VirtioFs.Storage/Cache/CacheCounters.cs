namespace VirtioFs.Storage.Cache;

/// <summary>
/// Every counter of one cache, in one place: the read path, the fetcher and the prefetcher update them with
/// <see cref="Interlocked"/> through a reference to the one instance (<see cref="CacheContext.Counters"/>, a field, never
/// a copy), and <see cref="Metrics"/> / <see cref="Progress"/> take snapshots for the API.
/// </summary>
internal struct CacheCounters
{
    // Reads (nydus /api/v1/metrics/blobcache).
    public long Reads, ReadErrors, Hits, Misses, PendingWaits;
    // Fetching.
    public long ChunksFetched, BackendReads, BackendBytes, DigestErrors, Repairs, CrossFileChunks, ZeroChunksAsHoles;
    // Prefetch: files, chunks and bytes done, what the walk has queued so far, what it found cached, when it ran.
    public long PrefetchFilesTotal, PrefetchFilesDone, PrefetchChunks, PrefetchBytes, PrefetchErrors;
    public long PrefetchQueuedChunks, PrefetchQueuedBytes, PrefetchAlreadyCached, PrefetchBeganMs, PrefetchEndedMs;
    public int PrefetchRunning, PrefetchWorkers, PrefetchLastState;

    public readonly CacheMetrics Metrics(long readyChunks, long totalChunks) => new(
        Read(in Reads), Read(in ReadErrors), Read(in Hits), Read(in Misses), Read(in PendingWaits),
        Read(in ChunksFetched), Read(in BackendReads), Read(in BackendBytes), Read(in DigestErrors), Read(in Repairs),
        Read(in PrefetchFilesTotal), Read(in PrefetchFilesDone), Read(in PrefetchChunks), Read(in PrefetchBytes), Read(in PrefetchErrors),
        readyChunks, totalChunks);

    public readonly PrefetchProgress Progress()
    {
        long began = Read(in PrefetchBeganMs), ended = Read(in PrefetchEndedMs);
        var state = Volatile.Read(in PrefetchRunning) > 0 ? PrefetchState.Running : (PrefetchState)Volatile.Read(in PrefetchLastState);
        return new PrefetchProgress(state, Read(in PrefetchFilesTotal), Read(in PrefetchFilesDone),
            Read(in PrefetchQueuedChunks), Read(in PrefetchChunks), Read(in PrefetchAlreadyCached),
            Read(in PrefetchQueuedBytes), Read(in PrefetchBytes), Read(in PrefetchErrors), Volatile.Read(in PrefetchWorkers),
            began == 0 ? null : DateTimeOffset.FromUnixTimeMilliseconds(began),
            ended == 0 || state == PrefetchState.Running ? null : DateTimeOffset.FromUnixTimeMilliseconds(ended));
    }

    private static long Read(ref readonly long counter) => Volatile.Read(in counter);
}
