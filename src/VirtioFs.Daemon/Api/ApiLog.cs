using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.Api;

/// <summary>The API server's log messages; event ids 5500-5599 (inside the daemon's band).</summary>
internal static partial class ApiLog
{
    [LoggerMessage(5500, LogLevel.Information, "API server listening on {Path}")]
    public static partial void Listening(ILogger logger, string path);

    [LoggerMessage(5501, LogLevel.Debug, "API {Method} {Path} -> {Status}")]
    public static partial void Request(ILogger logger, string method, string path, int status);

    [LoggerMessage(5502, LogLevel.Warning, "API request refused with {Status}: {Reason}")]
    public static partial void BadRequest(ILogger logger, int status, string reason);

    [LoggerMessage(5503, LogLevel.Warning, "API accept failed: {Message}")]
    public static partial void AcceptFailed(ILogger logger, string message);

    [LoggerMessage(5504, LogLevel.Warning, "API connection refused: {Max} connections already open")]
    public static partial void TooManyConnections(ILogger logger, int max);
}
