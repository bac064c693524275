using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

/// <summary>The less common operations, called directly.</summary>
public sealed class MoreOpsTests : IDisposable
{
    private const ulong Root = FuseConstants.RootId;
    private static readonly FuseContext Ctx = new(0, 0, 1, 1);
    private readonly DirectoryInfo _tmp;
    private readonly PassthroughFileSystem _fs;

    public MoreOpsTests()
    {
        _tmp = Directory.CreateTempSubdirectory("vfs-pt-more-");
        _fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _tmp.FullName, Cache = CachePolicy.Always }, NullLogger.Instance);
        _fs.Init(FuseInitFlags.HandleKillprivV2);
    }

    public void Dispose()
    {
        _fs.Dispose();
        _tmp.Delete(true);
    }

    private string P(string n) => Path.Combine(_tmp.FullName, n);
    private static byte[] N(string s) => Encoding.UTF8.GetBytes(s);

    private (ulong Node, ulong Fh) CreateFile(string name)
    {
        Assert.Equal(0, _fs.Create(Ctx, Root, N(name), 0x1A4, O_RDWR, 0, 0, out FuseEntry e, out FuseOpenResult h));
        // cache=always: the kernel may keep the page cache across opens.
        Assert.Equal(FuseConstants.FOPEN_KEEP_CACHE, h.OpenFlags);
        Assert.Equal(86400, e.EntryTimeout.TotalSeconds);
        return (e.NodeId, h.Handle);
    }

    [Fact]
    public void Fallocate_lseek_and_copy_file_range()
    {
        var (node, fh) = CreateFile("sparse");
        Assert.Equal(0, _fs.Fallocate(Ctx, node, fh, 3 << 20, 4096, 0));
        Assert.Equal((3 << 20) + 4096, new FileInfo(P("sparse")).Length);
        using (var w = new FileStream(P("sparse"), FileMode.Open, FileAccess.Write))
        {
            w.Position = 1 << 20;
            w.Write(new byte[4096].AsSpan());
        }
        Assert.Equal(0, _fs.Lseek(Ctx, node, fh, 0, 3 /* SEEK_DATA */, out ulong data));
        Assert.Equal(1UL << 20, data);
        Assert.Equal(0, _fs.Lseek(Ctx, node, fh, data, 4 /* SEEK_HOLE */, out ulong hole));
        Assert.Equal((1UL << 20) + 4096, hole);

        File.WriteAllText(P("src"), "copy me please");
        Assert.Equal(0, _fs.Lookup(Ctx, Root, N("src"), out FuseEntry se));
        Assert.Equal(0, _fs.Open(Ctx, se.NodeId, O_RDONLY, 0, out FuseOpenResult sh));
        var (dn, dh) = CreateFile("dst");
        Assert.Equal(0, _fs.CopyFileRange(Ctx, se.NodeId, sh.Handle, 5, dn, dh, 2, 100, 0, out ulong copied));
        Assert.Equal(9UL, copied);
        Assert.Equal("\0\0me please", File.ReadAllText(P("dst")));
        Assert.Equal(Errno.EBADF, _fs.CopyFileRange(Ctx, se.NodeId, 12345, 0, dn, dh, 0, 1, 0, out _));
    }

    [Fact]
    public void Rename_exchange_and_noreplace()
    {
        File.WriteAllText(P("a"), "A");
        File.WriteAllText(P("b"), "B");
        Assert.Equal(Errno.EEXIST, _fs.Rename(Ctx, Root, N("a"), Root, N("b"), 1 /* NOREPLACE */));
        Assert.Equal(0, _fs.Rename(Ctx, Root, N("a"), Root, N("b"), 2 /* EXCHANGE */));
        Assert.Equal("B", File.ReadAllText(P("a")));
        Assert.Equal("A", File.ReadAllText(P("b")));
        Assert.Equal(Errno.EINVAL, _fs.Rename(Ctx, Root, N("a"), Root, N("b"), 8));
    }

    [Fact]
    public void Write_with_kill_suidgid_clears_setuid()
    {
        File.WriteAllText(P("suid"), "x");
        File.SetUnixFileMode(P("suid"), (UnixFileMode)Convert.ToInt32("6755", 8));
        Assert.Equal(0, _fs.Lookup(Ctx, Root, N("suid"), out FuseEntry e));
        Assert.Equal(0, _fs.Open(Ctx, e.NodeId, O_RDWR, 0, out FuseOpenResult h));
        unsafe
        {
            byte b = (byte)'y';
            IoSegment[] src = [new IoSegment(&b, 1)];
            Assert.Equal(0, _fs.Write(Ctx, e.NodeId, h.Handle, 0, src, 0, 0, out _));
            Assert.Equal(Convert.ToInt32("6755", 8), (int)File.GetUnixFileMode(P("suid")));
            Assert.Equal(0, _fs.Write(Ctx, e.NodeId, h.Handle, 0, src, FuseConstants.FUSE_WRITE_KILL_SUIDGID, 0, out _));
        }
        Assert.Equal(Convert.ToInt32("755", 8), (int)File.GetUnixFileMode(P("suid")));
    }

    [Fact]
    public void Tmpfile_statfs_syncfs_access_and_setattr_by_handle()
    {
        Assert.Equal(0, _fs.TmpFile(Ctx, Root, 0x180, O_RDWR, 0, 0, out FuseEntry t, out FuseOpenResult th));
        Assert.Equal(0u, t.Attr.nlink);
        Assert.Empty(Directory.GetFileSystemEntries(_tmp.FullName));
        Assert.Equal(0, _fs.Release(Ctx, t.NodeId, th.Handle, 0, 0, 0));
        _fs.Forget(Ctx, t.NodeId, 1);

        Assert.Equal(0, _fs.StatFs(Ctx, Root, out FuseKstatfs st));
        Assert.True(st.bsize > 0 && st.blocks > 0 && st.namelen == 255);
        Assert.Equal(0, _fs.SyncFs(Ctx, Root));

        var (node, fh) = CreateFile("acc");
        File.SetUnixFileMode(P("acc"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.Equal(0, chown(P("acc"), 1000, 1000));
        Assert.Equal(0, _fs.Access(new FuseContext(1000, 1000, 1, 1), node, 6));
        Assert.Equal(Errno.EACCES, _fs.Access(new FuseContext(1001, 1001, 1, 1), node, 4));
        Assert.Equal(Errno.EACCES, _fs.Access(Ctx, node, 1)); // even root cannot execute a file without x bits

        var s = new FuseSetattrIn
        {
            valid = FuseConstants.FATTR_FH | FuseConstants.FATTR_SIZE | FuseConstants.FATTR_MTIME | FuseConstants.FATTR_ATIME
                | FuseConstants.FATTR_ATIME_NOW,
            fh = fh, size = 12345, mtime = 1_000_000_000, mtimensec = 123,
        };
        Assert.Equal(0, _fs.SetAttr(Ctx, node, s, out FuseAttr attr, out _));
        Assert.Equal(12345UL, attr.size);
        Assert.Equal(1_000_000_000UL, attr.mtime);
        Assert.Equal(123u, attr.mtimensec);
        Assert.True(attr.atime > 1_600_000_000UL);
        Assert.Equal(Errno.EISDIR, _fs.SetAttr(Ctx, Root, new FuseSetattrIn { valid = FuseConstants.FATTR_SIZE }, out _, out _));
    }
}

public sealed class PassthroughAllocationTests : IDisposable
{
    private readonly DirectoryInfo _tmp = Directory.CreateTempSubdirectory("vfs-pt-alloc-");

    public void Dispose() => _tmp.Delete(true);

    [Fact]
    public unsafe void Data_path_does_not_allocate()
    {
        File.WriteAllBytes(Path.Combine(_tmp.FullName, "f"), new byte[65536]);
        using var fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _tmp.FullName }, NullLogger.Instance);
        var ctx = new FuseContext(0, 0, 1, 1);
        Assert.Equal(0, fs.Lookup(ctx, FuseConstants.RootId, "f"u8, out FuseEntry e));
        Assert.Equal(0, fs.Open(ctx, e.NodeId, (uint)O_RDWR, 0, out FuseOpenResult h));
        byte* buf = stackalloc byte[8192];
        IoSegment[] segs = [new IoSegment(buf, 4096), new IoSegment(buf + 4096, 4096)];
        int failures = 0;
        // No Assert inside the measured loop: xunit's Assert.Equal allocates a comparer per call.
        void Round()
        {
            if (fs.GetAttr(ctx, e.NodeId, null, out _, out _) != 0) failures++;
            if (fs.Lookup(ctx, FuseConstants.RootId, "f"u8, out _) != 0) failures++;
            fs.Forget(ctx, e.NodeId, 1);
            if (fs.Read(ctx, e.NodeId, h.Handle, 4096, segs, 0, out int n) != 0 || n != 8192) failures++;
            if (fs.Write(ctx, e.NodeId, h.Handle, 8192, segs, 0, 0, out n) != 0 || n != 8192) failures++;
        }
        Round();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 200; i++)
        {
            Round();
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(0, failures);
        Assert.Equal(0, fs.Release(ctx, e.NodeId, h.Handle, 0, 0, 0));
    }
}
