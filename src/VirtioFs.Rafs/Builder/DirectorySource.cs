using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace VirtioFs.Rafs.Builder;

/// <summary>Reads a host directory tree into the build model with lstat semantics: every file type, raw byte
/// names, owners, nanosecond mtimes, device numbers, xattrs and hard links (by st_dev/st_ino).</summary>
public static unsafe class DirectorySource
{
    private const int MaxXattrList = 64 * 1024;
    private const int MaxXattrValue = 64 * 1024;

    public static BuildInode Load(string root)
    {
        var rootPath = Encoding.UTF8.GetBytes(Path.GetFullPath(root).TrimEnd('/'));
        if (rootPath.Length == 0) rootPath = "/"u8.ToArray();
        var links = new Dictionary<(ulong, ulong), BuildInode>();
        var rootInode = Stat(rootPath, links, out _);
        if (!rootInode.IsDir) throw new RafsFormatException($"source '{root}' is not a directory");
        var stack = new Stack<(byte[] Path, BuildInode Dir)>();
        stack.Push((rootPath, rootInode));
        while (stack.Count > 0)
        {
            var (dirPath, dir) = stack.Pop();
            foreach (var name in ListDir(dirPath))
            {
                var childPath = Join(dirPath, name);
                var child = Stat(childPath, links, out bool isNew);
                dir.Children!.Add(new BuildEntry(name, child));
                if (isNew && child.IsDir) stack.Push((childPath, child));
            }
        }
        return rootInode;
    }

    private static byte[] Join(byte[] dir, byte[] name)
    {
        var p = new byte[dir.Length + 1 + name.Length];
        dir.CopyTo(p, 0);
        p[dir.Length] = (byte)'/';
        name.CopyTo(p, dir.Length + 1);
        return p;
    }

    private static List<byte[]> ListDir(byte[] path)
    {
        var c = Interop.CPath(path);
        var list = new List<byte[]>();
        nint d;
        fixed (byte* p = c)
        {
            // SAFETY: p is a NUL-terminated path pinned for the call.
            d = Interop.opendir(p);
        }
        if (d == 0) throw new IOException($"opendir {Encoding.UTF8.GetString(path)}: {Interop.ErrnoText(Marshal.GetLastPInvokeError())}");
        try
        {
            while (true)
            {
                // SAFETY: d is an open DIR*; the returned dirent stays valid until the next readdir on d.
                byte* ent = Interop.readdir64(d);
                if (ent == null) break;
                var name = new ReadOnlySpan<byte>(ent + Interop.DirentNameOffset, 256);
                int len = name.IndexOf((byte)0);
                if (len < 0) len = 256;
                name = name[..len];
                if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) continue;
                list.Add(name.ToArray());
            }
        }
        finally
        {
            Interop.closedir(d);
        }
        return list;
    }

    private static BuildInode Stat(byte[] path, Dictionary<(ulong, ulong), BuildInode> links, out bool isNew)
    {
        var c = Interop.CPath(path);
        stat st;
        int rc;
        fixed (byte* p = c)
        {
            // SAFETY: p is a NUL-terminated path; st is a local the kernel fills.
            rc = lstat(p, &st);
        }
        if (rc != 0) throw new IOException($"lstat {Encoding.UTF8.GetString(path)}: {Interop.ErrnoText(Marshal.GetLastPInvokeError())}");
        uint mode = (uint)st.st_mode;
        var key = ((ulong)st.st_dev, (ulong)st.st_ino);
        if ((mode & 0xF000) != 0x4000 && st.st_nlink > 1 && links.TryGetValue(key, out var existing))
        {
            isNew = false;
            return existing;
        }
        isNew = true;
        var n = new BuildInode
        {
            Mode = mode,
            Uid = (uint)st.st_uid,
            Gid = (uint)st.st_gid,
            MtimeSec = (long)st.st_mtim.tv_sec,
            MtimeNsec = (uint)(long)st.st_mtim.tv_nsec,
        };
        switch (mode & 0xF000)
        {
            case 0x4000:
                n.Children = new();
                break;
            case 0x8000:
                n.Size = (ulong)(long)st.st_size;
                n.Data = new FileData(Encoding.UTF8.GetString(path), 0, (long)st.st_size);
                if (IsLossy(path)) n.Data = new FileData("\0" + Convert.ToBase64String(path), 0, (long)st.st_size);
                break;
            case 0xA000:
                n.SymlinkTarget = ReadLink(c, (long)st.st_size);
                n.Size = (ulong)n.SymlinkTarget.Length;
                break;
            case 0x2000:
            case 0x6000:
                n.Rdev = (ulong)st.st_rdev;
                break;
        }
        ReadXattrs(c, n);
        if ((mode & 0xF000) != 0x4000 && st.st_nlink > 1) links[key] = n;
        return n;
    }

    private static bool IsLossy(byte[] path)
    {
        var s = Encoding.UTF8.GetString(path);
        return !Encoding.UTF8.GetBytes(s).AsSpan().SequenceEqual(path);
    }

    /// <summary>Opens a file whose path may not be valid UTF-8 (encoded by <see cref="Stat"/> as NUL + base64).</summary>
    public static Microsoft.Win32.SafeHandles.SafeFileHandle OpenData(string path)
    {
        if (path.Length > 0 && path[0] == '\0')
        {
            var raw = Interop.CPath(Convert.FromBase64String(path[1..]));
            int fd;
            fixed (byte* p = raw)
            {
                // SAFETY: p is a NUL-terminated path pinned for the call.
                fd = open(p, O_RDONLY | O_CLOEXEC);
            }
            if (fd < 0) throw new IOException($"open: {Interop.ErrnoText(Marshal.GetLastPInvokeError())}");
            return new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        }
        return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
    }

    private static byte[] ReadLink(byte[] cpath, long size)
    {
        var buf = new byte[Math.Clamp(size + 1, 1, 4097)];
        nint n;
        fixed (byte* p = cpath)
        fixed (byte* b = buf)
        {
            // SAFETY: p is NUL-terminated; b has buf.Length bytes.
            n = (nint)readlink(p, b, (size_t)buf.Length);
        }
        if (n < 0) throw new IOException($"readlink: {Interop.ErrnoText(Marshal.GetLastPInvokeError())}");
        return buf.AsSpan(0, (int)n).ToArray();
    }

    [ThreadStatic] private static byte[]? t_list;
    [ThreadStatic] private static byte[]? t_value;

    private static void ReadXattrs(byte[] cpath, BuildInode n)
    {
        var list = t_list ??= new byte[MaxXattrList];
        nint len;
        fixed (byte* p = cpath)
        fixed (byte* l = list)
        {
            // SAFETY: p is NUL-terminated; l has list.Length bytes.
            len = Interop.llistxattr(p, l, (nuint)list.Length);
        }
        if (len <= 0) return;
        var value = t_value ??= new byte[MaxXattrValue];
        int start = 0;
        for (int i = 0; i < len; i++)
        {
            if (list[i] != 0) continue;
            var name = list.AsSpan(start, i - start).ToArray();
            start = i + 1;
            if (name.Length == 0) continue;
            var cname = Interop.CPath(name);
            nint vlen;
            fixed (byte* p = cpath)
            fixed (byte* nm = cname)
            fixed (byte* v = value)
            {
                // SAFETY: p and nm are NUL-terminated; v has value.Length bytes.
                vlen = Interop.lgetxattr(p, nm, v, (nuint)value.Length);
            }
            if (vlen < 0) continue;
            n.SetXattr(name, value.AsSpan(0, (int)vlen).ToArray());
        }
    }
}
