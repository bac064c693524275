using System.Runtime.InteropServices;

namespace VirtioFs.Passthrough;

/// <summary>
/// The libc calls the passthrough makes. Declared here (not taken from Tmds.LibC 0.5) because that package lacks
/// statx, getdents64, renameat2, preadv/pwritev, copy_file_range and the xattr family, and its wrapper types for the
/// rest would make this file a mix of two styles. Structs match the x86_64/aarch64 LP64 ABI (glibc 2.36).
/// </summary>
internal static unsafe partial class Interop
{
    private const string Libc = "libc";

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_REMOVEDIR = 0x200;
    public const int AT_EMPTY_PATH = 0x1000;
    public const int AT_NO_AUTOMOUNT = 0x800;

    public const int O_ACCMODE = 3;
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_NOCTTY = 0x100;
    public const int O_TRUNC = 0x200;
    public const int O_APPEND = 0x400;
    public const int O_DIRECT = 0x4000;
    public const int O_DIRECTORY = 0x10000;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_NOATIME = 0x40000;
    public const int O_CLOEXEC = 0x80000;
    public const int O_PATH = 0x200000;
    public const int O_TMPFILE = 0x400000 | O_DIRECTORY;

    public const uint S_IFMT = 0xF000;
    public const uint S_IFDIR = 0x4000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFLNK = 0xA000;
    public const uint S_ISUID = 0x800;
    public const uint S_ISGID = 0x400;
    public const uint S_IXGRP = 0x8;

    public const uint STATX_BASIC_STATS = 0x7FF;
    public const uint STATX_MNT_ID = 0x1000;

    public const int F_OFD_GETLK = 36;
    public const int F_OFD_SETLK = 37;
    public const int F_OFD_SETLKW = 38;
    public const int F_UNLCK = 2;
    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;
    public const int IOV_MAX = 1024;

    [StructLayout(LayoutKind.Sequential)]
    public struct StatxTimestamp
    {
        public long tv_sec;
        public uint tv_nsec;
        public int __reserved;
    }

    /// <summary>linux/stat.h struct statx (256 bytes, the same on every architecture).</summary>
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
        public ulong stx_mnt_id;
    }

    /// <summary>struct statvfs on LP64 glibc.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct StatVfs
    {
        public ulong f_bsize;
        public ulong f_frsize;
        public ulong f_blocks;
        public ulong f_bfree;
        public ulong f_bavail;
        public ulong f_files;
        public ulong f_ffree;
        public ulong f_favail;
        public ulong f_fsid;
        public ulong f_flag;
        public ulong f_namemax;
        public fixed int __f_spare[6];
    }

    /// <summary>struct flock on LP64.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Flock
    {
        public short l_type;
        public short l_whence;
        public long l_start;
        public long l_len;
        public int l_pid;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec
    {
        public long tv_sec;
        public long tv_nsec;
    }

    public const long UTIME_NOW = (1L << 30) - 1;
    public const long UTIME_OMIT = (1L << 30) - 2;

    [LibraryImport(Libc, SetLastError = true)] public static partial int openat(int dirfd, byte* path, int flags, uint mode);
    [LibraryImport(Libc, SetLastError = true)] public static partial int close(int fd);
    [LibraryImport(Libc, SetLastError = true)] public static partial int dup(int fd);
    [LibraryImport(Libc, SetLastError = true)] public static partial int statx(int dirfd, byte* path, int flags, uint mask, Statx* buf);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fstatvfs(int fd, StatVfs* buf);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint readlinkat(int dirfd, byte* path, byte* buf, nuint size);
    [LibraryImport(Libc, SetLastError = true)] public static partial int mkdirat(int dirfd, byte* path, uint mode);
    [LibraryImport(Libc, SetLastError = true)] public static partial int mknodat(int dirfd, byte* path, uint mode, ulong dev);
    [LibraryImport(Libc, SetLastError = true)] public static partial int symlinkat(byte* target, int dirfd, byte* path);
    [LibraryImport(Libc, SetLastError = true)] public static partial int linkat(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, int flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int unlinkat(int dirfd, byte* path, int flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int renameat2(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, uint flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fchmodat(int dirfd, byte* path, uint mode, int flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fchmod(int fd, uint mode);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fchownat(int dirfd, byte* path, uint owner, uint group, int flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int truncate(byte* path, long length);
    [LibraryImport(Libc, SetLastError = true)] public static partial int ftruncate(int fd, long length);
    [LibraryImport(Libc, SetLastError = true)] public static partial int utimensat(int dirfd, byte* path, Timespec* times, int flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int futimens(int fd, Timespec* times);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint preadv(int fd, void* iov, int iovcnt, long offset);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint pwritev(int fd, void* iov, int iovcnt, long offset);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fsync(int fd);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fdatasync(int fd);
    [LibraryImport(Libc, SetLastError = true)] public static partial int syncfs(int fd);
    [LibraryImport(Libc, SetLastError = true)] public static partial long lseek(int fd, long offset, int whence);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint getdents64(int fd, void* buf, nuint count);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fallocate(int fd, int mode, long offset, long len);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint copy_file_range(int fdIn, long* offIn, int fdOut, long* offOut, nuint len, uint flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int fcntl(int fd, int cmd, Flock* lk);
    [LibraryImport(Libc, SetLastError = true)] public static partial int flock(int fd, int operation);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint getxattr(byte* path, byte* name, void* value, nuint size);
    [LibraryImport(Libc, SetLastError = true)] public static partial nint listxattr(byte* path, byte* list, nuint size);
    [LibraryImport(Libc, SetLastError = true)] public static partial int setxattr(byte* path, byte* name, void* value, nuint size, int flags);
    [LibraryImport(Libc, SetLastError = true)] public static partial int removexattr(byte* path, byte* name);
    [LibraryImport(Libc, SetLastError = true)] public static partial int setfsuid(uint uid);
    [LibraryImport(Libc, SetLastError = true)] public static partial int setfsgid(uint gid);
    [LibraryImport(Libc)] public static partial uint umask(uint mask);
    [LibraryImport(Libc, SetLastError = true)] public static partial int getgroups(int size, uint* list);
    /// <summary>The raw system call, not glibc's wrapper: setgroups(2) through syscall(2) changes only the calling thread.</summary>
    [LibraryImport(Libc, SetLastError = true)] public static partial long syscall(long number, long arg1, uint* arg2);

    /// <summary>__NR_setgroups: x86_64 116, aarch64 (asm-generic) 159.</summary>
    public static long SysSetgroups => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 159 : 116;

    public const int XATTR_NAME_MAX = 255;

    public static int LastErrno => Marshal.GetLastPInvokeError();
}
