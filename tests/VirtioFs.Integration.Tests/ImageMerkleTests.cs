using System.Buffers.Binary;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// The metadata half of the merkle tree end to end with the published executables: an image built by
/// <c>out/vfs-image create</c>, one inode's setuid bit added in the bootstrap bytes (every digest left as built),
/// then <c>out/vfs-image check</c> names the inode and <c>out/vfsd mount --root-digest</c> answers EIO for it
/// through the kernel while the rest of the image reads.
/// </summary>
public sealed class ImageMerkleTests
{
    // The victim's owner: as i_uid, i_gid these 8 bytes locate its inode record in the bootstrap.
    private const uint VictimUid = 0x1357_2468, VictimGid = 0x2468_1357;

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void An_added_setuid_bit_fails_check_and_answers_EIO_under_vfsd_mount_root_digest(int fsVersion)
    {
        using var ws = new ImageWorkspace();
        Directory.CreateDirectory(ws.S("bin"));
        File.WriteAllText(ws.S("bin/tool"), "#!/bin/sh\necho tool\n");
        File.WriteAllText(ws.S("bin/other"), "other\n");
        File.SetUnixFileMode(ws.S("bin/tool"), (UnixFileMode)Convert.ToInt32("755", 8));
        using (var chown = ProcessRunner.Start("chown", [$"{VictimUid}:{VictimGid}", ws.S("bin/tool")]))
            Assert.Equal(0, chown.WaitForExit(TimeSpan.FromSeconds(30)));
        ws.Build("--fs-version", fsVersion.ToString(System.Globalization.CultureInfo.InvariantCulture));

        // RAFS v6 extended inode: i_mode (u16) at +4, i_uid at +24, i_gid at +28 (erofs_fs.h erofs_inode_extended);
        // RAFS v5 inode: i_uid at +48, i_gid at +52, i_mode (u32) at +60 (nydus layout/v5.rs RafsV5Inode).
        var boot = File.ReadAllBytes(ws.Bootstrap);
        var owner = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(owner, VictimUid);
        BinaryPrimitives.WriteUInt32LittleEndian(owner.AsSpan(4), VictimGid);
        // Twice: in the inode record, then in the merkle row's copy of the bound metadata (the table follows the records).
        int at = boot.AsSpan().IndexOf(owner);
        int copy = boot.AsSpan(at + 1).IndexOf(owner);
        Assert.True(at >= 0 && copy >= 0 && boot.AsSpan(at + 1 + copy + 1).IndexOf(owner) < 0, "the victim's owner occurs twice in the bootstrap");
        int modeAt = fsVersion == 5 ? at - 48 + 60 : at - 24 + 4;
        Assert.Equal(0x8000 | 0x1ED, BinaryPrimitives.ReadUInt16LittleEndian(boot.AsSpan(modeAt)));
        boot[modeAt + 1] |= 0x08; // S_ISUID
        File.WriteAllBytes(ws.Bootstrap, boot);

        using (var check = ProcessRunner.Start(Repo.VfsImage, ["check", ws.Bootstrap, "--blob-dir", ws.BlobDir]))
        {
            Assert.Equal(1, check.WaitForExit(TimeSpan.FromMinutes(2)));
            Assert.Contains("'/bin/tool' (ino ", check.Output, StringComparison.Ordinal);
            Assert.Contains("mode (bound 0100755, image 0104755)", check.Output, StringComparison.Ordinal);
        }

        using (var plain = ws.Mount())
        {
            // Nothing pins the root: the forged bit is what a reader sees (why --root-digest exists).
            Assert.True(File.GetUnixFileMode(plain.M("bin/tool")).HasFlag(UnixFileMode.SetUser));
        }

        using var m = ws.Mount("--root-digest", ws.RootDigest);
        Assert.Contains(m.M("bin/tool"), Directory.GetFileSystemEntries(m.M("bin")));
        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(m.M("bin/tool")));
        Assert.Contains("Input/output error", e.Message, StringComparison.Ordinal);
        Assert.Equal("other\n", File.ReadAllText(m.M("bin/other")));
        var (_, log) = m.Stop();
        Assert.Contains("does not match its digest", log, StringComparison.Ordinal);
    }
}
