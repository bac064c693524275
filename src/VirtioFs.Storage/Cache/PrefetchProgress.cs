namespace VirtioFs.Storage.Cache;

/// <summary>Where a cache's background prefetch stands.</summary>
public enum PrefetchState
{
    /// <summary>No prefetch was started (none configured, or no cache directory).</summary>
    None,
    /// <summary>A prefetch is running.</summary>
    Running,
    /// <summary>Every prefetch started has gone through its whole list (chunk failures are counted, not fatal).</summary>
    Finished,
    /// <summary>The last prefetch was cancelled (the image was unmounted) or stopped on an error.</summary>
    Stopped,
}

/// <summary>
/// Snapshot of background prefetch progress. Totals grow as the prefetch walks its file list (a lazy list of every file
/// in a large image is never materialised), so "done of total" is exact once <see cref="State"/> is
/// <see cref="PrefetchState.Finished"/>: then <c>ChunksFetched + ChunksAlreadyCached + Errors</c> accounts for
/// <see cref="ChunksQueued"/> except chunks a guest read claimed first. Byte counts are compressed (backend) bytes.
/// </summary>
public sealed record PrefetchProgress(
    PrefetchState State,
    long FilesQueued, long FilesDone,
    long ChunksQueued, long ChunksFetched, long ChunksAlreadyCached,
    long BytesQueued, long BytesFetched,
    long Errors, int Workers,
    DateTimeOffset? Began, DateTimeOffset? Ended)
{
    /// <summary>True once a prefetch ran through its whole list.</summary>
    public bool Finished => State == PrefetchState.Finished;
}
