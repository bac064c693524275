using System.Buffers.Binary;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

/// <summary>
/// The passthrough with --xattrmap (virtiofsd doc/xattr-mapping.md examples on real host files), --posix-acl and
/// --security-label, called through IFileSystem as the FUSE server would.
/// </summary>
public sealed class XattrPassthroughTests : IDisposable
{
    private const ulong Root = FuseConstants.RootId;
    private static readonly FuseContext Ctx = new(0, 0, 1, 1);
    private readonly DirectoryInfo _tmp;
    private readonly List<PassthroughFileSystem> _filesystems = [];

    public XattrPassthroughTests() => _tmp = Directory.CreateTempSubdirectory("vfs-xattrmap-");

    public void Dispose()
    {
        foreach (PassthroughFileSystem fs in _filesystems) fs.Dispose();
        _tmp.Delete(true);
    }

    private PassthroughFileSystem Fs(string? map = null, bool acl = false, bool label = false)
    {
        var fs = new PassthroughFileSystem(new PassthroughOptions
        {
            SharedDir = _tmp.FullName, Xattr = true, XattrMap = map is null ? null : XattrMap.Parse(map), PosixAcl = acl, SecurityLabel = label,
        }, NullLogger.Instance);
        _filesystems.Add(fs);
        FuseInitFlags flags = FuseInitFlags.None;
        if (acl) flags |= FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.SetxattrExt;
        if (label) flags |= FuseInitFlags.SecurityCtx;
        Assert.Equal(0, fs.Init(flags));
        return fs;
    }

    private static byte[] N(string s) => Encoding.UTF8.GetBytes(s);
    private string P(string name) => Path.Combine(_tmp.FullName, name);

    private static ulong Lookup(PassthroughFileSystem fs, string name)
    {
        Assert.Equal(0, fs.Lookup(Ctx, Root, N(name), out FuseEntry e));
        return e.NodeId;
    }

    private string? HostGet(string file, string name)
    {
        byte[] buf = new byte[256];
        nint n = getxattr(P(file), name, buf, (nuint)buf.Length);
        return n < 0 ? null : Encoding.UTF8.GetString(buf, 0, (int)n);
    }

    private void HostSet(string file, string name, string value) =>
        Assert.Equal(0, (int)setxattr(P(file), name, N(value), (nuint)N(value).Length, 0));

    private static int Get(PassthroughFileSystem fs, ulong node, string name, out string value)
    {
        byte[] buf = new byte[256];
        int rc = fs.GetXattr(Ctx, node, N(name), buf, out int n);
        value = rc == 0 ? Encoding.UTF8.GetString(buf, 0, n) : "";
        return rc;
    }

    private static int Set(PassthroughFileSystem fs, ulong node, string name, string value) => fs.SetXattr(Ctx, node, N(name), N(value), 0, 0);

    private static string[] List(PassthroughFileSystem fs, ulong node)
    {
        Assert.Equal(0, fs.ListXattr(Ctx, node, Span<byte>.Empty, out int size));
        byte[] buf = new byte[Math.Max(size, 1)];
        Assert.Equal(0, fs.ListXattr(Ctx, node, buf, out int n));
        Assert.True(n <= size); // the probe is an upper bound of what is then returned
        return Encoding.UTF8.GetString(buf, 0, n).Split('\0', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal).ToArray();
    }

    [Fact]
    public void Example1_every_guest_name_lands_prefixed_and_host_names_stay_hidden()
    {
        File.WriteAllText(P("f"), "");
        HostSet("f", "user.host", "h"); // set by the host, unprefixed: hidden by :bad:all:::
        PassthroughFileSystem fs = Fs(":prefix:all::user.virtiofs.::bad:all:::");
        ulong f = Lookup(fs, "f");

        Assert.Equal(0, Set(fs, f, "user.mine", "v1"));
        Assert.Equal("v1", HostGet("f", "user.virtiofs.user.mine"));
        Assert.Null(HostGet("f", "user.mine"));
        // A guest root's trusted.* lands in the host's user namespace: it cannot touch the host's trusted.* at all.
        Assert.Equal(0, Set(fs, f, "trusted.overlay.opaque", "y"));
        Assert.Equal("y", HostGet("f", "user.virtiofs.trusted.overlay.opaque"));
        Assert.Null(HostGet("f", "trusted.overlay.opaque"));

        Assert.Equal(0, Get(fs, f, "user.mine", out string v));
        Assert.Equal("v1", v);
        Assert.Equal(["trusted.overlay.opaque", "user.mine"], List(fs, f));
        Assert.Equal(Errno.ENODATA, Get(fs, f, "user.host", out _)); // maps to user.virtiofs.user.host: absent

        Assert.Equal(0, fs.RemoveXattr(Ctx, f, N("user.mine")));
        Assert.Null(HostGet("f", "user.virtiofs.user.mine"));
        Assert.Equal("h", HostGet("f", "user.host"));
    }

    [Fact]
    public void Example3_style_map_hides_security_and_trusted_from_the_guest()
    {
        File.WriteAllText(P("f"), "");
        HostSet("f", "security.vfstest", "host-label");
        HostSet("f", "trusted.vfstest", "host-secret");
        HostSet("f", "user.visible", "u");
        PassthroughFileSystem fs = Fs("""
            /bad/all/security./security./
            /bad/all/trusted./trusted./
            /ok/all///
            """);
        ulong f = Lookup(fs, "f");

        // Cannot list them...
        Assert.Equal(["user.visible"], List(fs, f));
        // ...read them (as if absent, virtiofsd's getxattr turns EPERM into ENODATA)...
        Assert.Equal(Errno.ENODATA, Get(fs, f, "security.vfstest", out _));
        Assert.Equal(Errno.ENODATA, Get(fs, f, "trusted.vfstest", out _));
        // ...set or remove them.
        Assert.Equal(Errno.EPERM, Set(fs, f, "security.capability", "x"));
        Assert.Equal(Errno.EPERM, Set(fs, f, "trusted.vfstest", "guest"));
        Assert.Equal(Errno.EPERM, fs.RemoveXattr(Ctx, f, N("security.vfstest")));
        Assert.Equal("host-label", HostGet("f", "security.vfstest"));
        Assert.Equal("host-secret", HostGet("f", "trusted.vfstest"));
        Assert.Null(HostGet("f", "security.capability"));

        Assert.Equal(0, Get(fs, f, "user.visible", out string v));
        Assert.Equal("u", v);
    }

    [Fact]
    public void Unsupported_rules_answer_enotsup()
    {
        File.WriteAllText(P("f"), "");
        PassthroughFileSystem fs = Fs(":unsupported:all:trusted.:trusted.: :ok:all:::");
        ulong f = Lookup(fs, "f");
        Assert.Equal(Errno.EOPNOTSUPP, Set(fs, f, "trusted.a", "x"));
        Assert.Equal(Errno.EOPNOTSUPP, Get(fs, f, "trusted.a", out _));
        Assert.Equal(Errno.EOPNOTSUPP, fs.RemoveXattr(Ctx, f, N("trusted.a")));
    }

    [Fact]
    public unsafe void A_renamed_file_capability_is_dropped_on_write_and_truncate_like_the_real_one()
    {
        File.WriteAllText(P("f"), "data");
        PassthroughFileSystem fs = Fs(":map::user.virtiofs.:");
        ulong f = Lookup(fs, "f");
        Assert.Equal(0, Set(fs, f, "security.capability", "caps"));
        Assert.Equal("caps", HostGet("f", "user.virtiofs.security.capability"));
        Assert.Equal(0, fs.Open(Ctx, f, (uint)O_WRONLY, 0, out FuseOpenResult h));
        byte[] data = N("x");
        fixed (byte* p = data)
        {
            IoSegment[] src = [new IoSegment(p, 1)];
            Assert.Equal(0, fs.Write(Ctx, f, h.Handle, 0, src, 0, 0, out _));
        }
        fs.Release(Ctx, f, h.Handle, 0, 0, 0);
        Assert.Null(HostGet("f", "user.virtiofs.security.capability"));

        Assert.Equal(0, Set(fs, f, "security.capability", "caps"));
        Assert.Equal(0, fs.SetAttr(Ctx, f, new FuseSetattrIn { valid = FuseConstants.FATTR_SIZE, size = 0 }, out _, out _));
        Assert.Null(HostGet("f", "user.virtiofs.security.capability"));
    }

    // ---- POSIX ACLs ---------------------------------------------------------------------------------------------

    /// <summary>linux/posix_acl_xattr.h: version 2, then {u16 tag, u16 perm, u32 id} per entry.</summary>
    private static byte[] Acl(params (ushort Tag, ushort Perm)[] entries)
    {
        byte[] b = new byte[4 + entries.Length * 8];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 2);
        for (int i = 0; i < entries.Length; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(4 + i * 8), entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(6 + i * 8), entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8 + i * 8), uint.MaxValue);
        }
        return b;
    }

    private const ushort UserObj = 0x01, GroupObj = 0x04, Other = 0x20;

    [Fact]
    public void Acl_names_are_refused_and_hidden_without_posix_acl()
    {
        Directory.CreateDirectory(P("d"));
        byte[] acl = Acl((UserObj, 7), (GroupObj, 5), (Other, 0));
        Assert.Equal(0, (int)setxattr(P("d"), "system.posix_acl_default", acl, (nuint)acl.Length, 0));
        PassthroughFileSystem fs = Fs();
        ulong d = Lookup(fs, "d");
        Assert.Equal(Errno.EOPNOTSUPP, Get(fs, d, "system.posix_acl_default", out _));
        Assert.Equal(Errno.EOPNOTSUPP, fs.SetXattr(Ctx, d, N("system.posix_acl_access"), acl, 0, 0));
        Assert.DoesNotContain("system.posix_acl_default", List(fs, d));
    }

    [Fact]
    public void With_posix_acl_a_default_acl_replaces_the_umask_on_create()
    {
        Directory.CreateDirectory(P("acl"));
        Directory.CreateDirectory(P("plain"));
        PassthroughFileSystem fs = Fs(acl: true);
        ulong aclDir = Lookup(fs, "acl");
        ulong plainDir = Lookup(fs, "plain");
        // The guest sets the default ACL through the passthrough (u::rwx g::rwx o::r-x): it grants group-write, which
        // the umask would take away, so the modes below tell which of the two won.
        byte[] acl = Acl((UserObj, 7), (GroupObj, 7), (Other, 5));
        Assert.Equal(0, fs.SetXattr(Ctx, aclDir, N("system.posix_acl_default"), acl, 0, 0));
        Assert.Contains("system.posix_acl_default", List(fs, aclDir));

        // FUSE_DONT_MASK: mode 0666 arrives unmasked with umask 022.
        Assert.Equal(0, fs.Create(Ctx, aclDir, N("f"), 0x1B6, (uint)O_RDWR, 0x12, 0, out _, out FuseOpenResult h1));
        fs.Release(Ctx, 0, h1.Handle, 0, 0, 0);
        Assert.Equal(0x1B4u, Lstat(P("acl/f")).stx_mode & 0xFFFu); // 0664: the ACL, not the umask
        Assert.Equal(0, fs.Create(Ctx, plainDir, N("f"), 0x1B6, (uint)O_RDWR, 0x12, 0, out _, out FuseOpenResult h2));
        fs.Release(Ctx, 0, h2.Handle, 0, 0, 0);
        Assert.Equal(0x1A4u, Lstat(P("plain/f")).stx_mode & 0xFFFu); // 0644: the umask

        // A subdirectory inherits the default ACL, and mkdir follows the same rule.
        Assert.Equal(0, fs.MkDir(Ctx, aclDir, N("sub"), 0x1FF, 0x3F, out FuseEntry sub));
        Assert.Equal(0x1FDu, Lstat(P("acl/sub")).stx_mode & 0xFFFu); // 0775 from the ACL despite umask 077
        Assert.Equal(0, Get(fs, sub.NodeId, "system.posix_acl_default", out _));
        Assert.Equal(0, fs.MkDir(Ctx, plainDir, N("sub"), 0x1FF, 0x3F, out _));
        Assert.Equal(0x1C0u, Lstat(P("plain/sub")).stx_mode & 0xFFFu); // 0700
    }

    [Fact]
    public void Setting_an_access_acl_with_kill_sgid_clears_sgid()
    {
        File.WriteAllText(P("f"), "");
        chmod(P("f"), 0x400 | 0x1FD); // 02775
        PassthroughFileSystem fs = Fs(acl: true);
        ulong f = Lookup(fs, "f");
        byte[] acl = Acl((UserObj, 7), (GroupObj, 7), (Other, 5));
        Assert.Equal(0, fs.SetXattr(Ctx, f, N("system.posix_acl_access"), acl, 0, FuseConstants.FUSE_SETXATTR_ACL_KILL_SGID));
        Assert.Equal(0x1FDu, Lstat(P("f")).stx_mode & 0xFFFu);
    }

    [Fact]
    public void Posix_acl_refuses_a_session_without_dont_mask()
    {
        var fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _tmp.FullName, Xattr = true, PosixAcl = true }, NullLogger.Instance);
        _filesystems.Add(fs);
        Assert.Equal(Errno.EPROTO, fs.Init(FuseInitFlags.PosixAcl | FuseInitFlags.SetxattrExt));
    }

    // ---- security labels ----------------------------------------------------------------------------------------

    private static FuseContext Labelled(string name, string value) =>
        new(0, 0, 1, 1) { SecurityContext = new FuseSecurityContext(N(name), N(value)) };

    [Fact]
    public void The_security_context_is_set_on_every_kind_of_new_inode()
    {
        PassthroughFileSystem fs = Fs(label: true);
        FuseContext ctx = Labelled("security.vfstest", "system_u:object_r:test_t:s0");
        Assert.Equal(0, fs.MkDir(ctx, Root, N("d"), 0x1ED, 0, out _));
        Assert.Equal("system_u:object_r:test_t:s0", HostGet("d", "security.vfstest"));
        Assert.Equal(0, fs.Create(ctx, Root, N("f"), 0x1A4, (uint)O_RDWR, 0, 0, out _, out FuseOpenResult h));
        fs.Release(ctx, 0, h.Handle, 0, 0, 0);
        Assert.Equal("system_u:object_r:test_t:s0", HostGet("f", "security.vfstest"));
        Assert.Equal(0, fs.MkNod(ctx, Root, N("fifo"), 0x1000 | 0x1A4, 0, 0, out _));
        Assert.Equal("system_u:object_r:test_t:s0", HostGet("fifo", "security.vfstest"));
        Assert.Equal(0, fs.Symlink(ctx, N("target"), Root, N("l"), out _));
        Assert.Equal(0, fs.Lookup(Ctx, Root, N("l"), out _));

        // No context sent: nothing set.
        Assert.Equal(0, fs.MkDir(Ctx, Root, N("plain"), 0x1ED, 0, out _));
        Assert.Null(HostGet("plain", "security.vfstest"));
    }

    [Fact]
    public void The_security_context_name_goes_through_the_map_and_a_refused_one_undoes_the_create()
    {
        PassthroughFileSystem mapped = Fs(":map::user.virtiofs.:", label: true);
        Assert.Equal(0, mapped.MkDir(Labelled("security.selinux", "lbl"), Root, N("d"), 0x1ED, 0, out _));
        Assert.Equal("lbl", HostGet("d", "user.virtiofs.security.selinux"));
        Assert.Null(HostGet("d", "security.selinux"));

        PassthroughFileSystem hiding = Fs("/bad/all/security./security./ /ok/all///", label: true);
        FuseContext ctx = Labelled("security.selinux", "lbl");
        Assert.Equal(Errno.EPERM, hiding.MkDir(ctx, Root, N("d2"), 0x1ED, 0, out _));
        Assert.False(Directory.Exists(P("d2")));
        Assert.Equal(Errno.EPERM, hiding.Create(ctx, Root, N("f2"), 0x1A4, (uint)O_RDWR, 0, 0, out _, out _));
        Assert.False(File.Exists(P("f2")));
    }

    [Fact]
    public void Options_that_need_xattr_without_it_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new PassthroughFileSystem(
            new PassthroughOptions { SharedDir = _tmp.FullName, XattrMap = XattrMap.Parse(":ok:all:::") }, NullLogger.Instance));
    }
}
