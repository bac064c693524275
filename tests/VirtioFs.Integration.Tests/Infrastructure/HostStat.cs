using VirtioFs.Tests.Shared;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>The few lstat fields the tests check on the host (statx: tests/Shared/HostSyscalls.cs).</summary>
internal static class HostStat
{
    public static (int Uid, int Gid) Owner(string path)
    {
        HostSyscalls.Statx s = HostSyscalls.Lstat(path);
        return ((int)s.stx_uid, (int)s.stx_gid);
    }

    public static int LinkCount(string path) => (int)HostSyscalls.Lstat(path).stx_nlink;

    public static bool IsFifo(string path) => (HostSyscalls.Lstat(path).stx_mode & 0xF000) == 0x1000;
}
