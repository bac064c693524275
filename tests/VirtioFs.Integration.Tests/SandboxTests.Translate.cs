using System.Runtime.InteropServices;
using VirtioFs.Fuse;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// virtiofsd's --translate-uid/--translate-gid (src/main.rs; src/soft_idmap): the daemon itself translates the owner
/// every attribute reply shows the guest, and the ids the guest creates and chowns with. Raw FUSE requests to
/// out/vfsd in its default sandbox carry the caller's uid/gid in fuse_in_header, as a guest kernel sends them.
/// </summary>
public sealed partial class SandboxTests
{
    private const uint FattrUid = 1 << 1;

    [Fact]
    public void Translated_ids_are_the_ones_the_guest_sees_and_creates_with()
    {
        string share = Directory.CreateTempSubdirectory("vfs-translate-").FullName;
        try
        {
            File.SetUnixFileMode(share, (UnixFileMode)Convert.ToInt32("777", 8)); // the guest's untranslated uid 5 creates too
            File.WriteAllText(Path.Combine(share, "owned-by-root"), "x");
            File.WriteAllText(Path.Combine(share, "owned-by-4242"), "x");
            chown(Path.Combine(share, "owned-by-4242"), 4242, 4242);
            using var vfsd = Vfsd.Start("--shared-dir", share, "--cache", "never",
                "--translate-uid", "map:1000:0:1", "--translate-gid", "map:1000:0:1",
                "--translate-uid", "host:4242:777:1", "--translate-uid", "forbid-guest:3000:10");
            using (var guest = RawFuseClient.Connect(vfsd.SocketPath))
            {
                // Host to guest: root's file is the guest's 1000 (map), 4242 is 777 (host); gid 4242 is untranslated.
                Assert.Equal(0, guest.Lookup(FuseConstants.RootId, "owned-by-root", out FuseEntryOut rootFile));
                Assert.Equal((1000u, 1000u), (rootFile.attr.uid, rootFile.attr.gid));
                Assert.Equal(0, guest.Lookup(FuseConstants.RootId, "owned-by-4242", out FuseEntryOut other));
                Assert.Equal((777u, 4242u), (other.attr.uid, other.attr.gid));

                // Guest to host: the guest's 1000 creates as host root, and is shown 1000 again.
                Assert.Equal(0, guest.MkDir(FuseConstants.RootId, "by-1000", 1000, 1000, out FuseEntryOut made));
                Assert.Equal((1000u, 1000u), (made.attr.uid, made.attr.gid));
                // An id outside every range passes unchanged.
                Assert.Equal(0, guest.MkDir(FuseConstants.RootId, "by-5", 5, 5, out _));
                // forbid-guest: EPERM for creating as, and for chowning to, a forbidden uid.
                Assert.Equal(Errno.EPERM, guest.MkDir(FuseConstants.RootId, "by-3005", 3005, 5, out _));
                var chownTo3001 = guest.Send(FuseOpcode.SetAttr, rootFile.nodeid, RawFuseClient.Bytes(new FuseSetattrIn { valid = FattrUid, uid = 3001 }));
                Assert.Equal(-Errno.EPERM, chownTo3001.Error);
                // chown to the guest's 1000 is chown to host root.
                var chownTo1000 = guest.Send(FuseOpcode.SetAttr, other.nodeid, RawFuseClient.Bytes(new FuseSetattrIn { valid = FattrUid, uid = 1000 }));
                Assert.Equal(0, chownTo1000.Error);
                Assert.Equal(1000u, MemoryMarshal.Read<FuseAttrOut>(chownTo1000.Body).attr.uid);
            }
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
            Assert.Equal((0, 0), Owner(Path.Combine(share, "by-1000")));
            Assert.Equal((5, 5), Owner(Path.Combine(share, "by-5")));
            Assert.False(Directory.Exists(Path.Combine(share, "by-3005")));
            Assert.Equal((0, 4242), Owner(Path.Combine(share, "owned-by-4242")));
        }
        finally
        {
            Directory.Delete(share, recursive: true);
        }
    }
}
