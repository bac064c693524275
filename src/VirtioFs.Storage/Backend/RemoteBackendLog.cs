using Microsoft.Extensions.Logging;

namespace VirtioFs.Storage.Backend;

/// <summary>HTTP blob backend log messages; event ids 6050-6059 (the OCI and object storage clients use 6000-6049).</summary>
internal static partial class RemoteBackendLog
{
    [LoggerMessage(6050, LogLevel.Error, "{Service} blob {BlobId}: read of {Length} bytes at {Offset} failed with errno {Errno}")]
    public static partial void ReadFailed(ILogger logger, string service, string blobId, ulong offset, int length, int errno);

    /// <summary>The per-request timeline for profiling a cold start (--log-level debug): when each read ended, how long
    /// it took and how many reads were on the wire beside it.</summary>
    [LoggerMessage(6051, LogLevel.Debug, "{Service} read {Length} bytes at {Offset}: {Milliseconds:F1} ms, {InFlight} in flight when it started, {Mode}")]
    public static partial void ReadDone(ILogger logger, string service, ulong offset, int length, double milliseconds, int inFlight, string mode);
}
