using Microsoft.Extensions.Logging;

namespace VirtioFs.Storage;

/// <summary>Storage log messages; event ids 4300-4399 (the registry backend's are 6050-6099, beside the OCI client's).</summary>
internal static partial class StorageLog
{
    [LoggerMessage(4300, LogLevel.Error, "blob {BlobId} chunk {Chunk}: digest mismatch (got {Actual}, expected {Expected}); the read fails with EIO")]
    public static partial void DigestMismatch(ILogger logger, string blobId, uint chunk, string actual, string expected);

    [LoggerMessage(4301, LogLevel.Error, "blob {BlobId} chunk {Chunk}: does not decompress with {Compressor}; the read fails with EIO")]
    public static partial void DecompressFailed(ILogger logger, string blobId, uint chunk, string compressor);

    [LoggerMessage(4302, LogLevel.Error, "blob {BlobId}: backend read of {Length} bytes at {Offset} failed with errno {Errno}")]
    public static partial void BackendFailed(ILogger logger, string blobId, ulong offset, int length, int errno);

    [LoggerMessage(4303, LogLevel.Error, "blob {BlobId} chunk {Chunk}: the image describes it impossibly ({Reason}); the read fails with EIO")]
    public static partial void BadChunk(ILogger logger, string blobId, uint chunk, string reason);

    [LoggerMessage(4304, LogLevel.Warning, "blob {BlobId} chunk {Chunk}: cached copy is corrupt ({Reason}); fetching it again from the backend")]
    public static partial void CacheCorrupt(ILogger logger, string blobId, uint chunk, string reason);

    [LoggerMessage(4305, LogLevel.Warning, "chunk map {Path} is unusable ({Reason}); starting with an empty cache for this blob")]
    public static partial void ChunkMapReset(ILogger logger, string path, string reason);

    [LoggerMessage(4306, LogLevel.Error, "cache file {Path}: {Operation} failed: {Error}")]
    public static partial void CacheIoFailed(ILogger logger, string path, string operation, string error);

    [LoggerMessage(4307, LogLevel.Information, "blob {BlobId}: cache {Path} has {Ready} of {Count} chunks ready")]
    public static partial void CacheOpened(ILogger logger, string blobId, string path, int ready, uint count);

    [LoggerMessage(4308, LogLevel.Information, "prefetch of {Files} files finished: {Chunks} chunks, {Bytes} bytes fetched, {Errors} errors")]
    public static partial void PrefetchDone(ILogger logger, long files, long chunks, long bytes, long errors);

    [LoggerMessage(4320, LogLevel.Information, "this VM reports free pages to its host: blobs and cache files are read in 4 KiB pages, asked for ahead of use, not by the kernel's large-folio readahead")]
    public static partial void OrderZeroReads(ILogger logger);
}
