using System.Runtime.InteropServices;
using System.Text;
using static VirtioFs.Fuse.Tests.Harness;

namespace VirtioFs.Fuse.Tests;

/// <summary>
/// INIT of FUSE_HANDLE_KILLPRIV_V2, FUSE_POSIX_ACL and FUSE_SECURITY_CTX, and the security context a kernel sends with a
/// create (Linux include/uapi/linux/fuse.h: struct fuse_secctx_header, fuse_secctx, fuse_ext_header; fs/fuse/dir.c
/// get_security_context / get_create_ext).
/// </summary>
public class SecurityFlagsTests
{
    private sealed class RecordingFs : IFileSystem
    {
        public FuseInitFlags Negotiated;
        public FuseSecurityContext? LastContext;
        public string? LastName;
        public int Creates;

        public int Init(FuseInitFlags negotiated)
        {
            Negotiated = negotiated;
            return 0;
        }

        public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry)
        {
            Creates++;
            LastContext = ctx.SecurityContext;
            LastName = Encoding.UTF8.GetString(name);
            entry = new FuseEntry { NodeId = 9 };
            return 0;
        }

        public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
        {
            Creates++;
            LastContext = ctx.SecurityContext;
            LastName = Encoding.UTF8.GetString(name);
            entry = new FuseEntry { NodeId = 10 };
            return 0;
        }
    }

    private const uint AllLow = 0xFFFF_FFFF;

    private static FuseInitFlags Got(Harness h)
    {
        var o = h.ReplyBody<FuseInitOut>();
        return (FuseInitFlags)(o.flags | ((ulong)o.flags2 << 32));
    }

    [Fact]
    public void Killpriv_v2_is_negotiated_only_when_asked()
    {
        var fs = new RecordingFs();
        using (var h = new Harness(fs, new FuseServerOptions { HandleKillPrivV2 = true }))
        {
            h.Init(flags: AllLow);
            Assert.True((Got(h) & FuseInitFlags.HandleKillprivV2) != 0);
            Assert.True((fs.Negotiated & FuseInitFlags.HandleKillprivV2) != 0);
        }
        using (var h = new Harness(new RecordingFs(), new FuseServerOptions()))
        {
            h.Init(flags: AllLow);
            Assert.Equal(FuseInitFlags.None, Got(h) & FuseInitFlags.HandleKillprivV2);
        }
    }

    [Fact]
    public void Posix_acl_brings_dont_mask_and_setxattr_ext_or_refuses_the_session()
    {
        var fs = new RecordingFs();
        using (var h = new Harness(fs, new FuseServerOptions { PosixAcl = true }))
        {
            h.Init(flags: AllLow);
            const FuseInitFlags acl = FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.SetxattrExt;
            Assert.Equal(acl, Got(h) & acl);
            Assert.Equal(acl, fs.Negotiated & acl);
        }
        using (var h = new Harness(new RecordingFs(), new FuseServerOptions { PosixAcl = true }))
        {
            // virtiofsd init(): without DONT_MASK the guest would apply its umask even where a default ACL must win.
            h.Init(flags: AllLow & ~(uint)FuseInitFlags.DontMask);
            Assert.Equal(-Errno.EPROTO, h.ReplyHeader.error);
            Assert.False(h.Server.IsInitialized);
        }
        using (var h = new Harness(new RecordingFs(), new FuseServerOptions()))
        {
            h.Init(flags: AllLow);
            Assert.Equal(FuseInitFlags.None, Got(h) & (FuseInitFlags.PosixAcl | FuseInitFlags.DontMask));
        }
    }

    [Fact]
    public void Security_label_needs_the_kernel_to_offer_security_ctx()
    {
        using (var h = new Harness(new RecordingFs(), new FuseServerOptions { SecurityLabel = true }))
        {
            h.Init(flags: AllLow, flags2: 0);
            Assert.Equal(-Errno.EPROTO, h.ReplyHeader.error);
        }
        using (var h = new Harness(new RecordingFs(), new FuseServerOptions { SecurityLabel = true }))
        {
            h.Init(flags: AllLow, flags2: 1);
            Assert.Equal(0, h.ReplyHeader.error);
            Assert.True((Got(h) & FuseInitFlags.SecurityCtx) != 0);
        }
    }

    /// <summary>fuse_secctx_header {size, nr_secctx}, then per context fuse_secctx {size, padding}, name\0, value, padded to 8.</summary>
    private static byte[] SecctxBlock(params (string Name, string Value)[] contexts)
    {
        var body = new List<byte>();
        foreach (var (name, value) in contexts)
        {
            byte[] v = Encoding.UTF8.GetBytes(value);
            body.AddRange(Bytes(new FuseExtHeader { size = (uint)v.Length }));
            body.AddRange(Name(name));
            body.AddRange(v);
        }
        int total = (8 + body.Count + 7) / 8 * 8;
        var block = new byte[total];
        MemoryMarshal.Write(block, new FuseExtHeader { size = (uint)total, type = (uint)contexts.Length });
        body.CopyTo(block, 8);
        return block;
    }

    private static byte[] WithExtensions(FuseOpcode op, ulong node, byte[] args, byte[] ext)
    {
        byte[] r = Request(op, node, Concat(args, ext));
        BitConverter.TryWriteBytes(r.AsSpan(36, 2), (ushort)(ext.Length / 8)); // fuse_in_header.total_extlen
        return r;
    }

    [Fact]
    public void The_security_context_extension_reaches_the_filesystem()
    {
        var fs = new RecordingFs();
        using var h = new Harness(fs, new FuseServerOptions { SecurityLabel = true });
        h.Init(flags: AllLow, flags2: 1);
        byte[] args = Concat(Bytes(new FuseMkdirIn { mode = 0x1ED }), Name("d"));
        h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, SecctxBlock(("security.selinux", "system_u:object_r:tmp_t:s0\0"))));
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Equal("d", fs.LastName);
        Assert.NotNull(fs.LastContext);
        Assert.Equal("security.selinux", Encoding.UTF8.GetString(fs.LastContext.Name));
        Assert.Equal("system_u:object_r:tmp_t:s0\0", Encoding.UTF8.GetString(fs.LastContext.Value));

        // No context (nr_secctx 0: the guest's LSM had none): the create goes on without one.
        h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, SecctxBlock()));
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Null(fs.LastContext);

        // Before 7.38 the block followed the names inside the arguments (no total_extlen): symlink has two names.
        h.Send(Request(FuseOpcode.Symlink, 1, Concat(Name("l"), Name("target"), SecctxBlock(("security.selinux", "lbl")))));
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Equal("lbl", Encoding.UTF8.GetString(fs.LastContext!.Value));
    }

    [Fact]
    public void Malformed_security_contexts_are_einval_and_never_reach_the_filesystem()
    {
        var fs = new RecordingFs();
        using var h = new Harness(fs, new FuseServerOptions { SecurityLabel = true });
        h.Init(flags: AllLow, flags2: 1);
        byte[] args = Concat(Bytes(new FuseMkdirIn { mode = 0x1ED }), Name("d"));

        // Two contexts: the kernel sends at most one.
        h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, SecctxBlock(("security.a", "x"), ("security.b", "y"))));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);

        // A value size running past the block.
        byte[] block = SecctxBlock(("security.selinux", "abc"));
        MemoryMarshal.Write(block.AsSpan(8), new FuseExtHeader { size = 4000 });
        h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, block));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);

        // An extension header claiming more than the request holds.
        byte[] big = SecctxBlock(("security.selinux", "abc"));
        MemoryMarshal.Write(big, new FuseExtHeader { size = 4096, type = 1 });
        h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, big));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);

        // A name without its NUL.
        byte[] noNul = SecctxBlock(("security.selinux", ""));
        noNul.AsSpan(16).Fill((byte)'x');
        h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, noNul));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);

        Assert.Equal(0, fs.Creates);
    }

    [Fact]
    public void Random_extension_blocks_get_an_answer_and_never_a_bad_context()
    {
        // Fixed seed: a hostile guest's total_extlen and extension bytes, after a valid mkdir.
        var fs = new RecordingFs();
        using var h = new Harness(fs, new FuseServerOptions { SecurityLabel = true });
        h.Init(flags: AllLow, flags2: 1);
        byte[] args = Concat(Bytes(new FuseMkdirIn { mode = 0x1ED }), Name("d"));
        var rng = new Random(90210);
        for (int i = 0; i < 3000; i++)
        {
            byte[] ext = new byte[rng.Next(1, 9) * 8];
            rng.NextBytes(ext);
            if (rng.Next(2) == 0) MemoryMarshal.Write(ext, new FuseExtHeader { size = (uint)ext.Length, type = (uint)rng.Next(0, 3) });
            fs.LastContext = null;
            FuseReply r = h.Send(WithExtensions(FuseOpcode.MkDir, 1, args, ext));
            Assert.True(r.HasReply);
            int error = h.ReplyHeader.error;
            Assert.True(error is 0 or -Errno.EINVAL, $"error {error}");
            if (error == 0 && fs.LastContext is { } c)
            {
                Assert.InRange(c.Name.Length, 1, 255);
                Assert.DoesNotContain((byte)0, c.Name);
                Assert.True(c.Value.Length <= ext.Length);
            }
        }
    }

    [Fact]
    public void Without_security_ctx_negotiated_trailing_bytes_are_not_read_as_a_context()
    {
        var fs = new RecordingFs();
        using var h = new Harness(fs, new FuseServerOptions());
        h.Init(flags: AllLow, flags2: 1);
        h.Send(Request(FuseOpcode.Symlink, 1, Concat(Name("l"), Name("target"), SecctxBlock(("security.selinux", "lbl")))));
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Null(fs.LastContext);
    }
}
