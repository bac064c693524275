using System.Text;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// A Linux guest on vfsd with --xattrmap and --killpriv-v2 (issue 9, item 4). The map is built from rules of virtiofsd
/// doc/xattr-mapping.md: example 3's "bad/all" rule (there for security., here for trusted.) and example 1 (prefix every
/// name with user.virtiofs., hide the unprefixed rest):
///   :bad:all:trusted.:trusted.: :prefix:all::user.virtiofs.: :bad:all:::
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class XattrGuestTests(ITestOutputHelper output)
{
    private const string Map = ":bad:all:trusted.:trusted.: :prefix:all::user.virtiofs.: :bad:all:::";

    [Fact]
    public void Guest_xattrs_land_mapped_trusted_is_refused_and_suid_is_cleared_on_write()
    {
        using var tree = new TestTree();
        string root = tree.Root;
        File.SetUnixFileMode(root, (UnixFileMode)Convert.ToInt32("777", 8));
        File.WriteAllText(Path.Combine(root, "f"), "data");
        File.SetUnixFileMode(Path.Combine(root, "f"), (UnixFileMode)Convert.ToInt32("666", 8));
        TreeCompare.SetXattr(Path.Combine(root, "f"), "user.host", "h"u8.ToArray()); // the host's own: hidden from the guest
        TreeCompare.SetXattr(Path.Combine(root, "f"), "trusted.host", "t"u8.ToArray());
        File.WriteAllText(Path.Combine(root, "prog"), "#!/bin/sh\n");
        File.WriteAllText(Path.Combine(root, "lockfile"), "x\n");
        Chmod(Path.Combine(root, "prog"), "6777");     // suid + sgid + group-exec
        Chmod(Path.Combine(root, "lockfile"), "2666"); // sgid without group-exec (mandatory-locking marker)
        using var vfsd = Vfsd.Start("--shared-dir", root, "--cache", "auto", "--tag", "vfs", "--xattrmap", Map, "--killpriv-v2");

        const string script = $$"""
            cd /mnt/vfs
            xattrset f user.guest from-the-guest
            xattrset f trusted.guest should-not-land
            xattrset -g f trusted.host
            xattrset -g f user.host
            xattrs /mnt/vfs
            {{Guest.AddUser1000}}
            su u1000 -c 'echo more >> prog; echo more >> lockfile'
            sync
            echo "@@DONE ok"
            """;
        var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output).AssertDone();
        // The guest's user.guest is stored on the host under the mapped name, and nowhere else.
        Assert.Equal(["user.guest 0"], result.Lines("SETX").Where(l => l.StartsWith("user.", StringComparison.Ordinal)));
        string host = TreeCompare.Xattrs(Path.Combine(root, "f"));
        Assert.Contains($"user.virtiofs.user.guest={Hex("from-the-guest")}", host, StringComparison.Ordinal);
        Assert.DoesNotContain("user.guest=", host.Replace("user.virtiofs.user.guest=", "", StringComparison.Ordinal), StringComparison.Ordinal);
        // trusted.* from the guest is refused with EPERM (1) and nothing reaches the host...
        Assert.Equal(["trusted.guest 1"], result.Lines("SETX").Where(l => l.StartsWith("trusted.", StringComparison.Ordinal)));
        Assert.DoesNotContain("trusted.guest", host, StringComparison.Ordinal);
        Assert.DoesNotContain("should-not-land", host, StringComparison.Ordinal);
        // ...the host's trusted.* and unprefixed user.* cannot be read (ENODATA, 61) nor listed.
        Assert.Equal(["trusted.host 61", "user.host 61"], result.Lines("GETX"));
        Assert.Equal([$"f user.guest={Hex("from-the-guest")}"], result.Lines("X"));

        // FUSE_HANDLE_KILLPRIV_V2 was negotiated, and a write by a non-owner cleared suid and executable sgid; sgid
        // without group-exec stays, as the kernel keeps it.
        Assert.Contains("HandleKillprivV2", vfsd.Process.Output, StringComparison.Ordinal);
        Assert.Equal(Convert.ToInt32("777", 8), (int)File.GetUnixFileMode(Path.Combine(root, "prog")) & 0xFFF);
        Assert.Equal(Convert.ToInt32("2666", 8), Mode(Path.Combine(root, "lockfile")));
        Assert.EndsWith("more\n", File.ReadAllText(Path.Combine(root, "prog")), StringComparison.Ordinal);
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void Guest_on_posix_acl_and_security_label_mounts_and_default_acls_beat_its_umask()
    {
        // A 6.1 guest offers FUSE_POSIX_ACL, DONT_MASK, SETXATTR_EXT and SECURITY_CTX; it appends a security context
        // header (nr_secctx 0 without SELinux) to every create in the pre-7.38 layout, which must parse as "none".
        using var tree = new TestTree();
        string root = tree.Root;
        Directory.CreateDirectory(Path.Combine(root, "acl"));
        Directory.CreateDirectory(Path.Combine(root, "plain"));
        // u::rwx g::rwx o::r-x: grants group-write, which the guest's umask 022 would take away.
        byte[] acl = Convert.FromHexString("02000000" + "01000700FFFFFFFF" + "04000700FFFFFFFF" + "20000500FFFFFFFF");
        TreeCompare.SetXattr(Path.Combine(root, "acl"), "system.posix_acl_default", acl);
        using var vfsd = Vfsd.Start("--shared-dir", root, "--cache", "auto", "--tag", "vfs", "--posix-acl", "--security-label");

        const string script = """
            cd /mnt/vfs
            umask 022
            : > acl/f && : > plain/f && mkdir acl/d plain/d && ln -s f plain/l && mkfifo plain/p
            sync
            echo "@@DONE ok"
            """;
        var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output).AssertDone();
        Assert.Contains("PosixAcl", vfsd.Process.Output, StringComparison.Ordinal);
        Assert.Contains("SecurityCtx", vfsd.Process.Output, StringComparison.Ordinal);
        Assert.Equal(Convert.ToInt32("664", 8), Mode(Path.Combine(root, "acl/f")));
        Assert.Equal(Convert.ToInt32("644", 8), Mode(Path.Combine(root, "plain/f")));
        Assert.Equal(Convert.ToInt32("775", 8), Mode(Path.Combine(root, "acl/d")));
        Assert.Equal(Convert.ToInt32("755", 8), Mode(Path.Combine(root, "plain/d")));
        Assert.True(HostStat.IsFifo(Path.Combine(root, "plain/p")));
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
    }

    private static string Hex(string s) => Convert.ToHexString(Encoding.UTF8.GetBytes(s));

    private static int Mode(string path) => VirtioFs.Tests.Shared.HostSyscalls.Lstat(path).stx_mode & 0xFFF;

    private static void Chmod(string path, string octal)
    {
        // File.SetUnixFileMode keeps only the permission bits it knows; chmod(1) sets suid/sgid too.
        using var p = ProcessRunner.Start("chmod", [octal, path]);
        Assert.Equal(0, p.WaitForExit(TimeSpan.FromSeconds(10)));
    }
}
