using Microsoft.Extensions.Logging;

namespace VirtioFs.Rafs;

/// <summary>Source-generated log messages of the Rafs project; event ids 3000-3099.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 3000, Level = LogLevel.Information, Message = "Building RAFS v{FsVersion} image {Bootstrap}: compressor {Compressor}, digester {Digester}, chunk size {ChunkSize}")]
    public static partial void BuildStarted(ILogger logger, int fsVersion, string bootstrap, string compressor, string digester, uint chunkSize);

    [LoggerMessage(EventId = 3001, Level = LogLevel.Information, Message = "Wrote blob {BlobId}: {Chunks} chunks, {Bytes} bytes")]
    public static partial void BlobWritten(ILogger logger, string blobId, uint chunks, ulong bytes);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Built {Bootstrap}: {Inodes} inodes, {Chunks} chunks, {Unique} unique, dedup ratio {Ratio:F3}, root digest {Root}")]
    public static partial void BuildFinished(ILogger logger, string bootstrap, int inodes, long chunks, long unique, double ratio, string root);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Debug, Message = "Chunk dictionary {Path}: {Chunks} chunks in {Blobs} blobs")]
    public static partial void ChunkDictLoaded(ILogger logger, string path, int chunks, int blobs);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Warning, Message = "Image check failed: {Error}")]
    public static partial void CheckFailed(ILogger logger, string error);

    [LoggerMessage(EventId = 3005, Level = LogLevel.Information, Message = "Image check passed: {Inodes} inodes, {Blobs} blobs")]
    public static partial void CheckPassed(ILogger logger, ulong inodes, int blobs);
}
