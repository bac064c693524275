using Microsoft.Extensions.Logging;

namespace VirtioFs.Storage.Backend.Registry;

/// <summary>Registry backend log messages; event ids 6050-6059 (the OCI client uses 6000-6049).</summary>
internal static partial class RegistryBackendLog
{
    [LoggerMessage(6050, LogLevel.Error, "registry blob {BlobId}: read of {Length} bytes at {Offset} failed with errno {Errno}")]
    public static partial void ReadFailed(ILogger logger, string blobId, ulong offset, int length, int errno);
}
