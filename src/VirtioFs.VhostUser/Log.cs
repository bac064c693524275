using Microsoft.Extensions.Logging;

namespace VirtioFs.VhostUser;

/// <summary>Source-generated log messages of the vhost-user transport; event ids 1000-1099.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "vhost-user front-end connected")]
    public static partial void Connected(ILogger logger);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "vhost-user front-end disconnected ({Reason})")]
    public static partial void Disconnected(ILogger logger, string reason);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Warning, Message = "refused vhost-user message {Request}: {Reason}")]
    public static partial void MessageRefused(ILogger logger, VhostUserRequest request, string reason);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "unknown vhost-user request {Request}")]
    public static partial void UnknownRequest(ILogger logger, uint request);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Warning, Message = "vhost-user request {Request} failed: {Reason}")]
    public static partial void RequestFailed(ILogger logger, VhostUserRequest request, string reason);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Error, Message = "queue {Queue} handler threw")]
    public static partial void QueueHandlerFailed(ILogger logger, int queue, Exception exception);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Warning, Message = "queue {Queue}: the driver published an impossible avail index; the ring is broken until reset")]
    public static partial void QueueBroken(ILogger logger, int queue);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Error, Message = "queue {Queue}: chain {Head} handler threw; completed with length 0")]
    public static partial void ChainHandlerFailed(ILogger logger, int queue, ushort head, Exception exception);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Debug, Message = "vhost-user request {Request} flags 0x{Flags:x} size {Size} fds {Fds}")]
    public static partial void MessageReceived(ILogger logger, VhostUserRequest request, uint flags, uint size, int fds);

    [LoggerMessage(EventId = 1009, Level = LogLevel.Error, Message = "queue {Queue}: poll failed with errno {Errno}; worker stops")]
    public static partial void WorkerPollFailed(ILogger logger, int queue, int errno);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Information, Message = "vhost-user socket listening at {Path}")]
    public static partial void Listening(ILogger logger, string path);

    [LoggerMessage(EventId = 1012, Level = LogLevel.Error, Message = "vhost-user request {Request} threw; answered as failed")]
    public static partial void RequestThrew(ILogger logger, VhostUserRequest request, Exception exception);

    [LoggerMessage(EventId = 1011, Level = LogLevel.Debug, Message = "queue {Queue}: cannot activate yet: {Reason}")]
    public static partial void QueueNotActive(ILogger logger, int queue, string reason);
}
