using System.Runtime.InteropServices;

namespace VirtioFs.RafsFs.Tests;

/// <summary>The syscalls the tests check a mount with (statx for nanosecond times, xattrs, lseek, umount).</summary>
internal static partial class Interop
{
    public const int MNT_DETACH = 2;
    public const int SEEK_DATA = 3, SEEK_HOLE = 4;

    [StructLayout(LayoutKind.Sequential)]
    public struct StatxTimestamp
    {
        public long tv_sec;
        public uint tv_nsec;
        public int __reserved;
    }

    [StructLayout(LayoutKind.Sequential, Size = 256)]
    public struct Statx
    {
        public uint stx_mask;
        public uint stx_blksize;
        public ulong stx_attributes;
        public uint stx_nlink;
        public uint stx_uid;
        public uint stx_gid;
        public ushort stx_mode;
        public ushort __spare0;
        public ulong stx_ino;
        public ulong stx_size;
        public ulong stx_blocks;
        public ulong stx_attributes_mask;
        public StatxTimestamp stx_atime;
        public StatxTimestamp stx_btime;
        public StatxTimestamp stx_ctime;
        public StatxTimestamp stx_mtime;
        public uint stx_rdev_major;
        public uint stx_rdev_minor;
    }

    public static Statx Lstat(string path)
    {
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
        if (statx(AtFdCwd, path, AtSymlinkNoFollow, 0xfff, out var s) != 0)
            throw new IOException($"statx {path}: errno {Marshal.GetLastPInvokeError()}");
        return s;
    }

    /// <summary>Every xattr of <paramref name="path"/> (not following symlinks), name to value.</summary>
    public static unsafe SortedDictionary<string, byte[]> Xattrs(string path)
    {
        var result = new SortedDictionary<string, byte[]>(StringComparer.Ordinal);
        var list = new byte[65536];
        long n = llistxattr(path, list, list.Length);
        if (n < 0) throw new IOException($"llistxattr {path}: errno {Marshal.GetLastPInvokeError()}");
        foreach (var name in System.Text.Encoding.UTF8.GetString(list, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            var value = new byte[65536];
            long v = lgetxattr(path, name, value, value.Length);
            if (v < 0) throw new IOException($"lgetxattr {path} {name}: errno {Marshal.GetLastPInvokeError()}");
            result[name] = value.AsSpan(0, (int)v).ToArray();
        }
        return result;
    }

    /// <summary>0 or the errno of setting an xattr (through the mount: expected EROFS).</summary>
    public static int TrySetXattr(string path, string name, byte[] value) =>
        lsetxattr(path, name, value, value.Length, 0) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public static long Seek(SafeHandle fd, long offset, int whence, out int errno)
    {
        long r = lseek((int)fd.DangerousGetHandle(), offset, whence);
        errno = r < 0 ? Marshal.GetLastPInvokeError() : 0;
        return r;
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, out Statx buffer);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long llistxattr(string path, byte[] list, long size);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long lgetxattr(string path, string name, byte[] value, long size);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lsetxattr(string path, string name, byte[] value, long size, int flags);

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
