using Microsoft.Extensions.Logging;

namespace VirtioFs.RafsFs;

/// <summary>Image filesystem log messages; event ids 4200-4299 (storage 4000s, passthrough 4100s).</summary>
internal static partial class RafsFsLog
{
    [LoggerMessage(4200, LogLevel.Information, "serving RAFS v{Version} image {Bootstrap}: {Inodes} inodes, {Blobs} blob(s), chunk size {ChunkSize}, merkle check {Merkle}")]
    public static partial void Serving(ILogger logger, int version, string bootstrap, ulong inodes, int blobs, uint chunkSize, bool merkle);

    [LoggerMessage(4201, LogLevel.Error, "merkle: inode {Ino} ({Kind}) does not match its digest in the image; answered EIO")]
    public static partial void DigestMismatch(ILogger logger, ulong ino, string kind);

    [LoggerMessage(4202, LogLevel.Warning, "image inode {Ino} unreadable (errno {Errno}) during {Operation}")]
    public static partial void CorruptInode(ILogger logger, ulong ino, int errno, string operation);

    [LoggerMessage(4203, LogLevel.Warning, "open handle table full ({Limit}); open refused with ENFILE")]
    public static partial void TooManyOpen(ILogger logger, int limit);

    [LoggerMessage(4204, LogLevel.Information, "prefetching {Source} in the background ({Threads} threads, {Bandwidth} bytes/s, 0 = unlimited)")]
    public static partial void PrefetchStarted(ILogger logger, string source, int threads, long bandwidth);

    [LoggerMessage(4205, LogLevel.Information, "prefetch finished: {Files} files, {Chunks} chunks, {Bytes} bytes, {Errors} errors")]
    public static partial void PrefetchFinished(ILogger logger, long files, long chunks, long bytes, long errors);

    [LoggerMessage(4206, LogLevel.Warning, "prefetch: {Count} listed path(s) are not in the image, e.g. {Example}")]
    public static partial void PrefetchMissing(ILogger logger, int count, string example);

    [LoggerMessage(4207, LogLevel.Error, "prefetch failed: {Message}")]
    public static partial void PrefetchFailed(ILogger logger, string message);

    [LoggerMessage(4208, LogLevel.Information, "image metrics: reads {Reads} (errors {ReadErrors}), cache hits {Hits}, misses {Misses}, chunks fetched {Fetched}, backend reads {BackendReads} ({BackendBytes} bytes), digest errors {DigestErrors}, cache repairs {Repairs}, ready chunks {Ready}/{Total}")]
    public static partial void Metrics(ILogger logger, long reads, long readErrors, long hits, long misses, long fetched, long backendReads,
        long backendBytes, long digestErrors, long repairs, long ready, long total);

    [LoggerMessage(4209, LogLevel.Information, "image trusted: root digest {Root} ({How})")]
    public static partial void Trusted(ILogger logger, string root, string how);

    [LoggerMessage(4210, LogLevel.Information, "prefetching the shared libraries of each program as it is first read (DT_NEEDED, as ld.so searches them)")]
    public static partial void DependencyPrefetchOn(ILogger logger);

    [LoggerMessage(4211, LogLevel.Warning, "library prefetch stopped: {Message}")]
    public static partial void DependencyPrefetchFailed(ILogger logger, string message);
}
