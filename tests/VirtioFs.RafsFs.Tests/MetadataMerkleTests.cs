using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Rafs.Tests.Support;
using VirtioFs.Tests.Shared;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// Served with a trusted root (--root-digest / --trust-key), an inode whose record was edited in the bootstrap
/// (setuid bit, uid, gid, rdev, an added or changed security.capability; every digest left as built) answers EIO
/// to LOOKUP and GETATTR, and READDIRPLUS lists its name without attributes, while the rest of the image serves
/// (checked in-process and through a /dev/fuse host mount).
/// Without a trusted root the same image serves as it is. An image without the extension is refused with one.
/// </summary>
public sealed class MetadataMerkleTests
{
    private static readonly FuseContext Ctx = new(0, 0, 1, 1);

    public static TheoryData<int, string> EditsByVersion()
    {
        var d = new TheoryData<int, string>();
        foreach (int v in new[] { 6, 5 })
            foreach (var e in MetadataImage.Edits.Keys) d.Add(v, e);
        return d;
    }

    private static RafsMount Open(MetadataImage mi, byte[]? root = null, byte[]? trustKey = null) =>
        RafsMount.Open(new RafsMountOptions { Bootstrap = mi.Bootstrap, BlobDir = mi.BlobDir, Prefetch = PrefetchSource.None, RootDigest = root, TrustKey = trustKey });

    /// <summary>LOOKUP along <paramref name="path"/>; the last component's errno and entry.</summary>
    private static int Walk(RafsFileSystem fs, string path, out FuseEntry entry)
    {
        entry = default;
        ulong node = FuseConstants.RootId;
        foreach (var part in path.Split('/'))
        {
            int rc = fs.Lookup(Ctx, node, System.Text.Encoding.UTF8.GetBytes(part), out entry);
            if (rc != 0) return rc;
            node = entry.NodeId;
        }
        return 0;
    }

    [Theory]
    [MemberData(nameof(EditsByVersion))]
    public void An_edited_inode_answers_EIO_and_the_rest_serves(int fsVersion, string edit)
    {
        using var mi = new MetadataImage(fsVersion);
        var (path, _) = MetadataImage.Edits[edit];
        var (handle, _) = mi.Find(path);
        mi.Tamper(edit);

        using (var plain = Open(mi))
        {
            // Without a trusted root nothing is checked: the edit is what a guest would see.
            Assert.Equal(0, Walk(plain.FileSystem, path, out var e));
            Assert.Equal(0, plain.FileSystem.GetAttr(Ctx, e.NodeId, null, out _, out _));
        }

        using var m = Open(mi, root: mi.Build.RootDigest);
        var fs = m.FileSystem;
        Assert.Equal(Errno.EIO, Walk(fs, path, out _));
        // The kernel would not GETATTR a node LOOKUP refused, but a node id is a function of the inode: try it.
        ulong node = fs.ToNode(handle);
        Assert.Equal(Errno.EIO, fs.GetAttr(Ctx, node, null, out _, out _));
        Assert.Equal(Errno.EIO, fs.GetXattr(Ctx, node, "security.capability"u8, new byte[64], out _));
        Assert.Equal(Errno.EIO, fs.Access(Ctx, node, 4));
        // Everything else serves, including the other names in the same directory.
        foreach (var other in new[] { "bin/other", "etc", "lib", "dev", "top.txt" })
        {
            Assert.Equal(0, Walk(fs, other, out var oe));
            Assert.Equal(0, fs.GetAttr(Ctx, oe.NodeId, null, out _, out _));
        }
        // Through the kernel (/dev/fuse): the directory lists the name (READDIRPLUS), stat of it fails with EIO, and
        // the other names and files serve.
        string dir = path[..path.LastIndexOf('/')];
        using var mnt = new HostMount(m);
        Assert.Contains(mnt.M(path), Directory.GetFileSystemEntries(mnt.M(dir)));
        var err = Assert.Throws<IOException>(() => HostSyscalls.Lstat(mnt.M(path)));
        Assert.Contains("errno 5", err.Message, StringComparison.Ordinal);
        Assert.Equal("#!/bin/sh\necho other\n", File.ReadAllText(mnt.M("bin/other")));
        Assert.Equal("top\n", File.ReadAllText(mnt.M("top.txt")));
        foreach (var sibling in Directory.GetFileSystemEntries(mnt.M(dir)).Where(p => p != mnt.M(path)))
            Assert.Equal(0x8000u, HostSyscalls.Lstat(sibling).stx_mode & 0xF000u);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void An_untouched_image_serves_every_attribute_under_a_trusted_root(int fsVersion)
    {
        var (priv, pub) = Signing.Generate();
        using var mi = new MetadataImage(fsVersion, priv);
        using var m = Open(mi, root: mi.Build.RootDigest, trustKey: pub);
        var fs = m.FileSystem;
        Assert.Equal(0, Walk(fs, "dev/chr", out var chr));
        Assert.Equal(0x2000u | 0x1B6, chr.Attr.mode);
        Assert.Equal(0, Walk(fs, "lib/capfile2", out var cap));
        var value = new byte[64];
        Assert.Equal(0, fs.GetXattr(Ctx, cap.NodeId, "security.capability"u8, value, out int len));
        Assert.Equal(MetadataImage.CapabilityValue, value.AsSpan(0, len).ToArray());
        Assert.Equal(0, fs.Open(Ctx, cap.NodeId, 0, 0, out var h));
        Assert.Equal(0, fs.GetAttr(Ctx, cap.NodeId, h.Handle, out var a, out _));
        Assert.Equal(12UL, a.size);
        using var mnt = new HostMount(m);
        var st = HostSyscalls.Lstat(mnt.M("bin/tool"));
        Assert.Equal(0x8000u | 0x1ED, (uint)st.stx_mode);
        Assert.Equal((1u, 3u), (HostSyscalls.Lstat(mnt.M("dev/chr")).stx_rdev_major, HostSyscalls.Lstat(mnt.M("dev/chr")).stx_rdev_minor));
        Assert.Equal(MetadataImage.CapabilityValue, HostSyscalls.Xattrs(mnt.M("lib/capfile2"))["security.capability"]);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void A_node_never_looked_up_gets_EIO_under_a_trusted_root(int fsVersion)
    {
        using var mi = new MetadataImage(fsVersion);
        var (handle, _) = mi.Find("etc/conf");
        using (var plain = Open(mi)) Assert.Equal(0, plain.FileSystem.GetAttr(Ctx, plain.FileSystem.ToNode(handle), null, out _, out _));
        using var m = Open(mi, root: mi.Build.RootDigest);
        // Its directory was never verified, so nothing vouches for the inode's digest yet.
        Assert.Equal(Errno.EIO, m.FileSystem.GetAttr(Ctx, m.FileSystem.ToNode(handle), null, out _, out _));
        Assert.Equal(0, Walk(m.FileSystem, "etc/conf", out var e));
        Assert.Equal(e.NodeId, m.FileSystem.ToNode(handle));
        Assert.Equal(0, m.FileSystem.GetAttr(Ctx, e.NodeId, null, out _, out _));
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void An_image_without_the_extension_serves_but_is_refused_with_a_root_digest_or_key(int fsVersion)
    {
        var (priv, pub) = Signing.Generate();
        using var mi = new MetadataImage(fsVersion, priv);
        mi.DropExtension();
        using (var plain = Open(mi))
        {
            Assert.Equal(0, Walk(plain.FileSystem, "etc/conf", out var e));
            Assert.Equal(0, plain.FileSystem.GetAttr(Ctx, e.NodeId, null, out _, out _));
        }
        var byDigest = Assert.Throws<RafsMountException>(() => Open(mi, root: mi.Build.RootDigest));
        Assert.Contains("merkle extension version 2", byDigest.Message, StringComparison.Ordinal);
        Assert.Contains("has none", byDigest.Message, StringComparison.Ordinal);
        var byKey = Assert.Throws<RafsMountException>(() => Open(mi, trustKey: pub));
        Assert.Equal(byDigest.Message, byKey.Message);

        using var v1 = new MetadataImage(fsVersion);
        v1.SetExtensionVersion(1);
        var old = Assert.Throws<RafsMountException>(() => Open(v1, root: v1.Build.RootDigest));
        Assert.Contains("has version 1", old.Message, StringComparison.Ordinal);
    }

    /// <summary>A served image mounted on the host through /dev/fuse (the kernel's LOOKUP, GETATTR and READDIRPLUS).</summary>
    private sealed class HostMount : IDisposable
    {
        private readonly FuseDeviceSession _session;
        private readonly string _dir;

        public HostMount(RafsMount image)
        {
            _dir = Directory.CreateTempSubdirectory("vfs-merkle-mnt-").FullName;
            var server = new FuseServer(image.FileSystem, new FuseServerOptions(), NullLogger.Instance);
            _session = FuseDeviceSession.Mount(_dir, server, new FuseDeviceOptions { Threads = 2, Subtype = "vfsd-test" }, NullLogger.Instance);
        }

        public string M(string relative) => Path.Combine(_dir, relative);

        public void Dispose()
        {
            try
            {
                _session.Dispose();
            }
            finally
            {
                Interop.umount2(_dir, Interop.MNT_DETACH);
                try { Directory.Delete(_dir); } catch (IOException) { }
            }
        }
    }
}
