using System.Runtime.InteropServices;

namespace VirtioFs.Tests.Shared;

/// <summary>
/// statx(2) and the xattr calls the tests observe host files with: exact errno values, nanosecond times, xattrs of
/// symlinks. One source file, linked into each test project that needs it
/// (<c>&lt;Compile Include="../Shared/HostSyscalls.cs" Link="Shared/HostSyscalls.cs" /&gt;</c>), internal to each.
/// </summary>
internal static partial class HostSyscalls
{
    private const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
    private const uint StatxBasicStats = 0x7FF, StatxBtime = 0x800;

    /// <summary>struct statx_timestamp (include/uapi/linux/stat.h).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct StatxTimestamp
    {
        public long tv_sec;
        public uint tv_nsec;
        public int __reserved;
    }

    /// <summary>struct statx (include/uapi/linux/stat.h), 256 bytes; the fields after stx_dev_minor are not read.</summary>
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
        public uint stx_dev_major;
        public uint stx_dev_minor;
    }

    /// <summary>lstat semantics (the link itself, not its target); throws IOException with the errno.</summary>
    public static Statx Lstat(string path) => StatxOf(path, AtSymlinkNoFollow);

    /// <summary>stat semantics (a symlink is followed); throws IOException with the errno.</summary>
    public static Statx Stat(string path) => StatxOf(path, 0);

    private static Statx StatxOf(string path, int flags)
    {
        if (statx(AtFdCwd, path, flags, StatxBasicStats | StatxBtime, out Statx s) != 0)
        {
            throw new IOException($"statx {path}: errno {Marshal.GetLastPInvokeError()}");
        }
        return s;
    }

    /// <summary>Every xattr of <paramref name="path"/> (not following symlinks), name to value; throws IOException with the errno.</summary>
    public static SortedDictionary<string, byte[]> Xattrs(string path)
    {
        var result = new SortedDictionary<string, byte[]>(StringComparer.Ordinal);
        var list = new byte[65536];
        nint n = llistxattr(path, list, (nuint)list.Length);
        if (n < 0) throw new IOException($"llistxattr {path}: errno {Marshal.GetLastPInvokeError()}");
        foreach (string name in System.Text.Encoding.UTF8.GetString(list, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            var value = new byte[65536];
            nint v = lgetxattr(path, name, value, (nuint)value.Length);
            if (v < 0) throw new IOException($"lgetxattr {path} {name}: errno {Marshal.GetLastPInvokeError()}");
            result[name] = value.AsSpan(0, (int)v).ToArray();
        }
        return result;
    }

    /// <summary>0, or the errno of setting an xattr on <paramref name="path"/> itself (not following symlinks).</summary>
    public static int TrySetXattr(string path, string name, byte[] value) =>
        lsetxattr(path, name, value, (nuint)value.Length, 0) == 0 ? 0 : Marshal.GetLastPInvokeError();

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, out Statx buffer);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int setxattr(string path, string name, byte[] value, nuint size, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint getxattr(string path, string name, byte[] value, nuint size);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint listxattr(string path, byte[] list, nuint size);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int removexattr(string path, string name);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lsetxattr(string path, string name, byte[] value, nuint size, int flags);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint lgetxattr(string path, string name, byte[] value, nuint size);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint llistxattr(string path, byte[] list, nuint size);
}
