using Microsoft.Extensions.Logging;
using VirtioFs.Virtio;

namespace VirtioFs.Device;

/// <summary>The virtio-fs device's log messages: event ids 5100-5149 (the device band inside the daemon's 5000s; the
/// bands of every layer are listed in src/VirtioFs.Daemon/Log.cs).</summary>
internal static partial class Log
{
    [LoggerMessage(5100, LogLevel.Error, "queue {Queue}: request in chain {Head} threw in the pool; completed with length 0")]
    public static partial void PoolRequestFailed(ILogger logger, int queue, ushort head, Exception exception);

    [LoggerMessage(5101, LogLevel.Debug, "driver acknowledged features 0x{Features:x}")]
    public static partial void FeaturesAcknowledged(ILogger logger, ulong features);

    [LoggerMessage(5102, LogLevel.Information, "device reset")]
    public static partial void DeviceReset(ILogger logger);

    [LoggerMessage(5103, LogLevel.Warning, "malformed descriptor chain (head {Head}): {Error}; returned with length 0")]
    public static partial void BadChain(ILogger logger, ushort head, ChainError error);
}
