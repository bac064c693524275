using System.Runtime.InteropServices;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>The few lstat fields the tests check on the host, through statx (glibc 2.28+).</summary>
internal static partial class HostStat
{
    public static (int Uid, int Gid) Owner(string path)
    {
        var s = Statx(path);
        return ((int)s.stx_uid, (int)s.stx_gid);
    }

    public static int LinkCount(string path) => (int)Statx(path).stx_nlink;

    public static bool IsFifo(string path) => (Statx(path).stx_mode & 0xF000) == 0x1000;

    private static StatxBuffer Statx(string path)
    {
        const int AtSymlinkNoFollow = 0x100;
        const int AtFdCwd = -100;
        if (statx(AtFdCwd, path, AtSymlinkNoFollow, 0xfff, out var buffer) != 0)
        {
            throw new IOException($"statx {path}: errno {Marshal.GetLastPInvokeError()}");
        }
        return buffer;
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, out StatxBuffer buffer);

    [StructLayout(LayoutKind.Sequential, Size = 256)]
    private struct StatxBuffer
    {
        public uint stx_mask;
        public uint stx_blksize;
        public ulong stx_attributes;
        public uint stx_nlink;
        public uint stx_uid;
        public uint stx_gid;
        public ushort stx_mode;
    }
}
