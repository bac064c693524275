using System.Runtime.InteropServices;

namespace VirtioFs.Storage;

/// <summary>The syscalls Tmds.LibC does not bind.</summary>
internal static partial class Interop
{
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial nint preadv(int fd, IoSegment* iov, int iovcnt, long offset);

    /// <summary>fallocate(2); with <see cref="FALLOC_FL_PUNCH_HOLE"/> | <see cref="FALLOC_FL_KEEP_SIZE"/> it frees a range,
    /// which then reads as zeros (linux/falloc.h).</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial int fallocate(int fd, int mode, long offset, long length);

    internal const int FALLOC_FL_KEEP_SIZE = 0x01, FALLOC_FL_PUNCH_HOLE = 0x02;
}
