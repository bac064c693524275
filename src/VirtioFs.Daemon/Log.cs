using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon;

/// <summary>
/// The daemon's log messages; event ids 5000-5099 (the virtio-fs device in src/VirtioFs.Device 5100s, image serving
/// 5200s, the API 5500s).
/// Every event id in vfsd, one band per layer so a log line names its source: vhost-user 1000s, RAFS format 3000s,
/// FUSE 4000-4099, passthrough 4100s, image filesystem 4200s, chunk cache 4300s, daemon 5000s, OCI client 6000s
/// (registry backend 6050s), Vfs 7000s.
/// </summary>
internal static partial class Log
{
    [LoggerMessage(5000, LogLevel.Information, "vfsd {Version} serving {SharedDir} (cache={Cache}, readonly={ReadOnly}, xattr={Xattr}, queues={Queues}, pool={Pool})")]
    public static partial void Starting(ILogger logger, string version, string sharedDir, string cache, bool readOnly, bool xattr, int queues, int pool);

    [LoggerMessage(5001, LogLevel.Information, "front-end disconnected; exiting")]
    public static partial void Disconnected(ILogger logger);

    [LoggerMessage(5005, LogLevel.Error, "vfsd: {Message}")]
    public static partial void Fatal(ILogger logger, string message);

    [LoggerMessage(5006, LogLevel.Information, "signal {Signal} received; exiting")]
    public static partial void Signalled(ILogger logger, string signal);

    [LoggerMessage(5008, LogLevel.Information, "vfsd {Version} serving a nydusd-style mount tree; API on {ApiSocket}")]
    public static partial void ApiServing(ILogger logger, string version, string apiSocket);

    [LoggerMessage(5009, LogLevel.Information, "--log-rotation-size {Size} applies to --log-file only; logging to stderr, not rotated")]
    public static partial void RotationWithoutLogFile(ILogger logger, ulong size);

    [LoggerMessage(5010, LogLevel.Information, "vfsd {Version} serving a nydusd-style mount tree at {MountPoint} through /dev/fuse ({Threads} threads); API on {ApiSocket}")]
    public static partial void SharedFuseServing(ILogger logger, string version, string mountPoint, int threads, string apiSocket);

    [LoggerMessage(5007, LogLevel.Warning, "could not raise RLIMIT_NOFILE to {Limit}: errno {Errno}")]
    public static partial void RlimitFailed(ILogger logger, ulong limit, int errno);
}
