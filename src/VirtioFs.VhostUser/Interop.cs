using System.Runtime.InteropServices;

namespace VirtioFs.VhostUser;

/// <summary>libc calls missing from Tmds.LibC, kept in one small file (STYLE.md).</summary>
internal static partial class Interop
{
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rename(string oldPath, string newPath);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chown(string path, uint owner, uint group);

    /// <summary>struct group* (pw.h): gr_name, gr_passwd, then gid_t gr_gid at offset 2 * sizeof(char*).</summary>
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint getgrnam(string name);

}
