using System.Text;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.Rafs.Tests;

/// <summary>Reads metadata written by an independent EROFS writer (mkfs.erofs): compact inodes, inline and plain
/// directories, inline symlinks and xattrs, as nydus also emits them.</summary>
public sealed class ErofsInteropTests
{
    [Fact]
    public void Reader_agrees_with_mkfs_erofs_metadata()
    {
        var src = TreeFixture.CreateFullTree();
        // mkfs.erofs 1.5 fails (ENOENT) on a 255-byte name; our own builder and fsck.erofs handle it elsewhere.
        File.Delete(Path.Combine(src, new string('L', 255)));
        var wide = Path.Combine(src, "wide");
        Directory.CreateDirectory(wide);
        for (int i = 0; i < 3000; i++) File.WriteAllText(Path.Combine(wide, $"n{i:D5}-{new string('z', i % 40)}"), "");
        var img = Path.Combine(TreeFixture.TempDir("mkfs"), "img");
        // -T: one timestamp for all files lets mkfs.erofs use 32-byte compact inodes.
        var (code, output) = TreeFixture.RunTool("mkfs.erofs", "-T1600000000", "-x1", img, src);
        Assert.True(code == 0, output);
        using var image = RafsImage.Open(img, plainErofs: true);
        var expected = DirectorySource.Load(src);
        int checkedEntries = 0;
        void Walk(BuildInode dir, ulong ino, string path)
        {
            foreach (var e in dir.Children!)
            {
                Assert.Equal(0, image.Lookup(ino, e.Name, out var child));
                Assert.Equal(0, image.GetAttr(child, out var a));
                var n = e.Inode;
                string p = path + "/" + Encoding.UTF8.GetString(e.Name);
                Assert.True(n.Mode == a.Mode, $"{p}: mode");
                Assert.True(n.Uid == a.Uid && n.Gid == a.Gid, $"{p}: owner");
                Assert.Equal(1_600_000_000L, a.MtimeSec);
                if (n.IsReg) Assert.Equal(n.Size, a.Size);
                if (n.IsDevice) Assert.Equal(n.Rdev, a.Rdev);
                if (n.IsSymlink)
                {
                    Assert.Equal(0, image.ReadLink(child, out var t));
                    Assert.Equal(n.SymlinkTarget, t);
                }
                var names = new List<byte[]>();
                Assert.Equal(0, image.ListXattr(child, names));
                Assert.Equal(n.Xattrs.Select(x => Convert.ToBase64String(x.Key)).Order(), names.Select(Convert.ToBase64String).Order());
                foreach (var (k, v) in n.Xattrs)
                {
                    Assert.Equal(0, image.GetXattr(child, k, out var got));
                    Assert.Equal(v, got);
                }
                checkedEntries++;
                if (n.IsDir) Walk(n, child, p);
            }
            int listed = 0;
            Assert.Equal(0, image.ReadDir(ino, 0, (name, _, _, _) => { listed++; return true; }));
            Assert.Equal(dir.Children!.Count + 2, listed);
        }
        Walk(expected, image.RootIno, "");
        Assert.True(checkedEntries > 3000);
    }
}
