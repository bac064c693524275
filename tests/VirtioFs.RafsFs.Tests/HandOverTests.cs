using VirtioFs.Fuse;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// The node and handle tables a daemon hands to its successor (failover, hot upgrade): what the kernel holds is
/// exported, a second filesystem over the same image adopts it and serves the same handles, a handle given out after
/// the export is opened again from the node the kernel names, and a table that does not fit the image is refused.
/// </summary>
public sealed unsafe class HandOverTests : IDisposable
{
    private static readonly FuseContext Root = new(0, 0, 1, 1);
    private readonly ImageFixture _fx = new();
    private readonly RafsMount _old;
    private readonly RafsMount _new;

    public HandOverTests()
    {
        _fx.PopulateStandard();
        _fx.BuildImage();
        _old = _fx.Open();
        _new = _fx.Open();
    }

    public void Dispose()
    {
        _old.Dispose();
        _new.Dispose();
        _fx.Dispose();
    }

    private static FuseEntry Look(RafsFileSystem fs, string path)
    {
        ulong node = FuseConstants.RootId;
        FuseEntry e = default;
        foreach (string part in path.Split('/'))
        {
            Assert.Equal(0, fs.Lookup(Root, node, System.Text.Encoding.UTF8.GetBytes(part), out e));
            node = e.NodeId;
        }
        return e;
    }

    private static byte[] Read(RafsFileSystem fs, ulong node, ulong handle, out int rc)
    {
        var buf = new byte[8192];
        fixed (byte* p = buf)
        {
            rc = fs.Read(Root, node, handle, 0, [new IoSegment(p, buf.Length)], 0, out int n);
            return buf[..n];
        }
    }

    [Fact]
    public void A_successor_adopts_the_nodes_and_handles_and_serves_the_same_handles()
    {
        RafsFileSystem old = _old.FileSystem, next = _new.FileSystem;
        FuseEntry file = Look(old, "a/size-4097.bin");
        Look(old, "a/size-4097.bin"); // two lookups on the same node
        Assert.Equal(0, old.Open(Root, file.NodeId, 0, 0, out FuseOpenResult h));
        var nodes = old.ExportNodes();
        var (handles, nextHandle) = old.ExportHandles();
        Assert.Contains(nodes, n => n.NodeId == file.NodeId && n.Lookups == 2 && n.Ino == file.Attr.ino && n.Mode == file.Attr.mode);
        Assert.Equal(h.Handle, Assert.Single(handles).Handle);

        // The predecessor keeps serving after the export: this handle is not in the table.
        FuseEntry late = Look(old, "a/size-4096.bin");
        Assert.Equal(0, old.Open(Root, late.NodeId, 0, 0, out FuseOpenResult lateHandle));

        Assert.Null(next.RestoreNodes(nodes));
        Assert.Null(next.RestoreHandles(handles, nextHandle));
        byte[] want = File.ReadAllBytes(_fx.S("a/size-4097.bin"));
        Assert.Equal(want, Read(next, file.NodeId, h.Handle, out int rc));
        Assert.Equal(0, rc);
        Assert.Equal(File.ReadAllBytes(_fx.S("a/size-4096.bin")), Read(next, late.NodeId, lateHandle.Handle, out rc));
        Assert.Equal(0, rc);

        // New handles never collide with one the predecessor may have given out.
        Assert.Equal(0, next.Open(Root, file.NodeId, 0, 0, out FuseOpenResult mine));
        Assert.True(mine.Handle > lateHandle.Handle + 1_000_000);
        // FORGET works on the adopted counts: two lookups, two forgets, and the node is gone from the table.
        next.Forget(Root, file.NodeId, 1);
        Assert.Contains(next.ExportNodes(), n => n.NodeId == file.NodeId && n.Lookups == 1);
        next.Forget(Root, file.NodeId, 1);
        Assert.DoesNotContain(next.ExportNodes(), n => n.NodeId == file.NodeId);
    }

    [Fact]
    public void Tables_that_do_not_fit_the_image_are_refused()
    {
        RafsFileSystem next = _new.FileSystem;
        FuseEntry file = Look(_old.FileSystem, "a/size-1.bin");
        FuseEntry dir = Look(_old.FileSystem, "a/b");
        Assert.Contains("in this image it names something else", next.RestoreNodes([new RafsFileSystem.HeldNode(file.NodeId, 1, file.Attr.ino, file.Attr.mode ^ 0x1)]));
        Assert.NotNull(next.RestoreNodes([new RafsFileSystem.HeldNode(ulong.MaxValue - 5, 1, 7, 0x81A4)]));
        Assert.NotNull(next.RestoreHandles([new RafsFileSystem.HeldHandle(3, dir.NodeId)], 4)); // a directory
        Assert.NotNull(next.RestoreHandles([new RafsFileSystem.HeldHandle(3, file.NodeId), new RafsFileSystem.HeldHandle(3, file.NodeId)], 4));
        Assert.NotNull(next.RestoreHandles([new RafsFileSystem.HeldHandle(9, file.NodeId)], 4)); // next below a held handle
        Assert.Equal(0, next.OpenFiles);
        // Before any takeover an unknown handle is still EBADF.
        Read(next, file.NodeId, 77, out int rc);
        Assert.Equal(Errno.EBADF, rc);
    }
}
