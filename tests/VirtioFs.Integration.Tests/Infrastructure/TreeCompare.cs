using System.Runtime.InteropServices;
using System.Security.Cryptography;
using static VirtioFs.Tests.Shared.HostSyscalls;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>Compares a mounted image with its source tree on the host, xattrs included (the guest's busybox has no
/// getfattr, so this is where xattrs are checked).</summary>
internal static class TreeCompare
{
    /// <summary>Every difference, as "path: what a != b"; <paramref name="skipContent"/> names files too large to hash.</summary>
    public static List<string> Differences(string src, string mnt, Func<string, bool>? skipContent = null)
    {
        var errors = new List<string>();
        var opts = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 };
        var a = Directory.EnumerateFileSystemEntries(src, "*", opts).Select(p => Path.GetRelativePath(src, p)).Order(StringComparer.Ordinal).ToList();
        var b = Directory.EnumerateFileSystemEntries(mnt, "*", opts).Select(p => Path.GetRelativePath(mnt, p)).Order(StringComparer.Ordinal).ToList();
        foreach (var x in a.Except(b)) errors.Add($"{x}: missing from the mount");
        foreach (var x in b.Except(a)) errors.Add($"{x}: not in the source");
        foreach (var rel in a.Intersect(b))
        {
            string pa = Path.Combine(src, rel), pb = Path.Combine(mnt, rel);
            var sa = Lstat(pa);
            var sb = Lstat(pb);
            void Same<T>(string what, T x, T y)
            {
                if (!EqualityComparer<T>.Default.Equals(x, y)) errors.Add($"{rel}: {what} {x} != {y}");
            }
            Same("mode", sa.stx_mode, sb.stx_mode);
            Same("owner", (sa.stx_uid, sa.stx_gid), (sb.stx_uid, sb.stx_gid));
            Same("mtime", (sa.stx_mtime.tv_sec, sa.stx_mtime.tv_nsec), (sb.stx_mtime.tv_sec, sb.stx_mtime.tv_nsec));
            Same("nlink", sa.stx_nlink, sb.stx_nlink);
            int type = sa.stx_mode & 0xF000;
            if (type != 0x4000) Same("size", sa.stx_size, sb.stx_size);
            if (type == 0x8000 && skipContent?.Invoke(rel) != true) Same("sha256", Sha(pa), Sha(pb));
            if (type == 0xA000) Same("target", new FileInfo(pa).LinkTarget, new FileInfo(pb).LinkTarget);
            if (type is 0x8000 or 0x4000 or 0xA000) Same("xattrs", Xattrs(pa), Xattrs(pb));
        }
        return errors;
    }

    private static string Sha(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    /// <summary>"name=hexvalue;..." sorted by name.</summary>
    public static string Xattrs(string path)
    {
        var list = new byte[65536];
        nint n = llistxattr(path, list, (nuint)list.Length);
        if (n < 0) return $"errno {Marshal.GetLastPInvokeError()}";
        var parts = new List<string>();
        foreach (var name in System.Text.Encoding.UTF8.GetString(list, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal))
        {
            var value = new byte[65536];
            nint v = lgetxattr(path, name, value, (nuint)value.Length);
            parts.Add(v < 0 ? $"{name}=errno" : $"{name}={Convert.ToHexString(value, 0, (int)v)}");
        }
        return string.Join(";", parts);
    }

    public static void SetXattr(string path, string name, byte[] value)
    {
        if (lsetxattr(path, name, value, (nuint)value.Length, 0) != 0) throw new IOException($"lsetxattr {path} {name}: errno {Marshal.GetLastPInvokeError()}");
    }
}
