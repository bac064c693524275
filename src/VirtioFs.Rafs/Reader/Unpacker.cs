using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace VirtioFs.Rafs.Reader;

/// <summary>Writes an image's tree to a host directory: every file type, hard links, owners, modes, nanosecond
/// mtimes, device numbers and xattrs (directory times last, after their contents).</summary>
public static unsafe class Unpacker
{
    public static void Unpack(RafsImage image, string blobDir, string target)
    {
        Directory.CreateDirectory(target);
        var root = Encoding.UTF8.GetBytes(Path.GetFullPath(target).TrimEnd('/'));
        var links = new Dictionary<ulong, byte[]>();
        var dirs = new List<(byte[] Path, ulong Ino, RafsAttr Attr)>();
        using var store = new BlobStore(image, blobDir);
        foreach (var (rel, ino, a) in ImageWalker.Walk(image))
        {
            var p = rel.Length == 0 ? root : [.. root, (byte)'/', .. rel];
            var c = Interop.CPath(p);
            if (a.FileType != 0x4000 && links.TryGetValue(ino, out var first))
            {
                var f = Interop.CPath(first);
                fixed (byte* s = f) fixed (byte* d = c)
                {
                    // SAFETY: both paths are NUL-terminated and pinned.
                    Check(link(s, d), p, "link");
                }
                continue;
            }
            switch (a.FileType)
            {
                case 0x4000:
                    if (rel.Length > 0)
                    {
                        fixed (byte* d = c)
                        {
                            // SAFETY: NUL-terminated pinned path.
                            Check(mkdir(d, 0x1C0), p, "mkdir");
                        }
                    }
                    dirs.Add((p, ino, a));
                    continue;
                case 0x8000:
                    using (var fs = new FileStream(new Microsoft.Win32.SafeHandles.SafeFileHandle(OpenCreate(c, p), true), FileAccess.Write))
                    {
                        var err = store.CopyFile(ino, fs, verify: false);
                        if (err is not null) throw new RafsFormatException($"'/{ImageWalker.Show(rel)}': {err}");
                    }
                    break;
                case 0xA000:
                    if (image.ReadLink(ino, out var t) != 0) throw new RafsFormatException($"'/{ImageWalker.Show(rel)}': bad symlink");
                    var ct = Interop.CPath(t);
                    fixed (byte* s = ct) fixed (byte* d = c)
                    {
                        // SAFETY: NUL-terminated pinned paths.
                        Check(symlink(s, d), p, "symlink");
                    }
                    break;
                default:
                    fixed (byte* d = c)
                    {
                        // SAFETY: NUL-terminated pinned path.
                        Check(mknod(d, (mode_t)(a.Mode & 0xF000 | 0x180), (dev_t)a.Rdev), p, "mknod");
                    }
                    break;
            }
            links[ino] = p;
            ApplyMeta(image, ino, a, c, p);
        }
        for (int i = dirs.Count - 1; i >= 0; i--)
        {
            var (p, ino, a) = dirs[i];
            ApplyMeta(image, ino, a, Interop.CPath(p), p);
        }
    }

    private static int OpenCreate(byte[] c, byte[] p)
    {
        int fd;
        fixed (byte* d = c)
        {
            // SAFETY: NUL-terminated pinned path.
            fd = open(d, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0x180);
        }
        Check(fd < 0 ? -1 : 0, p, "open");
        return fd;
    }

    private static void ApplyMeta(RafsImage image, ulong ino, RafsAttr a, byte[] c, byte[] p)
    {
        // Order matters: chown clears setuid bits and file capabilities, so owners first, then xattrs and mode.
        fixed (byte* d = c)
        {
            // SAFETY: NUL-terminated pinned path.
            Check(lchown(d, (uid_t)a.Uid, (gid_t)a.Gid), p, "lchown");
        }
        var names = new List<byte[]>();
        image.ListXattr(ino, names);
        foreach (var n in names)
        {
            if (image.GetXattr(ino, n, out var v) != 0) continue;
            var cn = Interop.CPath(n);
            fixed (byte* d = c) fixed (byte* np = cn) fixed (byte* vp = v)
            {
                // SAFETY: path and name NUL-terminated; value buffer has v.Length bytes.
                Check(Interop.lsetxattr(d, np, vp, (nuint)v.Length, 0), p, "lsetxattr");
            }
        }
        fixed (byte* d = c)
        {
            // SAFETY: NUL-terminated pinned path; ts is a local array of two timespecs.
            if (a.FileType != 0xA000) Check(chmod(d, (mode_t)(a.Mode & 0xFFF)), p, "chmod");
            var ts = stackalloc timespec[2];
            ts[0].tv_sec = (time_t)a.MtimeSec;
            ts[0].tv_nsec = (long_t)a.MtimeNsec;
            ts[1] = ts[0];
            Check(utimensat(AT_FDCWD, d, ts, AT_SYMLINK_NOFOLLOW), p, "utimensat");
        }
    }

    private static void Check(int rc, byte[] path, string op)
    {
        if (rc != 0) throw new IOException($"{op} {Encoding.UTF8.GetString(path)}: {Interop.ErrnoText(Marshal.GetLastPInvokeError())}");
    }
}
