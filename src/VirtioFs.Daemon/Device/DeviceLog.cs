using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon;

/// <summary>Log messages of the virtio-fs device's request pool: event ids 5100-5149 of the daemon band.</summary>
internal static partial class Log
{
    [LoggerMessage(5100, LogLevel.Error, "queue {Queue}: request in chain {Head} threw in the pool; completed with length 0")]
    public static partial void PoolRequestFailed(ILogger logger, int queue, ushort head, Exception exception);
}
