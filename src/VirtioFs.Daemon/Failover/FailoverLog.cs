using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.Failover;

/// <summary>Failover and hot upgrade messages; event ids 5300-5399 (the daemon's band is 5000-5999).</summary>
internal static partial class FailoverLog
{
    [LoggerMessage(5300, LogLevel.Warning, "a previous daemon crashed: {MountPoint} is still a FUSE mount and the API socket {ApiSocket} refuses connections; waiting in INIT for takeover")]
    public static partial void PredecessorCrashed(ILogger logger, string mountPoint, string apiSocket);

    [LoggerMessage(5301, LogLevel.Information, "--upgrade: not mounting {MountPoint}; waiting in INIT for takeover")]
    public static partial void WaitingForTakeover(ILogger logger, string mountPoint);

    [LoggerMessage(5302, LogLevel.Information, "sent state ({Bytes} bytes: {Nodes} nodes, {Handles} handles) and the /dev/fuse fd to supervisor {Supervisor}")]
    public static partial void StateSent(ILogger logger, int bytes, int nodes, int handles, string supervisor);

    [LoggerMessage(5303, LogLevel.Information, "took over {MountPoint} from supervisor {Supervisor} ({Bytes} bytes: {Nodes} nodes, {Handles} handles) in {Milliseconds} ms; READY")]
    public static partial void TookOver(ILogger logger, string mountPoint, string supervisor, int bytes, int nodes, int handles, long milliseconds);

    [LoggerMessage(5304, LogLevel.Information, "serving the taken-over session at {MountPoint} (failover policy {Policy}); RUNNING")]
    public static partial void Started(ILogger logger, string mountPoint, string policy);

    [LoggerMessage(5305, LogLevel.Warning, "FUSE_NOTIFY_RESEND failed (errno {Errno}; the kernel needs Linux 6.9): requests the predecessor read and never answered stay unanswered")]
    public static partial void ResendFailed(ILogger logger, int errno);

    [LoggerMessage(5306, LogLevel.Warning, "takeover refused: {Reason}")]
    public static partial void TakeoverRefused(ILogger logger, string reason);

    [LoggerMessage(5307, LogLevel.Information, "exit: leaving {MountPoint} mounted for the supervisor and the next daemon")]
    public static partial void LeavingMounted(ILogger logger, string mountPoint);

    [LoggerMessage(5308, LogLevel.Information, "{Count} requests the predecessor had read and never answered were resent by the kernel ({Action})")]
    public static partial void Resent(ILogger logger, long count, string action);

    [LoggerMessage(5309, LogLevel.Warning, "sendfd failed: {Reason}")]
    public static partial void SendFailed(ILogger logger, string reason);
}
