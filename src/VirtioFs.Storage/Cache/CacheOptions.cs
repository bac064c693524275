namespace VirtioFs.Storage.Cache;

/// <summary>When cached chunk data is checked against its digest (<c>--verify=fetch|always</c>).</summary>
public enum VerifyMode
{
    /// <summary>Chunks are verified when fetched from the backend; the cache is trusted afterwards.</summary>
    Fetch,
    /// <summary>Cached chunks are verified again on every read (the cache directory is untrusted storage); a chunk that
    /// fails is fetched again from the backend.</summary>
    Always,
}

/// <summary>Options of a <see cref="BlobCacheManager"/>.</summary>
public sealed class CacheOptions
{
    /// <summary>Maximum chunk size the storage layer accepts (nydus: a power of two between 4 KiB and 16 MiB).</summary>
    public const int MaxChunkSize = 16 << 20;

    /// <summary>Largest merged backend read (the amplification size cannot go beyond it).</summary>
    public const int MaxMergedRead = 32 << 20;

    /// <summary>Directory of the persistent chunk cache (<c>--cache-dir</c>); null reads straight from the backend
    /// into the destination without keeping anything.</summary>
    public string? CacheDir { get; init; }

    public VerifyMode Verify { get; init; } = VerifyMode.Fetch;

    /// <summary>A backend read that fetches a missing chunk is extended to the following missing chunks of the same
    /// file while they are contiguous in the blob, up to this many compressed bytes (nydus <c>amplify_io</c>). nydusd's
    /// default is 1 MiB (api/src/config.rs default_user_io_batch_size); benchmarks/cold-start.sh fetched 24.5 MB with it
    /// against 12.7 MB with 128 KiB and started 0.2 s later, hence 128 KiB here. 0 disables amplification; the chunks
    /// one request needs are still merged.</summary>
    public int AmplificationBytes { get; init; } = 128 * 1024;

    internal void Validate()
    {
        if (AmplificationBytes < 0 || AmplificationBytes > MaxMergedRead)
            throw new ArgumentOutOfRangeException(nameof(AmplificationBytes), AmplificationBytes, $"must be 0..{MaxMergedRead}");
        if (CacheDir is { Length: 0 }) throw new ArgumentException("cache directory is empty", nameof(CacheDir));
    }
}

/// <summary>Snapshot of a cache's counters (nydus /api/v1/metrics/blobcache plus prefetch progress).</summary>
public sealed record CacheMetrics(
    long Reads, long ReadErrors,
    long CacheHits, long CacheMisses, long PendingWaits,
    long ChunksFetched, long BackendReads, long BackendBytes, long DigestErrors, long CacheRepairs,
    long PrefetchFilesTotal, long PrefetchFilesDone, long PrefetchChunks, long PrefetchBytes, long PrefetchErrors,
    long ReadyChunks, long TotalChunks);
