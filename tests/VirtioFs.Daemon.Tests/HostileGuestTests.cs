using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Device;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// A hostile guest (issue 9, "hostile-guest suite"): raw FUSE requests a Linux driver would never send, laid into
/// guest memory and put on the request queue of the real virtio-fs device over the passthrough, negotiated like QEMU
/// 7.2. Each gets the errno asserted here; after each, nothing beside the share has changed or been read (a sentinel
/// file and directory next to it, checked by content, times and listing) and a normal request still succeeds.
/// </summary>
[Collection("passthrough umask")]
public sealed unsafe class HostileGuestTests : IDisposable
{
    private const ushort QueueSize = 64;
    private const string SentinelText = "outside the share\n";
    private readonly string _root = Directory.CreateTempSubdirectory("vfs-hostile-").FullName;
    private readonly string _share;
    private readonly string _sentinel;
    private readonly string _outsideDir;
    private readonly DateTime _sentinelAccess;
    private readonly string[] _rootListing;
    private readonly PassthroughFileSystem _fs;
    private readonly VirtioFsDevice _device;
    private readonly TestGuestMemory _memory = TestGuestMemory.Single(16 << 20);
    private readonly MockSplitQueue[] _queues;
    private readonly VhostUserTestHarness _harness;
    private readonly MockSplitQueue _q;
    private ulong _unique = 100;

    public HostileGuestTests()
    {
        _share = Directory.CreateDirectory(Path.Combine(_root, "share")).FullName;
        _sentinel = Path.Combine(_root, "sentinel");
        _outsideDir = Directory.CreateDirectory(Path.Combine(_root, "outside-dir")).FullName;
        File.WriteAllText(_sentinel, SentinelText);
        File.WriteAllText(Path.Combine(_outsideDir, "inside-outside"), SentinelText);
        // Atime in the past, so a read through the share (even with relatime) would move it.
        File.SetLastAccessTimeUtc(_sentinel, new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        _sentinelAccess = File.GetLastAccessTimeUtc(_sentinel);
        File.WriteAllText(Path.Combine(_share, "data"), "inside the share\n");
        Directory.CreateDirectory(Path.Combine(_share, "dir"));
        // A symlink planted on the host pointing at the sentinel: the guest may see it, never follow it on the host.
        File.CreateSymbolicLink(Path.Combine(_share, "to-sentinel"), "../sentinel");
        _rootListing = Listing();

        _fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _share }, NullLogger.Instance);
        _device = new VirtioFsDevice(new FuseServer(_fs, new FuseServerOptions(), NullLogger.Instance), null, 1, 0, NullLogger.Instance);
        _queues = [new MockSplitQueue(_memory, 0, QueueSize), new MockSplitQueue(_memory, 1, QueueSize)];
        _harness = new VhostUserTestHarness(_device);
        _harness.StartLikeQemu72(_memory, _queues);
        _q = _queues[1];
        Assert.Equal(0, Send(FuseOpcode.Init, 0, Bytes(new FuseInitIn { major = 7, minor = 38, max_readahead = 1 << 17 }), 64).Error);
    }

    public void Dispose()
    {
        _harness.Dispose();
        foreach (MockSplitQueue q in _queues)
        {
            q.Dispose();
        }
        _memory.Dispose();
        _device.Dispose();
        _fs.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public void Names_with_slash_dotdot_nul_or_over_255_bytes_are_refused()
    {
        Assert.Equal(Errno.EINVAL, Lookup(1, "dir/../../sentinel"));
        Assert.Equal(Errno.EINVAL, Lookup(1, "../sentinel"));
        Assert.Equal(Errno.EINVAL, MkDir(1, "../escaped"));
        Assert.Equal(Errno.EINVAL, MkDir(1, ".."));
        Assert.Equal(Errno.EINVAL, Create(1, "/tmp-escaped"));
        Assert.Equal(Errno.ENAMETOOLONG, Lookup(1, new string('a', 256)));
        Assert.Equal(Errno.ENAMETOOLONG, MkDir(1, new string('b', 256)));
        // A name runs to its NUL: "sentinel\0../x" names "sentinel", which is not in the share.
        Assert.Equal(Errno.ENOENT, Error(Send(FuseOpcode.Lookup, 1, Encoding.ASCII.GetBytes("sentinel\0../x\0"))));
        // No NUL at all: the name has no end and the request is malformed.
        Assert.Equal(Errno.EINVAL, Error(Send(FuseOpcode.Lookup, 1, "data"u8.ToArray())));
        // ".." of the root is the root: nothing above it has a node id.
        Assert.Equal(0, Lookup(1, "..", out FuseEntryOut up));
        Assert.Equal(Stat(_share).Ino, up.attr.ino);
        CheckContained();
    }

    [Fact]
    public void Node_ids_never_handed_out_or_forgotten_are_refused()
    {
        Assert.Equal(Errno.EBADF, Error(Send(FuseOpcode.GetAttr, 424242, Bytes(new FuseGetattrIn()))));
        Assert.Equal(Errno.EBADF, Lookup(424242, "data"));
        Assert.Equal(Errno.EBADF, Error(Send(FuseOpcode.Open, 0, Bytes(new FuseOpenIn()))));
        Assert.Equal(Errno.EBADF, Error(Send(FuseOpcode.Read, 0, Bytes(new FuseReadIn { fh = 99, size = 10 }))));
        Assert.Equal(0, Lookup(1, "data", out FuseEntryOut data));
        ForgetAndWait(data.nodeid, 1);
        Assert.Equal(Errno.EBADF, Error(Send(FuseOpcode.GetAttr, data.nodeid, Bytes(new FuseGetattrIn()))));
        Assert.Equal(Errno.EBADF, Error(Send(FuseOpcode.Open, data.nodeid, Bytes(new FuseOpenIn()))));
        // Forgetting more than was looked up, or an unknown node, changes nothing.
        ForgetAndWait(data.nodeid, 1000);
        ForgetAndWait(1, 1000);
        ForgetAndWait(987654, 1);
        CheckContained();
    }

    [Fact]
    public void Read_of_4_GiB_is_clipped_to_the_reply_buffer_and_write_longer_than_its_buffer_is_refused()
    {
        Assert.Equal(0, Lookup(1, "data", out FuseEntryOut data));
        ulong fh = Open(data.nodeid, O_RDWR);
        // 4 GiB - 1 asked (fuse_read_in.size is a u32); the reply buffer holds 4096: the read is clipped to the buffer,
        // and nothing past it is written (a canary behind the buffer survives).
        ChainBuffer reply = _q.Writable(16 + 4096);
        ulong canary = _memory.Allocate(64, 8);
        _memory.Span(canary, 64).Fill(0x5A);
        Reply r = Send(FuseOpcode.Read, data.nodeid, Bytes(new FuseReadIn { fh = fh, offset = 0, size = uint.MaxValue }), reply);
        Assert.Equal(0, r.Error);
        Assert.Equal("inside the share\n", Encoding.ASCII.GetString(r.Body));
        Assert.True(_memory.Span(canary, 64).IndexOfAnyExcept((byte)0x5A) < 0);
        // An offset past 2^63 is not an off_t.
        Assert.Equal(Errno.EINVAL, Error(Send(FuseOpcode.Read, data.nodeid, Bytes(new FuseReadIn { fh = fh, offset = 1UL << 63, size = 10 }))));
        // WRITE says 1 MiB and carries 10 bytes: refused, the file unchanged.
        byte[] write = [.. Bytes(new FuseWriteIn { fh = fh, offset = 0, size = 1 << 20 }), .. "0123456789"u8.ToArray()];
        Assert.Equal(Errno.EINVAL, Error(Send(FuseOpcode.Write, data.nodeid, write)));
        Assert.Equal("inside the share\n", File.ReadAllText(Path.Combine(_share, "data")));
        CheckContained();
    }

    [Fact]
    public void Device_nodes_made_by_the_guest_are_never_opened_on_the_host()
    {
        // mknod c 1 1 (/dev/mem on the host) and b 8 0 (/dev/sda): creating them in the share is the guest's right as
        // root, opening them on the host is not (virtiofsd opens only regular files too).
        Assert.Equal(0, MkNod(1, "mem", 0x2000 | 0x1B6, (1 << 8) | 1, out FuseEntryOut mem));
        Assert.Equal(0x2000u, mem.attr.mode & 0xF000);
        Assert.Equal(Errno.ENXIO, Error(Send(FuseOpcode.Open, mem.nodeid, Bytes(new FuseOpenIn { flags = O_RDWR }))));
        Assert.Equal(0, MkNod(1, "sda", 0x6000 | 0x1B6, 8 << 8, out FuseEntryOut sda));
        Assert.Equal(Errno.ENXIO, Error(Send(FuseOpcode.Open, sda.nodeid, Bytes(new FuseOpenIn()))));
        // A fifo opened on the host would block the queue's worker until a writer came: ENXIO too.
        Assert.Equal(0, MkNod(1, "fifo", 0x1000 | 0x1B6, 0, out FuseEntryOut fifo));
        Assert.Equal(Errno.ENXIO, Error(Send(FuseOpcode.Open, fifo.nodeid, Bytes(new FuseOpenIn()))));
        CheckContained();
    }

    [Fact]
    public void Symlinks_out_of_the_share_are_never_followed_on_the_host()
    {
        Assert.Equal(0, Symlink(1, "pw", "/etc/passwd", out FuseEntryOut pw));
        Assert.Equal(0xA000u, pw.attr.mode & 0xF000);
        Assert.Equal((ulong)"/etc/passwd".Length, pw.attr.size);
        // OPEN of the link: links are never opened; LOOKUP through it: not a directory.
        Assert.Equal(Errno.ENXIO, Error(Send(FuseOpcode.Open, pw.nodeid, Bytes(new FuseOpenIn()))));
        Assert.Equal(Errno.ENOTDIR, Lookup(pw.nodeid, "passwd"));
        // The guest reads the target and resolves it in its own namespace.
        Reply link = Send(FuseOpcode.ReadLink, pw.nodeid, []);
        Assert.Equal("/etc/passwd", Encoding.ASCII.GetString(link.Body));
        // The link planted on the host toward the sentinel: its own attributes, never the sentinel's.
        Assert.Equal(0, Lookup(1, "to-sentinel", out FuseEntryOut planted));
        Assert.Equal(0xA000u, planted.attr.mode & 0xF000);
        Assert.NotEqual(Stat(_sentinel).Ino, planted.attr.ino);
        Assert.Equal(Errno.ENXIO, Error(Send(FuseOpcode.Open, planted.nodeid, Bytes(new FuseOpenIn { flags = O_RDWR | O_TRUNC }))));
        Assert.Equal(Errno.ENOTDIR, Lookup(planted.nodeid, "x"));
        // SETATTR on the link (truncate, chmod) must not reach the sentinel either.
        Reply truncate = Send(FuseOpcode.SetAttr, planted.nodeid, Bytes(new FuseSetattrIn { valid = FATTR_SIZE, size = 0 }));
        Assert.NotEqual(0, truncate.Error);
        CheckContained();
    }

    [Fact]
    public void Rename_and_link_across_the_boundary_are_refused()
    {
        Assert.Equal(0, Lookup(1, "data", out FuseEntryOut data));
        Assert.Equal(0, Lookup(1, "dir", out FuseEntryOut dir));
        // To a parent that was never handed out (the only way to name a directory outside).
        Assert.Equal(Errno.EBADF, Rename(1, "data", 31337, "stolen"));
        Assert.Equal(Errno.EBADF, Rename(31337, "sentinel", 1, "stolen"));
        // Names that climb.
        Assert.Equal(Errno.EINVAL, Rename(1, "data", 1, "../stolen"));
        Assert.Equal(Errno.EINVAL, Rename(dir.nodeid, "../sentinel", 1, "stolen"));
        Assert.Equal(Errno.EINVAL, Rename(1, "..", 1, "x"));
        // RENAME2 with EXCHANGE toward a climbing name.
        Assert.Equal(Errno.EINVAL, Error(Send(FuseOpcode.Rename2, 1,
            [.. Bytes(new FuseRename2In { newdir = 1, flags = 2 }), .. Name("data"), .. Name("../sentinel")])));
        // A "directory" that is a file.
        Assert.Equal(Errno.ENOTDIR, Rename(1, "data", data.nodeid, "x"));
        // LINK: from an unknown node, into an unknown parent, under a climbing name.
        Assert.Equal(Errno.EBADF, Link(31337, 1, "stolen"));
        Assert.Equal(Errno.EBADF, Link(data.nodeid, 31337, "stolen"));
        Assert.Equal(Errno.EINVAL, Link(data.nodeid, 1, "../stolen"));
        Assert.Equal(Errno.EINVAL, Link(data.nodeid, dir.nodeid, "../../stolen"));
        // The root cannot be moved or linked.
        Assert.NotEqual(0, Link(1, dir.nodeid, "root-again"));
        CheckContained();
        Assert.True(File.Exists(Path.Combine(_share, "data")));
    }

    // ---- containment and liveness ----

    /// <summary>Nothing beside the share changed or was read, and the daemon still answers a normal request.</summary>
    private void CheckContained()
    {
        Assert.Equal(_rootListing, Listing());
        Assert.Equal(_sentinelAccess, File.GetLastAccessTimeUtc(_sentinel)); // not read through the share
        Assert.Equal(SentinelText, File.ReadAllText(_sentinel));
        File.SetLastAccessTimeUtc(_sentinel, _sentinelAccess); // our own read above moved it
        Assert.Equal([Path.Combine(_outsideDir, "inside-outside")], Directory.GetFileSystemEntries(_outsideDir));
        Assert.Equal(0, Lookup(1, "data", out FuseEntryOut data));
        Assert.Equal(17UL, data.attr.size);
    }

    private string[] Listing() => Directory.GetFileSystemEntries(_root).Order(StringComparer.Ordinal).ToArray();

    private static (ulong Ino, long Size) Stat(string path)
    {
        byte[] p = Encoding.UTF8.GetBytes(path + "\0");
        Tmds.Linux.stat st;
        fixed (byte* pp = p)
        {
            Assert.Equal(0, Tmds.Linux.LibC.lstat(pp, &st));
        }
        return ((ulong)st.st_ino, (long)st.st_size);
    }

    // ---- raw requests ----

    private const uint O_RDWR = 2, O_TRUNC = 0x200, FATTR_SIZE = 1 << 3;

    private readonly record struct Reply(int Error, byte[] Body);

    private static int Error(Reply r) => -r.Error;

    private Reply Send(FuseOpcode op, ulong nodeId, byte[] args, int replyBody = 4096) =>
        Send(op, nodeId, args, _q.Writable((uint)(16 + replyBody)));

    private Reply Send(FuseOpcode op, ulong nodeId, byte[] args, ChainBuffer reply)
    {
        var header = new FuseInHeader { len = (uint)(40 + args.Length), opcode = (uint)op, unique = _unique++, nodeid = nodeId };
        byte[] request = new byte[40 + args.Length];
        MemoryMarshal.Write(request, in header);
        args.CopyTo(request, 40);
        _q.AddChain(_q.Readable(request), reply);
        _q.Kick();
        VringUsedElem used = _q.WaitForUsed(TimeSpan.FromSeconds(30));
        Assert.InRange(used.len, 16u, reply.Length);
        FuseOutHeader o = MemoryMarshal.Read<FuseOutHeader>(_memory.Span(reply.Addr, 16));
        Assert.Equal(header.unique, o.unique);
        Assert.Equal(used.len, o.len);
        Assert.InRange(o.error, -4095, 0);
        return new Reply(o.error, _memory.Span(reply.Addr + 16, (int)used.len - 16).ToArray());
    }

    private void ForgetAndWait(ulong nodeId, ulong nlookup)
    {
        // FORGET has no reply; it goes on the hiprio queue and comes back used with length 0.
        MockSplitQueue hiprio = _queues[0];
        var header = new FuseInHeader { len = 48, opcode = (uint)FuseOpcode.Forget, unique = _unique++, nodeid = nodeId };
        byte[] request = new byte[48];
        MemoryMarshal.Write(request, in header);
        MemoryMarshal.Write(request.AsSpan(40), new FuseForgetIn { nlookup = nlookup });
        hiprio.AddChain(hiprio.Readable(request));
        hiprio.Kick();
        Assert.Equal(0u, hiprio.WaitForUsed(TimeSpan.FromSeconds(30)).len);
    }

    private static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    private static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    private int Lookup(ulong parent, string name) => Lookup(parent, name, out _);

    private int Lookup(ulong parent, string name, out FuseEntryOut entry) => Entry(Send(FuseOpcode.Lookup, parent, Name(name)), out entry);

    private static int Entry(Reply r, out FuseEntryOut entry)
    {
        entry = r.Error == 0 ? MemoryMarshal.Read<FuseEntryOut>(r.Body) : default;
        return -r.Error;
    }

    private int MkDir(ulong parent, string name) =>
        Error(Send(FuseOpcode.MkDir, parent, [.. Bytes(new FuseMkdirIn { mode = 0x41ED }), .. Name(name)]));

    private int Create(ulong parent, string name) =>
        Error(Send(FuseOpcode.Create, parent, [.. Bytes(new FuseCreateIn { flags = 0x41, mode = 0x81A4 }), .. Name(name)]));

    private int MkNod(ulong parent, string name, uint mode, uint rdev, out FuseEntryOut entry) =>
        Entry(Send(FuseOpcode.MkNod, parent, [.. Bytes(new FuseMknodIn { mode = mode, rdev = rdev }), .. Name(name)]), out entry);

    private int Symlink(ulong parent, string name, string target, out FuseEntryOut entry) =>
        Entry(Send(FuseOpcode.Symlink, parent, [.. Name(name), .. Name(target)]), out entry);

    private int Rename(ulong parent, string name, ulong newParent, string newName) =>
        Error(Send(FuseOpcode.Rename, parent, [.. Bytes(new FuseRenameIn { newdir = newParent }), .. Name(name), .. Name(newName)]));

    private int Link(ulong oldNode, ulong newParent, string name) =>
        Error(Send(FuseOpcode.Link, newParent, [.. Bytes(new FuseLinkIn { oldnodeid = oldNode }), .. Name(name)]));

    private ulong Open(ulong nodeId, uint flags)
    {
        Reply r = Send(FuseOpcode.Open, nodeId, Bytes(new FuseOpenIn { flags = flags }));
        Assert.Equal(0, r.Error);
        return MemoryMarshal.Read<FuseOpenOut>(r.Body).fh;
    }
}
