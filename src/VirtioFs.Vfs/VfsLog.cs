using Microsoft.Extensions.Logging;

namespace VirtioFs.Vfs;

/// <summary>The Vfs's log messages; event ids 7000-7099.</summary>
internal static partial class VfsLog
{
    [LoggerMessage(7000, LogLevel.Information, "mounted {Path} (slot {Slot})")]
    public static partial void Mounted(ILogger logger, string path, int slot);

    [LoggerMessage(7001, LogLevel.Information, "unmounted {Path} (slot {Slot})")]
    public static partial void Unmounted(ILogger logger, string path, int slot);

    [LoggerMessage(7002, LogLevel.Warning, "Init of the filesystem at {Path} failed: errno {Errno}")]
    public static partial void InitFailed(ILogger logger, string path, int errno);

    [LoggerMessage(7003, LogLevel.Warning, "unmount of {Path}: {Active} requests still inside the filesystem after the drain timeout")]
    public static partial void DrainTimedOut(ILogger logger, string path, int active);

    [LoggerMessage(7004, LogLevel.Error, "the filesystem at {Path} returned id 0x{Id:x}, wider than 48 bits: refused with EIO")]
    public static partial void IdTooWide(ILogger logger, string path, ulong id);

    [LoggerMessage(7005, LogLevel.Error, "the filesystem at {Path} produced a malformed READDIRPLUS record")]
    public static partial void BadRelayRecord(ILogger logger, string path);
}
