using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

/// <summary>The passthrough called directly through IFileSystem, with requests a hostile guest could send.</summary>
public sealed class DirectApiTests : IDisposable
{
    private const ulong Root = FuseConstants.RootId;
    private static readonly FuseContext RootCtx = new(0, 0, 1, 1);
    private readonly DirectoryInfo _tmp;
    private readonly string _src;
    private readonly string _outside;
    private readonly PassthroughFileSystem _fs;

    public DirectApiTests()
    {
        _tmp = Directory.CreateTempSubdirectory("vfs-pt-api-");
        _src = Directory.CreateDirectory(Path.Combine(_tmp.FullName, "src")).FullName;
        _outside = Directory.CreateDirectory(Path.Combine(_tmp.FullName, "outside")).FullName;
        File.WriteAllText(Path.Combine(_outside, "secret"), "secret");
        _fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _src, Cache = CachePolicy.Auto }, NullLogger.Instance);
        _fs.Init(FuseInitFlags.None);
    }

    public void Dispose()
    {
        _fs.Dispose();
        _tmp.Delete(true);
    }

    private static byte[] N(string s) => Encoding.UTF8.GetBytes(s);

    private ulong LookupOk(ulong parent, string name)
    {
        Assert.Equal(0, _fs.Lookup(RootCtx, parent, N(name), out FuseEntry e));
        return e.NodeId;
    }

    [Fact]
    public void Dotdot_of_the_root_stays_at_the_root()
    {
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N(".."), out FuseEntry e));
        Assert.Equal(Root, e.NodeId);
        Directory.CreateDirectory(Path.Combine(_src, "a"));
        ulong a = LookupOk(Root, "a");
        Assert.Equal(Root, LookupOk(a, ".."));
        Assert.Equal(Root, LookupOk(LookupOk(a, ".."), ".."));
    }

    [Theory]
    [InlineData("a/b", Errno.EINVAL)]
    [InlineData("../outside", Errno.EINVAL)]
    [InlineData("/etc", Errno.EINVAL)]
    [InlineData("", Errno.EINVAL)]
    public void Names_that_are_not_one_component_are_refused(string name, int errno)
    {
        Assert.Equal(errno, _fs.Lookup(RootCtx, Root, N(name), out _));
        Assert.Equal(errno, _fs.MkDir(RootCtx, Root, N(name), 0x1ED, 0, out _));
        Assert.Equal(errno, _fs.Create(RootCtx, Root, N(name), 0x1A4, O_RDWR, 0, 0, out _, out _));
        Assert.Equal(errno, _fs.Unlink(RootCtx, Root, N(name)));
        File.WriteAllText(Path.Combine(_src, "x"), "");
        Assert.Equal(errno, _fs.Rename(RootCtx, Root, N("x"), Root, N(name), 0));
        Assert.True(File.Exists(Path.Combine(_src, "x")));
    }

    [Fact]
    public void Too_long_names_are_refused()
    {
        Assert.Equal(Errno.ENAMETOOLONG, _fs.MkDir(RootCtx, Root, N(new string('x', 256)), 0x1ED, 0, out _));
        Assert.Equal(Errno.ENOENT, _fs.Lookup(RootCtx, Root, N(new string('x', 255)), out _));
    }

    [Fact]
    public void Host_symlinks_are_never_followed()
    {
        File.CreateSymbolicLink(Path.Combine(_src, "esc"), _outside);
        File.CreateSymbolicLink(Path.Combine(_src, "escfile"), Path.Combine(_outside, "secret"));
        File.CreateSymbolicLink(Path.Combine(_src, "escnew"), Path.Combine(_outside, "created"));
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N("esc"), out FuseEntry esc));
        Assert.Equal(0xA000u, esc.Attr.mode & 0xF000);

        Assert.Equal(Errno.ENOTDIR, _fs.Lookup(RootCtx, esc.NodeId, N("secret"), out _));
        Assert.Equal(Errno.ENOTDIR, _fs.MkDir(RootCtx, esc.NodeId, N("x"), 0x1ED, 0, out _));
        Assert.Equal(Errno.ENOTDIR, _fs.OpenDir(RootCtx, esc.NodeId, 0, out _));
        ulong escFile = LookupOk(Root, "escfile");
        Assert.Equal(Errno.ENXIO, _fs.Open(RootCtx, escFile, O_RDWR | O_TRUNC, 0, out _));
        Assert.NotEqual(0, _fs.Create(RootCtx, Root, N("escnew"), 0x1A4, O_WRONLY, 0, 0, out _, out _));
        Assert.NotEqual(0, _fs.Create(RootCtx, Root, N("escfile"), 0x1A4, O_WRONLY | O_TRUNC, 0, 0, out _, out _));

        Span<byte> target = stackalloc byte[4096];
        Assert.Equal(0, _fs.ReadLink(RootCtx, escFile, target, out int len));
        Assert.Equal(Path.Combine(_outside, "secret"), Encoding.UTF8.GetString(target[..len]));
        Assert.Equal("secret", File.ReadAllText(Path.Combine(_outside, "secret")));
        Assert.False(File.Exists(Path.Combine(_outside, "created")));
    }

    [Fact]
    public void Special_files_are_never_opened()
    {
        Assert.Equal(0, mkfifo(Path.Combine(_src, "fifo"), 0x1B6));
        ulong fifo = LookupOk(Root, "fifo");
        // Opening a fifo for reading would block forever on the host: it must be refused outright.
        Assert.Equal(Errno.ENXIO, _fs.Open(RootCtx, fifo, O_RDONLY, 0, out _));
        Assert.Equal(0, _fs.GetAttr(RootCtx, fifo, null, out FuseAttr attr, out _));
        Assert.Equal(0x1000u, attr.mode & 0xF000);
    }

    [Fact]
    public void Nodes_are_created_as_the_calling_guest_user()
    {
        File.SetUnixFileMode(_src, (UnixFileMode)Convert.ToInt32("777", 8));
        var user = new FuseContext(1234, 5678, 99, 2);
        Assert.Equal(0, _fs.MkDir(user, Root, N("d"), 0x1ED, 0, out _));
        Assert.Equal(0, _fs.Create(user, Root, N("f"), 0x1A4, O_RDWR, 0, 0, out _, out FuseOpenResult h));
        Assert.Equal(0, _fs.Symlink(user, N("target"), Root, N("l"), out _));
        Assert.Equal(0, _fs.MkNod(user, Root, N("p"), 0x1000 | 0x1A4, 0, 0, out _));
        foreach (string n in new[] { "d", "f", "l", "p" })
        {
            Statx st = Lstat(Path.Combine(_src, n));
            Assert.True(st.stx_uid == 1234 && st.stx_gid == 5678, $"{n} owned by {st.stx_uid}:{st.stx_gid}");
        }
        Assert.Equal(0x1A4u, (uint)Lstat(Path.Combine(_src, "f")).stx_mode & 0xFFF);
        Assert.Equal(0, _fs.Release(user, 0, h.Handle, 0, 0, 0));

        // The worker's fsuid was restored: a root request creates root-owned files again.
        Assert.Equal(0, _fs.MkDir(RootCtx, Root, N("rootdir"), 0x1ED, 0, out _));
        Assert.Equal(0u, Lstat(Path.Combine(_src, "rootdir")).stx_uid);

        // Without write permission on the parent the guest user is refused (no DAC override while switched).
        ulong rootDir = LookupOk(Root, "rootdir");
        Assert.Equal(Errno.EACCES, _fs.MkDir(user, rootDir, N("x"), 0x1ED, 0, out _));
        Assert.False(Directory.Exists(Path.Combine(_src, "rootdir", "x")));
    }

    [Fact]
    public void Lookup_of_a_known_inode_reports_fresh_attributes_and_follows_the_name()
    {
        string f = Path.Combine(_src, "f");
        File.WriteAllText(f, "1");
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N("f"), out FuseEntry first));
        Assert.Equal(1ul, first.Attr.size);

        // Known inode, changed on the host: same node, attributes as they are now.
        File.WriteAllText(f, "12345");
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N("f"), out FuseEntry again));
        Assert.Equal(first.NodeId, again.NodeId);
        Assert.Equal(5ul, again.Attr.size);

        // A second name for the same inode is the same node.
        File.CreateSymbolicLink(Path.Combine(_src, "link"), "f");
        Assert.Equal(0, link(f, Path.Combine(_src, "hard")));
        Assert.Equal(first.NodeId, LookupOk(Root, "hard"));
        Assert.NotEqual(first.NodeId, LookupOk(Root, "link")); // the symlink itself, not its target

        // The name now names another file: a new node, while the old one stays valid through its fd.
        File.WriteAllText(Path.Combine(_src, "g"), "other file");
        File.Move(Path.Combine(_src, "g"), f, overwrite: true);
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N("f"), out FuseEntry replaced));
        Assert.NotEqual(first.NodeId, replaced.NodeId);
        Assert.Equal(10ul, replaced.Attr.size);
        Assert.Equal(0, _fs.GetAttr(RootCtx, first.NodeId, null, out FuseAttr old, out _));
        Assert.Equal(5ul, old.size);
        Assert.Equal(Errno.ENOENT, _fs.Lookup(RootCtx, Root, N("missing"), out _));
    }

    [Fact]
    public void Lookups_are_counted_and_forget_releases_the_inode()
    {
        File.WriteAllText(Path.Combine(_src, "f"), "");
        int before = _fs.InodeCount;
        ulong a = LookupOk(Root, "f");
        ulong b = LookupOk(Root, "f");
        Assert.Equal(a, b);
        Assert.Equal(before + 1, _fs.InodeCount);
        _fs.Forget(RootCtx, a, 1);
        Assert.Equal(before + 1, _fs.InodeCount);
        _fs.Forget(RootCtx, a, 1);
        Assert.Equal(before, _fs.InodeCount);
        Assert.Equal(Errno.EBADF, _fs.GetAttr(RootCtx, a, null, out _, out _));
        _fs.Forget(RootCtx, Root, 1000); // the root is never dropped
        Assert.Equal(0, _fs.GetAttr(RootCtx, Root, null, out _, out _));
    }

    [Fact]
    public void Read_and_write_go_through_segments()
    {
        Assert.Equal(0, _fs.Create(RootCtx, Root, N("data"), 0x1A4, O_RDWR, 0, 0, out FuseEntry e, out FuseOpenResult h));
        byte[] part1 = N("hello, ");
        byte[] part2 = N("segmented world");
        unsafe
        {
            fixed (byte* p1 = part1)
            fixed (byte* p2 = part2)
            {
                IoSegment[] src = [new IoSegment(p1, part1.Length), new IoSegment(p2, part2.Length)];
                Assert.Equal(0, _fs.Write(RootCtx, e.NodeId, h.Handle, 3, src, 0, 0, out int written));
                Assert.Equal(22, written);
            }
            byte[] d1 = new byte[5];
            byte[] d2 = new byte[100];
            fixed (byte* q1 = d1)
            fixed (byte* q2 = d2)
            {
                IoSegment[] dst = [new IoSegment(q1, d1.Length), new IoSegment(q2, d2.Length)];
                Assert.Equal(0, _fs.Read(RootCtx, e.NodeId, h.Handle, 3, dst, 0, out int read));
                Assert.Equal(22, read);
            }
            Assert.Equal("hello, segmented world", Encoding.UTF8.GetString(d1) + Encoding.UTF8.GetString(d2, 0, 17));
        }
        Assert.Equal(0, _fs.Release(RootCtx, e.NodeId, h.Handle, 0, 0, 0));
        Assert.Equal(Errno.EBADF, _fs.Release(RootCtx, e.NodeId, h.Handle, 0, 0, 0));
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void O_noatime_and_o_direct_reach_the_host_only_when_asked(bool preserve, bool expectKept)
    {
        // virtiofsd drops the guest's O_NOATIME unless --preserve-noatime and O_DIRECT unless --allow-direct-io
        // (passthrough/mod.rs do_open, open_inode). The host fd's flags are read from /proc/self/fdinfo.
        const int ONoatime = 0x40000, ODirect = 0x4000;
        using var fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _src, PreserveNoatime = preserve, AllowDirectIo = preserve }, NullLogger.Instance);
        fs.Init(FuseInitFlags.None);
        string file = Path.Combine(_src, "atime.txt");
        File.WriteAllBytes(file, new byte[4096]);
        Assert.Equal(0, fs.Lookup(RootCtx, Root, N("atime.txt"), out FuseEntry e));
        Assert.Equal(0, fs.Open(RootCtx, e.NodeId, (uint)(O_RDONLY | ONoatime | ODirect), 0, out FuseOpenResult h));
        int flags = HostOpenFlags(file);
        Assert.Equal(expectKept, (flags & ONoatime) != 0);
        Assert.Equal(expectKept, (flags & ODirect) != 0);
        Assert.Equal(0, fs.Release(RootCtx, e.NodeId, h.Handle, 0, 0, 0));
    }

    /// <summary>The flags of the one non-O_PATH fd this process holds on <paramref name="path"/>.</summary>
    private static int HostOpenFlags(string path)
    {
        const int OPath = 0x200000;
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(fd).LinkTarget;
            }
            catch (IOException)
            {
                continue;
            }
            if (target != path)
            {
                continue;
            }
            string info = File.ReadAllText($"/proc/self/fdinfo/{Path.GetFileName(fd)}");
            string octal = info.Split('\n').First(l => l.StartsWith("flags:", StringComparison.Ordinal))["flags:".Length..].Trim();
            int flags = Convert.ToInt32(octal, 8);
            if ((flags & OPath) == 0)
            {
                return flags;
            }
        }
        throw new InvalidOperationException($"no open fd on {path}");
    }
}
