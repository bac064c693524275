using Microsoft.Extensions.Logging;

namespace VirtioFs.Storage.Backend;

/// <summary>HTTP blob backend log messages; event ids 6050-6059 (the OCI and object storage clients use 6000-6049).</summary>
internal static partial class RemoteBackendLog
{
    [LoggerMessage(6050, LogLevel.Error, "{Service} blob {BlobId}: read of {Length} bytes at {Offset} failed with errno {Errno}")]
    public static partial void ReadFailed(ILogger logger, string service, string blobId, ulong offset, int length, int errno);
}
