using System.Text;
using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Cache;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// What an untrusted image, blob or cache can do: a flipped blob byte costs one file (EIO) and nothing else; a
/// tampered cache is repaired under verify=always; a root digest or signature that does not match refuses the image;
/// a renamed entry or a changed symlink target below a trusted root fails the lookup or readlink with EIO.
/// </summary>
public sealed class IntegrityTests
{
    private static readonly FuseContext Ctx = new(0, 0, 1, 1);

    private static ImageFixture TwoFiles(Compressor compressor = Compressor.Lz4Block, byte[]? key = null)
    {
        var fx = new ImageFixture();
        var rnd = new Random(3);
        fx.File("victim.bin", ImageFixture.Random(rnd, 3 * (int)ImageFixture.ChunkSize));
        fx.File("bystander.bin", ImageFixture.Random(rnd, 3 * (int)ImageFixture.ChunkSize));
        fx.File("sub/victim-a", "first\n"u8.ToArray());
        fx.File("sub/victim-b", "second\n"u8.ToArray());
        File.CreateSymbolicLink(fx.S("sub/link"), "aaaa-target");
        fx.File("top.txt", "top\n"u8.ToArray());
        fx.BuildImage(compressor: compressor, signingKey: key);
        return fx;
    }

    private static RafsChunk FirstChunk(ImageFixture fx, string name)
    {
        using var img = RafsImage.Open(fx.Bootstrap);
        Assert.Equal(0, img.Lookup(img.RootIno, Encoding.UTF8.GetBytes(name), out ulong ino));
        var chunks = new List<RafsChunk>();
        Assert.Equal(0, img.GetChunks(ino, chunks));
        return chunks[1];
    }

    [Theory]
    [InlineData(Compressor.None)]
    [InlineData(Compressor.Lz4Block)]
    public void A_flipped_blob_byte_fails_that_file_only(Compressor compressor)
    {
        using var fx = TwoFiles(compressor);
        var c = FirstChunk(fx, "victim.bin");
        using (var blob = new FileStream(fx.BlobPath, FileMode.Open, FileAccess.ReadWrite))
        {
            blob.Position = (long)c.CompressedOffset + c.CompressedSize / 2;
            int b = blob.ReadByte();
            blob.Position--;
            blob.WriteByte((byte)(b ^ 0x40));
        }
        using var m = fx.Mount(o => o.CacheDir = fx.CacheDir);
        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(m.M("victim.bin")));
        Assert.Contains("Input/output error", e.Message, StringComparison.Ordinal);
        Assert.Equal(File.ReadAllBytes(fx.S("bystander.bin")), File.ReadAllBytes(m.M("bystander.bin")));
        Assert.Equal("first\n", File.ReadAllText(m.M("sub/victim-a")));
        // The chunks before the bad one still read.
        using var h = File.OpenHandle(m.M("victim.bin"));
        var head = new byte[4096];
        Assert.Equal(4096, RandomAccess.Read(h, head, 0));
        Assert.Equal(File.ReadAllBytes(fx.S("victim.bin")).AsSpan(0, 4096).ToArray(), head);
        Assert.True(m.Image.Cache.Metrics.DigestErrors > 0);
    }

    [Fact]
    public void A_tampered_cache_is_repaired_from_the_backend_with_verify_always()
    {
        using var fx = TwoFiles(Compressor.None);
        byte[] expected = File.ReadAllBytes(fx.S("victim.bin"));
        using (var m = fx.Mount(o => o.CacheDir = fx.CacheDir))
        {
            Assert.Equal(expected, File.ReadAllBytes(m.M("victim.bin")));
        }
        var c = FirstChunk(fx, "victim.bin");
        string data = Path.Combine(fx.CacheDir, fx.Build.Blob!.BlobId + ".blob.data");
        using (var f = new FileStream(data, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = (long)c.UncompressedOffset + 100;
            f.WriteByte(0xEE);
            f.WriteByte(0xEE);
        }
        using (var m = fx.Mount(o => { o.CacheDir = fx.CacheDir; o.Verify = VerifyMode.Always; }))
        {
            Assert.Equal(expected, File.ReadAllBytes(m.M("victim.bin")));
            Assert.True(m.Image.Cache.Metrics.CacheRepairs > 0, "the bad cached chunk was fetched again");
        }
    }

    [Fact]
    public void Wrong_root_digest_is_refused_and_the_right_one_serves()
    {
        using var fx = TwoFiles();
        var wrong = (byte[])fx.Build.RootDigest.Clone();
        wrong[0] ^= 1;
        var e = Assert.Throws<RafsMountException>(() => fx.Open(o => o.RootDigest = wrong));
        Assert.Contains("root digest", e.Message, StringComparison.Ordinal);
        using var m = fx.Mount(o => o.RootDigest = fx.Build.RootDigest);
        Assert.Equal("top\n", File.ReadAllText(m.M("top.txt")));
        Assert.Equal(File.ReadAllBytes(fx.S("victim.bin")), File.ReadAllBytes(m.M("victim.bin")));
        Assert.Equal("aaaa-target", new FileInfo(m.M("sub/link")).LinkTarget);
    }

    [Fact]
    public void Signature_must_verify_with_the_trusted_key()
    {
        var (priv, pub) = Signing.Generate();
        var (_, otherPub) = Signing.Generate();
        using var signed = TwoFiles(key: priv);
        using (var ok = signed.Open(o => o.TrustKey = pub)) Assert.NotNull(ok.FileSystem);
        var e = Assert.Throws<RafsMountException>(() => signed.Open(o => o.TrustKey = otherPub));
        Assert.Contains("signature", e.Message, StringComparison.Ordinal);
        using var unsigned = TwoFiles();
        Assert.Throws<RafsMountException>(() => unsigned.Open(o => o.TrustKey = pub));
    }

    private static void Patch(string path, string from, string to)
    {
        var bytes = File.ReadAllBytes(path);
        var f = Encoding.ASCII.GetBytes(from);
        int at = bytes.AsSpan().IndexOf(f);
        Assert.True(at >= 0, $"'{from}' is in the bootstrap");
        Assert.True(bytes.AsSpan(at + 1).IndexOf(f) < 0, $"'{from}' is in the bootstrap once");
        Encoding.ASCII.GetBytes(to).CopyTo(bytes, at);
        File.WriteAllBytes(path, bytes);
    }

    [Fact]
    public void A_renamed_entry_below_a_trusted_root_fails_lookups_in_its_directory_only()
    {
        using var fx = TwoFiles();
        Patch(fx.Bootstrap, "victim-b", "victim-c"); // still sorted, so only the merkle tree can tell
        using (var unchecked_ = fx.Open())
        {
            Assert.Equal(0, unchecked_.FileSystem.Lookup(Ctx, FuseConstants.RootId, "sub"u8, out var sub0));
            Assert.Equal(0, unchecked_.FileSystem.Lookup(Ctx, sub0.NodeId, "victim-c"u8, out _));
        }
        using var m = fx.Open(o => o.RootDigest = fx.Build.RootDigest);
        var fs = m.FileSystem;
        Assert.Equal(0, fs.Lookup(Ctx, FuseConstants.RootId, "top.txt"u8, out _));
        Assert.Equal(0, fs.Lookup(Ctx, FuseConstants.RootId, "sub"u8, out var sub));
        Assert.Equal(Errno.EIO, fs.Lookup(Ctx, sub.NodeId, "victim-a"u8, out _));
        Assert.Equal(Errno.EIO, fs.OpenDir(Ctx, sub.NodeId, 0, out _));
        Assert.Equal(0, fs.Lookup(Ctx, FuseConstants.RootId, "bystander.bin"u8, out _));
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void A_changed_symlink_target_fails_lookup_and_readlink_under_a_trusted_root(int fsVersion)
    {
        using var fx = new ImageFixture();
        fx.File("sub/file", "x"u8.ToArray());
        File.CreateSymbolicLink(fx.S("sub/link"), "aaaa-target");
        fx.BuildImage(fsVersion);
        Patch(fx.Bootstrap, "aaaa-target", "bbbb-target");
        using var m = fx.Open(o => o.RootDigest = fx.Build.RootDigest);
        var fs = m.FileSystem;
        Assert.Equal(0, fs.Lookup(Ctx, FuseConstants.RootId, "sub"u8, out var sub));
        // The target is in the bootstrap, so it is checked with the inode's other metadata, before LOOKUP answers.
        Assert.Equal(Errno.EIO, fs.Lookup(Ctx, sub.NodeId, "link"u8, out _));
        Assert.Equal(0, fs.Lookup(Ctx, sub.NodeId, "file"u8, out _));
        using var img = RafsImage.Open(fx.Bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, "/sub/link", out ulong linkIno));
        Assert.Equal(Errno.EIO, fs.ReadLink(Ctx, fs.ToNode(linkIno), new byte[4096], out _));
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void A_file_digest_edited_in_its_merkle_row_fails_open_of_that_file_only_under_a_trusted_root(int fsVersion)
    {
        using var fx = new ImageFixture();
        var rnd = new Random(4);
        fx.File("victim.bin", ImageFixture.Random(rnd, 3 * (int)ImageFixture.ChunkSize));
        fx.File("bystander.bin", ImageFixture.Random(rnd, 3 * (int)ImageFixture.ChunkSize));
        fx.BuildImage(fsVersion);
        // Merkle extension version 3: the row's file digest (bytes 96..127) is covered by the file's content digest.
        var bytes = File.ReadAllBytes(fx.Bootstrap);
        using (var img = RafsImage.Open(fx.Bootstrap))
        {
            Assert.True(img.HasFileDigests);
            Assert.Equal(0, ImageWalker.Resolve(img, "/victim.bin", out ulong h));
            Assert.Equal(0, img.GetAttr(h, out var a));
            int header = fsVersion == 5 ? Rafs.Layout.V5.SignatureHeaderOffset : Rafs.Layout.MerkleExtension.Offset;
            long table = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(header + 8));
            bytes[table + ((long)a.Ino - 1) * Rafs.Layout.MerkleRow.Size + Rafs.Layout.MerkleRow.FileDigestOffset] ^= 1;
        }
        File.WriteAllBytes(fx.Bootstrap, bytes);
        using var m = fx.Open(o => o.RootDigest = fx.Build.RootDigest);
        var fs = m.FileSystem;
        Assert.Equal(0, fs.Lookup(Ctx, FuseConstants.RootId, "victim.bin"u8, out var victim));
        Assert.Equal(Errno.EIO, fs.Open(Ctx, victim.NodeId, 0, 0, out _));
        Assert.Equal(0, fs.Lookup(Ctx, FuseConstants.RootId, "bystander.bin"u8, out var bystander));
        Assert.Equal(0, fs.Open(Ctx, bystander.NodeId, 0, 0, out _));
    }
}
