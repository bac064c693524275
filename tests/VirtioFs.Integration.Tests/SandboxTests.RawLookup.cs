using System.Runtime.InteropServices;
using VirtioFs.Fuse;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// The rename escape without a guest kernel (whose dentry cache answers ".." itself, so the guest test above may never
/// send one): raw LOOKUP ".." (and names smuggling it) to out/vfsd in its default sandbox, from the root and from a
/// directory the host has moved out of the share while the "guest" held its node id. Whatever vfsd answers, no reply
/// may lead to a name outside the share: a sentinel file lies beside the share and another beside the moved directory.
/// </summary>
public sealed partial class SandboxTests
{
    [Fact]
    public void Raw_dotdot_lookups_never_leave_the_share_even_from_a_moved_directory()
    {
        string top = Directory.CreateTempSubdirectory("vfs-dotdot-").FullName;
        try
        {
            string share = Directory.CreateDirectory(Path.Combine(top, "share")).FullName;
            string outside = Directory.CreateDirectory(Path.Combine(top, "outside")).FullName;
            Directory.CreateDirectory(Path.Combine(share, "held", "sub"));
            File.WriteAllText(Path.Combine(share, "held", "inner"), "still mine");
            string sentinel = "SENTINEL" + Guid.NewGuid().ToString("N");
            File.WriteAllText(Path.Combine(top, sentinel), "outside the share");
            File.WriteAllText(Path.Combine(outside, sentinel + "-2"), "outside the share");
            using var vfsd = Vfsd.Start("--shared-dir", share, "--cache", "never");
            int daemon = DaemonPid(vfsd, forks: true); // the default: namespace + seccomp kill
            using var guest = RawFuseClient.Connect(vfsd.SocketPath);

            Assert.Equal(0, guest.GetAttr(FuseConstants.RootId, out FuseAttr rootAttr));
            // From the root: ".." is refused or is the root itself; never the directory holding the sentinel.
            AssertStaysInside(guest, FuseConstants.RootId, rootAttr.ino, sentinel);

            Assert.Equal(0, guest.Lookup(FuseConstants.RootId, "held", out FuseEntryOut held));
            Assert.Equal(0, guest.Lookup(held.nodeid, "sub", out FuseEntryOut sub));
            Directory.Move(Path.Combine(share, "held"), Path.Combine(outside, "held"));
            Assert.False(Directory.Exists(Path.Combine(share, "held")));

            // The moved directory and its child, still held by node id: ".." from either leads nowhere outside.
            AssertStaysInside(guest, held.nodeid, rootAttr.ino, sentinel);
            AssertStaysInside(guest, sub.nodeid, rootAttr.ino, sentinel);
            Assert.Equal(Errno.ENOENT, guest.Lookup(held.nodeid, sentinel + "-2", out _));
            Assert.DoesNotContain(guest.ReadDir(FuseConstants.RootId), n => n.Contains(sentinel, StringComparison.Ordinal) || n == "outside");
            Assert.True(vfsd.Process.HasExited is false, "vfsd died:\n" + vfsd.Process.Output);
            Assert.True(File.Exists($"/proc/{daemon}/status"), "the sandboxed daemon is gone:\n" + vfsd.Process.Output);
        }
        finally
        {
            Directory.Delete(top, recursive: true);
        }
    }

    /// <summary>Every way of naming ".." from <paramref name="node"/>: each answer is an errno, or an entry that is
    /// the share's root or lies under it, and no directory reached that way lists the sentinel.</summary>
    private static void AssertStaysInside(RawFuseClient guest, ulong node, ulong rootIno, string sentinel)
    {
        foreach (string name in new[] { "..", "../..", "../" + sentinel, "../../" + sentinel, "..\0x", sentinel })
        {
            int err = guest.Lookup(node, name, out FuseEntryOut e);
            if (err != 0) continue;
            Assert.True(e.attr.ino == rootIno || name == "..", $"LOOKUP '{name}' from node {node} answered inode {e.attr.ino}");
            if ((e.attr.mode & 0xF000) == 0x4000)
            {
                Assert.DoesNotContain(guest.ReadDir(e.nodeid), n => n.Contains(sentinel, StringComparison.Ordinal) || n is "outside" or "share");
            }
        }
    }
}
