using System.Buffers.Binary;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.Rafs.Tests;

public sealed class V5Tests
{
    private static (string Src, string Out, BuildResult R) Fresh(byte[]? key = null)
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("v5");
        return (src, outDir, RoundTripTests.Build(src, outDir, Compressor.Lz4Block, chunk: 64 * 1024, key: key, fsVersion: 5));
    }

    [Fact]
    public void V5_image_checks_and_stores_nydus_style_digests()
    {
        var (_, outDir, r) = Fresh();
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(RafsVersion.V5, img.Version);
        Assert.Null(ImageChecker.Check(img, outDir, null));
        // nydus: a directory's digest is H(children's digests in name order), no names.
        Assert.Equal(0, ImageWalker.Resolve(img, "/dir/sub", out var sub));
        Assert.Equal(0, img.GetAttr(sub, out var a));
        Assert.Equal(Merkle.Directory(Digester.Blake3, false, []), img.GetNativeDigest(sub).ToArray());
        // The trusted root is the metadata-bound tree of the merkle extension, not nydus's.
        Assert.Equal(r.RootDigest, img.RootDigest);
        Assert.Equal(r.RootDigest, img.GetInodeDigest(1).ToArray());
        Assert.NotEqual(r.RootDigest, img.GetNativeDigest(1).ToArray());
    }

    [Fact]
    public void V5_hard_links_share_the_inode_number()
    {
        var (_, _, r) = Fresh();
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, "/small.txt", out var a));
        Assert.Equal(0, ImageWalker.Resolve(img, "/dir/hard.txt", out var b));
        Assert.Equal(a, b);
        Assert.Equal(0, img.GetAttr(a, out var attr));
        Assert.Equal(2u, attr.Nlink);
    }

    [Fact]
    public void V5_signature_verifies()
    {
        var (priv, pub) = Signing.Generate();
        var (_, outDir, r) = Fresh(priv);
        Assert.Null(RoundTripTests.CheckFile(r.Bootstrap, outDir, pub));
        Assert.Contains("signature", RoundTripTests.CheckFile(r.Bootstrap, outDir, Signing.Generate().Public));
    }

    [Theory]
    [InlineData(4, new byte[] { 0x00, 0x06, 0, 0 }, "version")]
    [InlineData(56, new byte[] { 0xFF, 0xFF, 0xFF, 0x7F }, "inode table")]
    [InlineData(48, new byte[] { 0, 0, 0, 0, 0, 0, 1, 0 }, "blob table")]
    [InlineData(12, new byte[] { 0, 0x30, 0, 0 }, "chunk size")]
    [InlineData(16, new byte[] { 0, 0, 0, 0 }, "compressor")]
    public void V5_corrupted_superblock_fields_give_a_named_error(int offset, byte[] bytes, string expected)
    {
        var (_, outDir, r) = Fresh();
        var boot = File.ReadAllBytes(r.Bootstrap);
        bytes.CopyTo(boot, offset);
        File.WriteAllBytes(r.Bootstrap, boot);
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.True(err is not null && err.Contains(expected, StringComparison.Ordinal), err);
    }

    [Fact]
    public void V5_tampered_inode_digest_is_named()
    {
        var (_, outDir, r) = Fresh();
        var boot = File.ReadAllBytes(r.Bootstrap);
        long it = (long)BinaryPrimitives.ReadUInt64LittleEndian(boot.AsSpan(32));
        long rec = (long)BinaryPrimitives.ReadUInt32LittleEndian(boot.AsSpan((int)it + 4 * 2)) << 3;   // inode index 3
        boot[rec] ^= 1;
        File.WriteAllBytes(r.Bootstrap, boot);
        Assert.Contains("digest", RoundTripTests.CheckFile(r.Bootstrap, outDir));
    }

    [Fact]
    public void V5_random_bytes_never_crash_the_reader()
    {
        var (_, outDir, r) = Fresh();
        var good = File.ReadAllBytes(r.Bootstrap);
        var rnd = new Random(5);
        for (int round = 0; round < 300; round++)
        {
            var boot = (byte[])good.Clone();
            for (int i = rnd.Next(1, 16); i > 0; i--) boot[rnd.Next(0, boot.Length)] = (byte)rnd.Next(256);
            File.WriteAllBytes(r.Bootstrap, boot);
            _ = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        }
    }

    [Fact]
    public void V5_readdir_resumes_from_offsets()
    {
        var (_, _, r) = Fresh();
        using var img = RafsImage.Open(r.Bootstrap);
        var all = new List<string>();
        Assert.Equal(0, img.ReadDir(img.RootIno, 0, (n, _, _, _) => { all.Add(System.Text.Encoding.Latin1.GetString(n)); return true; }));
        var paged = new List<string>();
        ulong off = 0;
        while (true)
        {
            ulong next = 0; int got = 0;
            img.ReadDir(img.RootIno, off, (n, _, _, no) => { paged.Add(System.Text.Encoding.Latin1.GetString(n)); next = no; return ++got < 3; });
            if (got == 0) break;
            off = next;
        }
        Assert.Equal(all, paged);
        Assert.Equal(".", all[0]);
        Assert.Equal("..", all[1]);
    }
}
