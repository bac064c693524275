using Microsoft.Extensions.Logging;

namespace VirtioFs.Fuse;

/// <summary>Log messages of the FUSE layer: event ids 4000-4099 (transport /dev/fuse: 4050-4099).</summary>
internal static partial class FuseLog
{
    [LoggerMessage(EventId = 4000, Level = LogLevel.Information, Message = "FUSE INIT: kernel {Major}.{Minor}, answered 7.{OurMinor}, flags {Flags}, max_write {MaxWrite}")]
    public static partial void InitDone(ILogger logger, uint major, uint minor, uint ourMinor, FuseInitFlags flags, uint maxWrite);

    [LoggerMessage(EventId = 4001, Level = LogLevel.Warning, Message = "FUSE INIT refused: kernel protocol {Major}.{Minor} is older than 7.27")]
    public static partial void InitRefused(ILogger logger, uint major, uint minor);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Debug, Message = "Malformed FUSE request (opcode {Opcode}, unique {Unique}): {Reason}")]
    public static partial void Malformed(ILogger logger, uint opcode, ulong unique, string reason);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Error, Message = "Filesystem threw on opcode {Opcode}; answered EIO")]
    public static partial void FileSystemThrew(ILogger logger, Exception exception, FuseOpcode opcode);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Debug, Message = "FUSE request {Opcode} before INIT refused")]
    public static partial void BeforeInit(ILogger logger, uint opcode);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Debug, Message = "Unsupported FUSE opcode {Opcode}: ENOSYS")]
    public static partial void Unsupported(ILogger logger, uint opcode);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Information, Message = "FUSE DESTROY received")]
    public static partial void Destroyed(ILogger logger);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Error, Message = "FUSE INIT refused: the kernel does not offer {Missing}, which the options ask for")]
    public static partial void InitMissingFlags(ILogger logger, FuseInitFlags missing);

    [LoggerMessage(EventId = 4050, Level = LogLevel.Information, Message = "Mounted FUSE at {MountPoint} (fd {Fd}, {Threads} threads)")]
    public static partial void Mounted(ILogger logger, string mountPoint, int fd, int threads);

    [LoggerMessage(EventId = 4051, Level = LogLevel.Information, Message = "FUSE session at {MountPoint} ended")]
    public static partial void SessionEnded(ILogger logger, string mountPoint);

    [LoggerMessage(EventId = 4052, Level = LogLevel.Warning, Message = "/dev/fuse {Operation} failed: errno {Errno}")]
    public static partial void DeviceError(ILogger logger, string operation, int errno);

    [LoggerMessage(EventId = 4053, Level = LogLevel.Debug, Message = "Mount readahead not raised ({Path}): {Reason}")]
    public static partial void ReadaheadNotSet(ILogger logger, string path, string reason);
}
