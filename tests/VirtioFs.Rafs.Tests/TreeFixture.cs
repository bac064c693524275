using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;
using VirtioFs.Rafs.Builder;
using Xunit;
using static Tmds.Linux.LibC;

namespace VirtioFs.Rafs.Tests;

/// <summary>Builds source trees on the host with raw syscalls (any name bytes, devices, sockets, owners, times,
/// xattrs), and compares two trees by lstat semantics.</summary>
public static unsafe partial class TreeFixture
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial int lsetxattr(byte* path, byte* name, byte* value, nuint size, int flags);

    /// <summary>Runs a host tool and returns its exit code and combined output; both pipes are drained at once
    /// so a chatty tool cannot block on a full pipe.</summary>
    public static (int Code, string Output) RunTool(string file, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(file, args) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.GetAwaiter().GetResult() + err);
    }

    private static readonly List<string> s_temps = new();

    static TreeFixture()
    {
        // Leftovers of earlier runs (the test host may be killed before ProcessExit) older than two hours.
        foreach (var d in Directory.EnumerateDirectories(Path.GetTempPath(), "vfs-*"))
        {
            try
            {
                if (Directory.GetCreationTimeUtc(d) < DateTime.UtcNow.AddHours(-2)) Directory.Delete(d, recursive: true);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        // Test trees (some with 100,000 files or 5 GiB sparse files) are removed when the test run ends.
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            lock (s_temps)
            {
                foreach (var d in s_temps)
                {
                    try { Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                }
            }
        };
    }

    /// <summary>Deletes a temp tree now (for the large ones).</summary>
    public static void Remove(params string[] dirs)
    {
        foreach (var d in dirs)
        {
            try { Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    public static string TempDir(string tag)
    {
        var d = Path.Combine(Path.GetTempPath(), $"vfs-{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        lock (s_temps) s_temps.Add(d);
        return d;
    }

    private static byte[] C(byte[] p) { var b = new byte[p.Length + 1]; p.CopyTo(b, 0); return b; }
    private static byte[] J(string dir, byte[] name) => [.. Encoding.UTF8.GetBytes(dir), (byte)'/', .. name];

    private static void Ok(int rc, string what)
    {
        if (rc != 0) throw new IOException($"{what}: errno {Marshal.GetLastPInvokeError()}");
    }

    public static void Mknod(string dir, byte[] name, uint mode, ulong dev)
    {
        var c = C(J(dir, name));
        fixed (byte* p = c) Ok(mknod(p, (mode_t)mode, (dev_t)dev), "mknod");
    }

    public static void WriteRaw(string dir, byte[] name, byte[] content)
    {
        var c = C(J(dir, name));
        int fd;
        fixed (byte* p = c) fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0x1A4);
        if (fd < 0) throw new IOException("open");
        fixed (byte* b = content) write(fd, b, (size_t)content.Length);
        close(fd);
    }

    public static void SetXattr(string path, string name, byte[] value)
    {
        var c = C(Encoding.UTF8.GetBytes(path));
        var n = C(Encoding.UTF8.GetBytes(name));
        fixed (byte* p = c) fixed (byte* np = n) fixed (byte* v = value) Ok(lsetxattr(p, np, v, (nuint)value.Length, 0), "lsetxattr");
    }

    public static void Own(string path, uint uid, uint gid)
    {
        var c = C(Encoding.UTF8.GetBytes(path));
        fixed (byte* p = c) Ok(lchown(p, (uid_t)uid, (gid_t)gid), "lchown");
    }

    public static void Times(string path, long sec, long nsec)
    {
        var c = C(Encoding.UTF8.GetBytes(path));
        var ts = stackalloc timespec[2];
        ts[0].tv_sec = (time_t)sec; ts[0].tv_nsec = (long_t)nsec; ts[1] = ts[0];
        fixed (byte* p = c) Ok(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), "utimensat");
    }

    public static ulong MakeDev(ulong major, ulong minor) =>
        (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFFUL) << 12) | ((major & ~0xFFFUL) << 32);

    /// <summary>A tree with every item the builder must carry. <paramref name="huge"/> adds a sparse 5 GiB file.</summary>
    public static string CreateFullTree(bool huge = false)
    {
        var root = TempDir("src");
        var rnd = new Random(42);
        var big = new byte[3 * 1024 * 1024 + 123];
        rnd.NextBytes(big);
        File.WriteAllBytes(Path.Combine(root, "random.bin"), big);
        Directory.CreateDirectory(Path.Combine(root, "dir/sub"));
        File.WriteAllBytes(Path.Combine(root, "dir/copy.bin"), big);               // same content: dedup
        File.WriteAllText(Path.Combine(root, "small.txt"), "hello rafs\n");
        File.WriteAllBytes(Path.Combine(root, "empty"), []);
        File.CreateSymbolicLink(Path.Combine(root, "link"), "small.txt");
        File.CreateSymbolicLink(Path.Combine(root, "dir/dangling"), new string('x', 1000));
        Link(Path.Combine(root, "small.txt"), Path.Combine(root, "dir/hard.txt"));
        Mknod(root, "chr"u8.ToArray(), 0x2000 | 0x1B6, MakeDev(1, 3));
        Mknod(root, "blk"u8.ToArray(), 0x6000 | 0x1A0, MakeDev(259, 70000));
        Mknod(root, "fifo"u8.ToArray(), 0x1000 | 0x1A4, 0);
        Mknod(root, "sock"u8.ToArray(), 0xC000 | 0x1ED, 0);
        // Names: raw non-UTF-8 bytes, and the 255-byte maximum.
        WriteRaw(root, [0xFF, 0xFE, (byte)'n', 0x80, 0x01], "raw name"u8.ToArray());
        WriteRaw(root, Enumerable.Repeat((byte)'L', 255).ToArray(), "long"u8.ToArray());
        WriteRaw(root, "-sorts-before-dot"u8.ToArray(), "x"u8.ToArray());
        SetXattr(Path.Combine(root, "small.txt"), "user.comment", "a value"u8.ToArray());
        SetXattr(Path.Combine(root, "dir"), "trusted.overlay.opaque", "y"u8.ToArray());
        SetXattr(Path.Combine(root, "random.bin"), "security.capability", new byte[] { 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 });
        // Sparse: data, a 3 MiB hole, data.
        using (var fs = new FileStream(Path.Combine(root, "sparse"), FileMode.CreateNew))
        {
            fs.Write("head"u8);
            fs.Seek(3 << 20, SeekOrigin.Current);
            fs.Write("tail"u8);
        }
        if (huge)
        {
            using var fs = new FileStream(Path.Combine(root, "huge"), FileMode.CreateNew);
            fs.Seek((5L << 30) + 17, SeekOrigin.Begin);
            fs.Write("beyond 4 GiB"u8);
        }
        Own(Path.Combine(root, "small.txt"), 1234, 5678);
        Chmod(Path.Combine(root, "small.txt"), 0x9ED); // 04755: the setuid bit must survive (chown would clear them: owner first)
        Own(Path.Combine(root, "link"), 42, 43);
        Own(Path.Combine(root, "dir/sub"), 100000, 100001);
        Times(Path.Combine(root, "small.txt"), 1_600_000_000, 123_456_789);
        Times(Path.Combine(root, "link"), 1_500_000_000, 999_999_999);
        Times(Path.Combine(root, "dir/sub"), 1_400_000_000, 1);
        Times(Path.Combine(root, "dir"), 1_300_000_000, 7);
        return root;
    }

    public static void Link(string from, string to)
    {
        var a = C(Encoding.UTF8.GetBytes(from));
        var b = C(Encoding.UTF8.GetBytes(to));
        fixed (byte* p = a) fixed (byte* q = b) Ok(link(p, q), "link");
    }

    public static void Chmod(string path, uint mode)
    {
        var c = C(Encoding.UTF8.GetBytes(path));
        fixed (byte* p = c) Ok(chmod(p, (mode_t)mode), "chmod");
    }

    /// <summary>Asserts two host trees are identical: names, types, modes, owners, mtimes (ns), sizes, device
    /// numbers, symlink targets, xattrs, content, and hard-link structure.</summary>
    public static void AssertSameTree(string expected, string actual, bool compareRootTimes = true, bool compareXattrs = true, bool compareLinks = true, bool compareSuid = true)
    {
        var a = DirectorySource.Load(expected);
        var b = DirectorySource.Load(actual);
        var linksA = new Dictionary<BuildInode, string>(ReferenceEqualityComparer.Instance);
        var linksB = new Dictionary<BuildInode, string>(ReferenceEqualityComparer.Instance);
        s_links = compareLinks;
        s_suid = compareSuid;
        Compare(a, b, "/", linksA, linksB, compareRootTimes, compareXattrs);
    }

    private static void Compare(BuildInode a, BuildInode b, string path, Dictionary<BuildInode, string> la, Dictionary<BuildInode, string> lb, bool times, bool xattrs)
    {
        uint mask = s_suid ? 0xFFFFu : ~0xC00u;
        Assert.True((a.Mode & mask) == (b.Mode & mask), $"{path}: mode {Convert.ToString(a.Mode, 8)} != {Convert.ToString(b.Mode, 8)}");
        Assert.True(a.Uid == b.Uid && a.Gid == b.Gid, $"{path}: owner {a.Uid}:{a.Gid} != {b.Uid}:{b.Gid}");
        if (times || path != "/") Assert.True(a.MtimeSec == b.MtimeSec && a.MtimeNsec == b.MtimeNsec, $"{path}: mtime {a.MtimeSec}.{a.MtimeNsec} != {b.MtimeSec}.{b.MtimeNsec}");
        Assert.True(a.Rdev == b.Rdev, $"{path}: rdev {a.Rdev} != {b.Rdev}");
        if (!xattrs) { a.Xattrs.Clear(); b.Xattrs.Clear(); }
        Assert.True(a.Xattrs.Count == b.Xattrs.Count, $"{path}: xattr count {a.Xattrs.Count} != {b.Xattrs.Count}");
        var xa = a.Xattrs.OrderBy(x => Convert.ToBase64String(x.Key)).ToList();
        var xb = b.Xattrs.OrderBy(x => Convert.ToBase64String(x.Key)).ToList();
        for (int i = 0; i < xa.Count; i++)
        {
            Assert.Equal(xa[i].Key, xb[i].Key);
            Assert.Equal(xa[i].Value, xb[i].Value);
        }
        if (a.IsSymlink) Assert.Equal(a.SymlinkTarget, b.SymlinkTarget);
        if (a.IsReg)
        {
            Assert.True(a.Size == b.Size, $"{path}: size {a.Size} != {b.Size}");
            bool seenA = la.TryGetValue(a, out var firstA), seenB = lb.TryGetValue(b, out var firstB);
            if (!s_links) { seenB = seenA; firstB = firstA; }
            Assert.True(seenA == seenB && firstA == firstB, $"{path}: hard link structure differs ({firstA} vs {firstB})");
            if (seenA) return;
            la[a] = path; lb[b] = path;
            AssertSameContent(a.Data!.Value.Path, b.Data!.Value.Path, (long)a.Size, path);
        }
        if (a.IsDir)
        {
            var ca = a.Children!.OrderBy(e => Convert.ToBase64String(e.Name)).ToList();
            var cb = b.Children!.OrderBy(e => Convert.ToBase64String(e.Name)).ToList();
            Assert.True(ca.Count == cb.Count, $"{path}: {ca.Count} entries != {cb.Count}");
            for (int i = 0; i < ca.Count; i++)
            {
                Assert.Equal(ca[i].Name, cb[i].Name);
                Compare(ca[i].Inode, cb[i].Inode, path + Encoding.UTF8.GetString(ca[i].Name) + (ca[i].Inode.IsDir ? "/" : ""), la, lb, times, xattrs);
            }
        }
    }

    [ThreadStatic] private static bool s_links;
    [ThreadStatic] private static bool s_suid;

    private static void AssertSameContent(string pa, string pb, long size, string path)
    {
        using var ha = DirectorySource.OpenData(pa);
        using var hb = DirectorySource.OpenData(pb);
        var ba = new byte[1 << 20];
        var bb = new byte[1 << 20];
        for (long off = 0; off < size; off += ba.Length)
        {
            int n = (int)Math.Min(ba.Length, size - off);
            Assert.Equal(n, RandomAccess.Read(ha, ba.AsSpan(0, n), off));
            Assert.Equal(n, RandomAccess.Read(hb, bb.AsSpan(0, n), off));
            Assert.True(ba.AsSpan(0, n).SequenceEqual(bb.AsSpan(0, n)), $"{path}: content differs near offset {off}");
        }
    }
}
