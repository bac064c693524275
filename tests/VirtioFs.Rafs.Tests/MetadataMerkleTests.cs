using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;
using VirtioFs.Rafs.Tests.Support;
using Xunit;

namespace VirtioFs.Rafs.Tests;

/// <summary>
/// The merkle tree binds each inode's mode, uid, gid, rdev, size and xattrs (extension version 2): an inode record
/// edited in place, with every digest left as built, fails `check`, which names the path, the inode number and the
/// field. Images without the extension still open; ones with an older version are recognised as such.
/// </summary>
public sealed class MetadataMerkleTests
{
    public static TheoryData<int, string> EditsByVersion()
    {
        var d = new TheoryData<int, string>();
        foreach (int v in new[] { 6, 5 })
            foreach (var e in MetadataImage.Edits.Keys) d.Add(v, e);
        return d;
    }

    private static string? Check(string bootstrap, string? blobDir)
    {
        using var img = RafsImage.Open(bootstrap);
        return ImageChecker.Check(img, blobDir, null);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void An_untouched_image_checks_and_its_root_is_the_root_inode_digest(int fsVersion)
    {
        using var mi = new MetadataImage(fsVersion);
        Assert.Null(Check(mi.Bootstrap, mi.BlobDir));
        using var img = RafsImage.Open(mi.Bootstrap);
        Assert.Equal(MerkleExtension.Version, img.MerkleVersion);
        Assert.Equal(mi.Build.RootDigest, img.RootDigest);
        var (_, root) = mi.Find("/");
        Assert.Equal(mi.Build.RootDigest, img.GetInodeDigest(root.Ino).ToArray());
        // The row's metadata copy is what stat reports.
        var (_, chr) = mi.Find("dev/chr");
        Assert.True(img.TryGetBoundMeta(chr.Ino, out var bound));
        Assert.Equal(new BoundMeta(chr.Mode, chr.Uid, chr.Gid, chr.Rdev, chr.Size), bound);
        Assert.Equal((1UL << 8) | 3, bound.Rdev);
    }

    [Theory]
    [MemberData(nameof(EditsByVersion))]
    public void An_edited_inode_record_fails_check_naming_the_inode_and_the_field(int fsVersion, string edit)
    {
        using var mi = new MetadataImage(fsVersion);
        var (path, field) = MetadataImage.Edits[edit];
        var (_, attr) = mi.Find(path);
        var digestsBefore = TableAndHeader(mi);
        mi.Tamper(edit);
        Assert.Equal(digestsBefore, TableAndHeader(mi)); // every digest is as the builder wrote it
        var err = Check(mi.Bootstrap, mi.BlobDir);
        Assert.NotNull(err);
        Assert.Contains($"'/{path}' (ino {attr.Ino})", err, StringComparison.Ordinal);
        Assert.Contains(field, err, StringComparison.Ordinal);
        Assert.Contains("merkle digest", err, StringComparison.Ordinal);
        if (edit == "setuid") Assert.Contains("mode (bound 0100755, image 0104755)", err, StringComparison.Ordinal);
    }

    private static byte[] TableAndHeader(MetadataImage mi)
    {
        using var img = RafsImage.Open(mi.Bootstrap);
        var all = new List<byte>(img.RootDigest!);
        foreach (var (ino, a) in ImageWalker.Inodes(img))
        {
            all.AddRange(img.GetInodeDigest(a.Ino).ToArray());
            all.AddRange(img.GetContentDigest(a.Ino).ToArray());
            all.AddRange(img.GetNativeDigest(ino).ToArray());
        }
        return all.ToArray();
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void Every_bound_field_changes_the_root(int fsVersion)
    {
        var roots = new HashSet<string>();
        foreach (var change in new Action<BuildInode>[] { _ => { }, n => n.Mode |= 0x800, n => n.Uid = 7, n => n.Gid = 7, n => n.SetXattr("security.capability"u8.ToArray(), [1]) })
        {
            var src = TreeFixture.TempDir("meta-src");
            File.WriteAllText(Path.Combine(src, "f"), "data\n");
            var root = DirectorySource.Load(src);
            change(ImageBuilder.Resolve(root, "f")!);
            var outDir = TreeFixture.TempDir("meta-out");
            var r = ImageBuilder.Build(root, new BuildOptions { BlobDir = outDir, Bootstrap = Path.Combine(outDir, "b"), FsVersion = fsVersion, ChunkSize = 64 * 1024, BuildTime = 1 });
            Assert.True(roots.Add(Convert.ToHexStringLower(r.RootDigest)), "each change gives a new root");
        }
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void An_image_without_the_extension_opens_and_checks_without_a_trusted_root(int fsVersion)
    {
        using var mi = new MetadataImage(fsVersion);
        mi.DropExtension();
        using (var img = RafsImage.Open(mi.Bootstrap))
        {
            Assert.False(img.HasMerkle);
            Assert.Equal(0u, img.MerkleVersion);
            Assert.Null(img.RootDigest);
            Assert.Null(ImageChecker.Check(img, mi.BlobDir, null));
        }
        var (priv, pub) = Signing.Generate();
        _ = priv;
        using var img2 = RafsImage.Open(mi.Bootstrap);
        Assert.Contains("no merkle root", ImageChecker.Check(img2, mi.BlobDir, pub));
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void A_version_1_extension_is_recognised_as_not_binding_metadata(int fsVersion)
    {
        using var mi = new MetadataImage(fsVersion);
        mi.SetExtensionVersion(MerkleExtension.ContentOnlyVersion);
        using var img = RafsImage.Open(mi.Bootstrap);
        Assert.Equal(1u, img.MerkleVersion);
        Assert.False(img.HasMerkle);
        var (_, pub) = Signing.Generate();
        Assert.Contains("version 1", ImageChecker.Check(img, mi.BlobDir, pub));
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void Signing_signs_the_metadata_bound_root(int fsVersion)
    {
        var (priv, pub) = Signing.Generate();
        using var mi = new MetadataImage(fsVersion, priv);
        using var img = RafsImage.Open(mi.Bootstrap);
        Assert.True(Signing.Verify(pub, mi.Build.RootDigest, img.Signature!));
        Assert.Null(ImageChecker.Check(img, mi.BlobDir, pub));
    }
}
