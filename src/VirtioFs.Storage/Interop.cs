using System.Runtime.InteropServices;

namespace VirtioFs.Storage;

/// <summary>The syscalls Tmds.LibC does not bind.</summary>
internal static unsafe partial class Interop
{
    [LibraryImport("libc", SetLastError = true)]
    internal static partial nint preadv(int fd, IoSegment* iov, int iovcnt, long offset);
}
