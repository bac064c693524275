using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs.Tests;

public sealed class VfsTests : IDisposable
{
    private readonly Vfs _vfs = new(new VfsOptions { UmountDrainTimeout = TimeSpan.FromSeconds(20) }, NullLogger.Instance);
    private readonly Harness _h;
    private readonly FakeFs _a = new("AAAA");
    private readonly FakeFs _b = new("BBBB");

    public VfsTests()
    {
        _h = new Harness(_vfs);
        _vfs.Mount("/containers", _a);
        _vfs.Mount("/rafs/c1/lowerdir", _b);
        _h.Init();
    }

    public void Dispose()
    {
        _h.Dispose();
        _vfs.Dispose();
    }

    private static ushort Slot(ulong id) => (ushort)(id >> 48);

    [Fact]
    public void Node_ids_are_namespaced_by_mount_and_lookups_cross_mount_boundaries()
    {
        ulong a = _h.LookupOk(1, "containers");
        ulong rafs = _h.LookupOk(1, "rafs");
        ulong c1 = _h.LookupOk(rafs, "c1");
        ulong b = _h.LookupOk(c1, "lowerdir");

        Assert.Equal(0, Slot(rafs));
        Assert.Equal(0, Slot(c1));
        Assert.NotEqual(0, Slot(a));
        Assert.NotEqual(0, Slot(b));
        Assert.NotEqual(Slot(a), Slot(b));
        Assert.Equal(FuseConstants.RootId, a & 0xFFFF_FFFF_FFFF);
        Assert.Equal(FuseConstants.RootId, b & 0xFFFF_FFFF_FFFF);

        // The same inner id in two filesystems is two different node ids, each routed to its own filesystem.
        ulong fa = _h.LookupOk(a, "file");
        ulong fb = _h.LookupOk(b, "file");
        Assert.NotEqual(fa, fb);
        Assert.Equal(1, _a.Lookups[2]);
        Assert.Equal(1, _b.Lookups[2]);
        Assert.Equal(0, _h.GetAttr(fa, out FuseAttr attr));
        Assert.Equal(1002ul, attr.ino); // attributes pass through untouched, as the filesystem reported them

        // Mount roots are the filesystems' roots; the mountpoint answers with the inner root's attributes.
        Assert.Equal(0, _h.Lookup(1, "containers", out FuseEntryOut e));
        Assert.Equal(1001ul, e.attr.ino);
        Assert.Equal(Errno.ENOENT, _h.Lookup(1, "nothing", out _));
        Assert.Equal(Errno.ENOENT, _h.Lookup(a, "nothing", out _));
        // ".." of a mount root leads back into the pseudo filesystem.
        Assert.Equal(c1, _h.LookupOk(b, ".."));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Readdir_of_a_pseudo_dir_lists_its_children(bool plus)
    {
        var root = _h.ReadDirAll(1, plus);
        Assert.Equal([".", "..", "containers", "rafs"], root.Select(d => d.Name));
        Assert.All(root, d => Assert.Equal(4u, d.Type));
        if (plus)
        {
            Assert.Equal(0ul, root[0].NodeId); // dots are never instantiated
            Assert.Equal(_h.LookupOk(1, "containers"), root[2].NodeId);
            Assert.Equal(_h.LookupOk(1, "rafs"), root[3].NodeId);
        }
        // Offsets are stable cookies: resuming after "containers" yields exactly the rest.
        Assert.Equal(0, _h.Open(1, out ulong fh, dir: true));
        Assert.Equal(0, _h.ReadDir(1, fh, root[2].Off, plus, 4096, out var rest));
        Assert.Equal(["rafs"], rest.Select(d => d.Name));
        // A reply with room for a single entry still makes progress.
        var tiny = _h.ReadDirAll(1, plus, size: plus ? 176u : 40u);
        Assert.Equal(root.Select(d => d.Name), tiny.Select(d => d.Name));
    }

    [Theory]
    [InlineData(false, 4096u)]
    [InlineData(true, 4096u)]
    [InlineData(true, 160u)]
    public void Readdir_of_a_mounted_dir_comes_from_its_filesystem_with_node_ids_namespaced(bool plus, uint size)
    {
        ulong a = _h.LookupOk(1, "containers");
        var list = _h.ReadDirAll(a, plus, size);
        Assert.Equal([".", "..", "file", "dir"], list.Select(d => d.Name));
        if (plus)
        {
            Assert.Equal(_h.LookupOk(a, "file"), list[2].NodeId);
            Assert.Equal(Slot(a), Slot(list[3].NodeId));
            // Every entry the filesystem looked up was either delivered (and counted by the kernel) or forgotten:
            // "file": readdir + lookup above = 2; "dir": readdir = 1.
            Assert.Equal(2, _a.Lookups[2]);
            Assert.Equal(1, _a.Lookups[3]);
        }
    }

    [Fact]
    public void Pseudo_dirs_are_read_only()
    {
        ulong rafs = _h.LookupOk(1, "rafs");
        Assert.Equal(Errno.EROFS, _h.Send(FuseOpcode.MkDir, 1, [.. Harness.Bytes(new FuseMkdirIn { mode = 0x1ED }), .. Harness.Name("x")]).Error);
        Assert.Equal(Errno.EROFS, _h.Send(FuseOpcode.Unlink, rafs, Harness.Name("c1")).Error);
        Assert.Equal(Errno.EROFS, _h.Send(FuseOpcode.RmDir, 1, Harness.Name("rafs")).Error);
        Assert.Equal(Errno.EROFS, _h.Send(FuseOpcode.Access, rafs, Harness.Bytes(new FuseAccessIn { mask = 2 })).Error);
        Assert.Equal(0, _h.Send(FuseOpcode.Access, rafs, Harness.Bytes(new FuseAccessIn { mask = 5 })).Error);
        Assert.Equal(Errno.EISDIR, _h.Open(rafs, out _));
        Assert.Equal(0, _h.GetAttr(rafs, out FuseAttr attr));
        Assert.Equal(0x41EDu, attr.mode);
        // Renames and links cannot cross filesystems.
        ulong a = _h.LookupOk(1, "containers");
        ulong b = _h.LookupOk(_h.LookupOk(rafs, "c1"), "lowerdir");
        byte[] rename = [.. Harness.Bytes(new FuseRenameIn { newdir = b }), .. Harness.Name("file"), .. Harness.Name("moved")];
        Assert.Equal(Errno.EXDEV, _h.Send(FuseOpcode.Rename, a, rename).Error);
        // A mutation inside a mount is the mount's business.
        var (err, body) = _h.Send(FuseOpcode.MkDir, a, [.. Harness.Bytes(new FuseMkdirIn { mode = 0x1ED }), .. Harness.Name("new")]);
        Assert.Equal(0, err);
        Assert.Equal(Slot(a), Slot(MemoryMarshal.Read<FuseEntryOut>(body).nodeid));
    }

    [Fact]
    public void Forgets_reach_the_owning_filesystem_with_inner_ids()
    {
        ulong a = _h.LookupOk(1, "containers");
        ulong fa = _h.LookupOk(a, "file");
        ulong xb = _h.LookupOk(_h.LookupOk(_h.LookupOk(_h.LookupOk(1, "rafs"), "c1"), "lowerdir"), "dir");
        ulong xbx = _h.LookupOk(xb, "x");

        _h.Forget(fa, 1);
        Assert.Equal([(2ul, 1ul)], _a.Forgets);
        Assert.Empty(_b.Forgets);
        // The mount root was counted by the Vfs, never by the filesystem: its forget stays out.
        _h.Forget(a, 1);
        Assert.Single(_a.Forgets);

        // BATCH_FORGET mixing both mounts and the pseudo fs is split per filesystem.
        ulong fa2 = _h.LookupOk(a, "dir");
        byte[] batch = [.. Harness.Bytes(new FuseBatchForgetIn { count = 4 }),
            .. Harness.Bytes(new FuseForgetOne { nodeid = fa2, nlookup = 1 }),
            .. Harness.Bytes(new FuseForgetOne { nodeid = xb, nlookup = 1 }),
            .. Harness.Bytes(new FuseForgetOne { nodeid = 1, nlookup = 1 }),
            .. Harness.Bytes(new FuseForgetOne { nodeid = xbx, nlookup = 1 })];
        _h.Send(FuseOpcode.BatchForget, 0, batch);
        Assert.Equal(0, _a.Outstanding);
        Assert.Equal(0, _b.Outstanding);
        Assert.Contains((3ul, 1ul), _a.Forgets);
        Assert.Contains((3ul, 1ul), _b.Forgets);
        Assert.Contains((4ul, 1ul), _b.Forgets);
    }

    [Fact]
    public void Handles_are_namespaced_and_checked_against_the_node()
    {
        ulong a = _h.LookupOk(1, "containers");
        ulong b = _h.LookupOk(_h.LookupOk(_h.LookupOk(1, "rafs"), "c1"), "lowerdir");
        ulong fa = _h.LookupOk(a, "file");
        ulong fb = _h.LookupOk(b, "file");
        Assert.Equal(0, _h.Open(fa, out ulong ha));
        Assert.Equal(0, _h.Open(fb, out ulong hb));
        Assert.Equal(Slot(fa), Slot(ha));
        Assert.Equal(Slot(fb), Slot(hb));

        Assert.Equal(0, _h.Read(fa, ha, out byte[] data));
        Assert.Equal("AAAA"u8.ToArray(), data);
        Assert.Equal(0, _h.Read(fb, hb, out data));
        Assert.Equal("BBBB"u8.ToArray(), data);
        // A handle of one filesystem presented with a node of another is refused before it reaches either.
        Assert.Equal(Errno.EBADF, _h.Read(fa, hb, out _));
        Assert.Equal(Errno.EBADF, _h.Read(1, ha, out _));

        Assert.Equal(0, _h.Send(FuseOpcode.Release, fa, Harness.Bytes(new FuseReleaseIn { fh = ha })).Error);
        Assert.Empty(_a.OpenHandles);
        Assert.Single(_b.OpenHandles);
    }

    [Fact]
    public async Task Umount_lets_requests_in_flight_finish_and_later_ones_get_ESTALE_while_the_other_mount_works()
    {
        ulong a = _h.LookupOk(1, "containers");
        ulong fa = _h.LookupOk(a, "file");
        Assert.Equal(0, _h.Open(fa, out ulong ha));
        ulong b = _h.LookupOk(_h.LookupOk(_h.LookupOk(1, "rafs"), "c1"), "lowerdir");

        using var gate = new ManualResetEventSlim();
        _a.ReadGate = gate;
        using var reader = new Harness(_vfs);
        reader.Init(); // a second worker: its own server instance over the same Vfs
        var read = Task.Factory.StartNew(() => (reader.Read(fa, ha, out byte[] d), d), TaskCreationOptions.LongRunning);
        Assert.True(_a.ReadEntered.Wait(TimeSpan.FromSeconds(10)));

        var umount = Task.Factory.StartNew(() => _vfs.Umount("/containers"), TaskCreationOptions.LongRunning);
        Assert.True(SpinWait.SpinUntil(() => _vfs.Mounts.Count == 1, TimeSpan.FromSeconds(10)), "the mount is detached at once");
        Thread.Sleep(100);
        Assert.False(umount.IsCompleted, "umount waits for the read inside the filesystem");
        Assert.Equal(0, _a.Destroys);
        // Meanwhile the other mount and new lookups behave.
        Assert.Equal(0, _h.GetAttr(_h.LookupOk(b, "file"), out _));
        Assert.Equal(Errno.ENOENT, _h.Lookup(1, "containers", out _));

        gate.Set();
        var (err, data) = await read;
        Assert.Equal(0, err);
        Assert.Equal("AAAA"u8.ToArray(), data);
        Assert.Same(_a, await umount);
        Assert.Equal(1, _a.Destroys);

        Assert.Equal(Vfs.ESTALE, _h.GetAttr(fa, out _));
        Assert.Equal(Vfs.ESTALE, _h.Lookup(a, "file", out _));
        Assert.Equal(Vfs.ESTALE, _h.Read(fa, ha, out _));
        // Releases and forgets of the old mount are accepted quietly (it already dropped everything at Destroy).
        Assert.Equal(0, _h.Send(FuseOpcode.Release, fa, Harness.Bytes(new FuseReleaseIn { fh = ha })).Error);
        _h.Forget(fa, 1);
        Assert.Empty(_a.Forgets);
        Assert.Equal(0, _h.GetAttr(b, out _));
    }

    [Fact]
    public void Filesystems_mounted_after_INIT_get_the_negotiated_flags_and_all_see_DESTROY()
    {
        Assert.NotNull(_a.InitFlags);
        Assert.Equal(_h.Server.NegotiatedFlags, _a.InitFlags);
        var late = new FakeFs("late");
        _vfs.Mount("/rafs/c2/lowerdir", late);
        Assert.Equal(_h.Server.NegotiatedFlags, late.InitFlags);
        Assert.Equal(["c1", "c2"], _h.ReadDirAll(_h.LookupOk(1, "rafs"), plus: false).Skip(2).Select(d => d.Name));

        Assert.Equal(0, _h.Send(FuseOpcode.Destroy, 0, []).Error);
        Assert.Equal(1, _a.Destroys);
        Assert.Equal(1, _b.Destroys);
        Assert.Equal(1, late.Destroys);
    }

    [Fact]
    public void Umount_prunes_directories_it_created()
    {
        _vfs.Umount("/rafs/c1/lowerdir");
        Assert.Equal([".", "..", "containers"], _h.ReadDirAll(1, plus: false).Select(d => d.Name));
        Assert.Equal(Errno.ENOENT, _h.Lookup(1, "rafs", out _));
        Assert.Equal(["/containers"], _vfs.Mounts.Select(m => m.Path));
    }

    [Theory]
    [InlineData("relative", VfsMountError.InvalidPath)]
    [InlineData("/", VfsMountError.InvalidPath)]
    [InlineData("/a/../b", VfsMountError.InvalidPath)]
    [InlineData("/containers", VfsMountError.AlreadyMounted)]
    [InlineData("//containers/", VfsMountError.AlreadyMounted)]
    [InlineData("/containers/inside", VfsMountError.Nested)]
    [InlineData("/rafs/c1", VfsMountError.Nested)]
    public void Bad_mounts_are_refused(string path, VfsMountError expected)
    {
        Assert.Equal(expected, _vfs.TryMount(path, new FakeFs("x")));
        Assert.Equal(2, _vfs.Mounts.Count);
    }

    [Fact]
    public void Umount_of_nothing_and_remount()
    {
        Assert.Equal(VfsMountError.NotMounted, _vfs.TryUmount("/rafs", out _));
        Assert.Equal(VfsMountError.NotMounted, _vfs.TryUmount("/nope", out _));
        ulong before = _h.LookupOk(_h.LookupOk(_h.LookupOk(1, "rafs"), "c1"), "lowerdir");
        var replacement = new FakeFs("CCCC");
        Assert.Equal(VfsMountError.None, _vfs.TryRemount("/rafs/c1/lowerdir", replacement, out IFileSystem? old));
        Assert.Same(_b, old);
        ulong after = _h.LookupOk(_h.LookupOk(_h.LookupOk(1, "rafs"), "c1"), "lowerdir");
        Assert.NotEqual(Slot(before), Slot(after));
        Assert.Equal(Vfs.ESTALE, _h.GetAttr(before, out _));
        ulong f = _h.LookupOk(after, "file");
        Assert.Equal(0, _h.Open(f, out ulong fh));
        Assert.Equal(0, _h.Read(f, fh, out byte[] data));
        Assert.Equal("CCCC"u8.ToArray(), data);
    }

    [Fact]
    public void Metrics_count_requests_per_opcode()
    {
        ulong a = _h.LookupOk(1, "containers");
        _h.Lookup(a, "missing", out _);
        var stats = _vfs.Metrics.Snapshot().Single(s => s.Opcode == FuseOpcode.Lookup);
        Assert.Equal(2, stats.Count);
        Assert.Equal(1, stats.Errors);
        Assert.Equal(2, stats.LatencyBuckets.Sum());
        Assert.Empty(_vfs.Metrics.InFlight());
    }
}

public sealed class VfsMetricsJsonTests
{
    [Fact]
    public void Global_metrics_document_counts_what_was_served()
    {
        using var vfs = new Vfs(new VfsOptions(), NullLogger.Instance);
        vfs.Mount("/a", new FakeFs("AAAA"));
        using var h = new Harness(vfs);
        h.Init();
        ulong a = h.LookupOk(1, "a");
        ulong f = h.LookupOk(a, "file");
        Assert.Equal(0, h.Open(f, out ulong fh));
        Assert.Equal(0, h.Read(f, fh, out _));
        System.Text.Json.Nodes.JsonObject doc = VfsMetricsJson.Global(vfs.Metrics);
        Assert.Equal(4L, (long)doc["data_read"]!);
        Assert.Equal(2L, (long)doc["fops"]!["lookup"]!["count"]!);
        Assert.Equal(1L, (long)doc["fops"]!["read"]!["count"]!);
        Assert.Equal(4L, (long)doc["fop_hits_total"]!);
        Assert.Empty(VfsMetricsJson.InFlight(vfs.Metrics));
    }
}
