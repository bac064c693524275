using System.Buffers.Binary;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

/// <summary>
/// --killpriv-v2, --posix-acl and --xattrmap through a real /dev/fuse mount: the host kernel negotiates the flags and
/// decides what to send (fs/fuse/file.c FUSE_WRITE_KILL_SUIDGID, fs/fuse/dir.c FATTR_KILL_SUIDGID and the unmasked
/// mode plus umask with FUSE_DONT_MASK). Other users act through setpriv(1) in separate processes.
/// </summary>
public class KernelNegotiationMountTests
{
    private static string AsUser1000(string command) =>
        $"setpriv --reuid 1000 --regid 1000 --clear-groups sh -c '{command}'";

    private static uint Mode(string path) => Lstat(path).stx_mode & 0xFFFu;

    private static void OpenUp(MountFixture m)
    {
        // Temp directories are 0700: let uid 1000 reach the mount point and write into the shared tree.
        Assert.Equal(0, chmod(m.Root.FullName, 0x1ED));
        Assert.Equal(0, chmod(m.Source, 0x1FF));
    }

    [Fact]
    public void Killpriv_v2_clears_suid_on_a_write_and_truncate_by_another_user()
    {
        Assert.True(File.Exists("/usr/bin/setpriv"), "this test needs setpriv(1) (util-linux) to act as uid 1000");
        using var m = new MountFixture(cache: CachePolicy.Never, serverOptions: new FuseServerOptions { HandleKillPrivV2 = true });
        OpenUp(m);
        foreach (string name in new[] { "prog", "trunc", "lock" })
        {
            File.WriteAllText(m.Src(name), "data\n");
        }
        chmod(m.Src("prog"), 0xDFF);  // 06777: suid, sgid, group-exec
        chmod(m.Src("trunc"), 0xDFF);
        chmod(m.Src("lock"), 0x5B6);  // 02666: sgid without group-exec

        var (code, output) = Shell.Run(AsUser1000(
            $"echo more >> {m.Mnt("prog")} && truncate -s 1 {m.Mnt("trunc")} && echo more >> {m.Mnt("lock")}"));
        Assert.True(code == 0, output);
        // Only after requests through the mount: mount(2) returns before the kernel's INIT is answered (CI saw None).
        Assert.True((m.Server.NegotiatedFlags & FuseInitFlags.HandleKillprivV2) != 0);
        Assert.Equal(0x1FFu, Mode(m.Src("prog")));
        Assert.Equal(0x1FFu, Mode(m.Src("trunc")));
        Assert.Equal(1L, new FileInfo(m.Src("trunc")).Length);
        Assert.Equal(0x5B6u, Mode(m.Src("lock"))); // kept, as the kernel keeps it
        Assert.Equal("data\nmore\n", File.ReadAllText(m.Src("prog")));
    }

    [Fact]
    public void Posix_acl_default_acls_replace_the_callers_umask_through_the_kernel()
    {
        using var m = new MountFixture(
            serverOptions: new FuseServerOptions { PosixAcl = true },
            passthrough: src => new PassthroughOptions { SharedDir = src, Xattr = true, PosixAcl = true, Cache = CachePolicy.Never });
        const FuseInitFlags acl = FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.SetxattrExt;
        Directory.CreateDirectory(m.Mnt("acl"));
        Directory.CreateDirectory(m.Mnt("plain"));
        // After a request through the mount: mount(2) returns before the kernel's INIT is answered (CI saw None).
        Assert.Equal(acl, m.Server.NegotiatedFlags & acl);
        // u::rwx g::rwx o::r-x as the default ACL of acl/, set through the mount (the kernel checks and forwards it). It
        // grants group-write, which umask 022 would take away: the modes below tell which of the two won.
        byte[] value = new byte[4 + 3 * 8];
        BinaryPrimitives.WriteUInt32LittleEndian(value, 2);
        (ushort Tag, ushort Perm)[] entries = [(0x01, 7), (0x04, 7), (0x20, 5)];
        for (int i = 0; i < entries.Length; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(value.AsSpan(4 + i * 8), entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(value.AsSpan(6 + i * 8), entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(value.AsSpan(8 + i * 8), uint.MaxValue);
        }
        Assert.Equal(0, (int)setxattr(m.Mnt("acl"), "system.posix_acl_default", value, (nuint)value.Length, 0));
        Assert.True(getxattr(m.Src("acl"), "system.posix_acl_default", new byte[64], 64) > 0);

        var (code, output) = Shell.Run($"umask 022 && : > {m.Mnt("acl/f")} && : > {m.Mnt("plain/f")} && mkdir {m.Mnt("acl/d")} {m.Mnt("plain/d")}");
        Assert.True(code == 0, output);
        Assert.Equal(0x1B4u, Mode(m.Src("acl/f")));   // 0664: the default ACL decides, not the umask
        Assert.Equal(0x1A4u, Mode(m.Src("plain/f"))); // 0644: umask 022 applied by us (the kernel left it to us)
        Assert.Equal(0x1FDu, Mode(m.Src("acl/d")));   // 0775
        Assert.Equal(0x1EDu, Mode(m.Src("plain/d"))); // 0755
    }

    [Fact]
    public void An_xattrmap_holds_through_the_kernel_including_listxattr_sizes()
    {
        using var m = new MountFixture(passthrough: src => new PassthroughOptions
        {
            SharedDir = src, Xattr = true, Cache = CachePolicy.Never,
            XattrMap = XattrMap.Parse(":bad:all:trusted.:trusted.: :prefix:all::user.virtiofs.: :bad:all:::"),
        });
        File.WriteAllText(m.Src("f"), "");
        Assert.Equal(0, (int)setxattr(m.Src("f"), "user.host", [1], 1, 0));
        byte[] v = "guest"u8.ToArray();
        Assert.Equal(0, (int)setxattr(m.Mnt("f"), "user.note", v, (nuint)v.Length, 0));
        Assert.True(setxattr(m.Mnt("f"), "trusted.x", v, (nuint)v.Length, 0) < 0);
        Assert.Equal(1, LastErrno); // EPERM
        Assert.True(getxattr(m.Src("f"), "user.virtiofs.user.note", new byte[16], 16) == v.Length);

        // listxattr(2) with a size probe first, as getfattr does: the kernel gets the host's (larger) size, then the
        // filtered names.
        nint size = listxattr(m.Mnt("f"), [], 0);
        Assert.True(size > 0);
        byte[] list = new byte[size];
        nint n = listxattr(m.Mnt("f"), list, (nuint)list.Length);
        Assert.Equal("user.note\0", System.Text.Encoding.UTF8.GetString(list, 0, (int)n));
    }
}
