using System.Runtime.InteropServices;

namespace VirtioFs.Storage;

/// <summary>The syscalls Tmds.LibC does not bind.</summary>
internal static partial class Interop
{
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial nint preadv(int fd, IoSegment* iov, int iovcnt, long offset);
}
