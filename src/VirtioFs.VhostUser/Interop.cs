using System.Runtime.InteropServices;

namespace VirtioFs.VhostUser;

/// <summary>libc calls missing from Tmds.LibC, kept in one small file (STYLE.md).</summary>
internal static partial class Interop
{
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int flock(int fd, int operation);
}
