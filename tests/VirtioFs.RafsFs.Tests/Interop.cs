using System.Runtime.InteropServices;

namespace VirtioFs.RafsFs.Tests;

/// <summary>The syscalls the tests build trees and check a mount with (lseek, umount, mknod; statx and xattrs are in
/// tests/Shared/HostSyscalls.cs).</summary>
internal static partial class Interop
{
    public const int MNT_DETACH = 2;
    public const int SEEK_DATA = 3, SEEK_HOLE = 4;

    public static long Seek(SafeHandle fd, long offset, int whence, out int errno)
    {
        long r = lseek((int)fd.DangerousGetHandle(), offset, whence);
        errno = r < 0 ? Marshal.GetLastPInvokeError() : 0;
        return r;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkfifo(string path, int mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknod(string path, int mode, ulong dev);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int link(string oldpath, string newpath);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lchown(string path, int uid, int gid);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chmod(string path, int mode);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static unsafe partial int utimensat(int dirfd, string path, long* times, int flags);

    public static unsafe void SetTimes(string path, long seconds, long nanos)
    {
        var t = stackalloc long[4] { seconds, nanos, seconds, nanos };
        if (utimensat(-100, path, t, 0x100) != 0) throw new IOException($"utimensat {path}: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void Check(int rc, string what)
    {
        if (rc != 0) throw new IOException($"{what}: errno {Marshal.GetLastPInvokeError()}");
    }
}
