using System.Buffers.Binary;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.Rafs.Tests;

/// <summary>Dedup, chunk dictionaries, merkle verification, signatures, and hostile bootstraps and blobs.</summary>
public sealed class IntegrityTests
{
    private static (string Src, string Out, BuildResult R) Fresh(Compressor c = Compressor.Lz4Block, byte[]? key = null)
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("out");
        return (src, outDir, RoundTripTests.Build(src, outDir, c, chunk: 64 * 1024, key: key));
    }

    [Fact]
    public void Repeated_content_is_stored_once()
    {
        var src = TreeFixture.TempDir("dup");
        var block = new byte[64 * 1024];
        new Random(1).NextBytes(block);
        for (int f = 0; f < 10; f++)
        {
            using var fs = File.Create(Path.Combine(src, $"f{f}"));
            for (int i = 0; i < 4; i++) fs.Write(block);          // each file: the same chunk four times
        }
        var outDir = TreeFixture.TempDir("out");
        var r = RoundTripTests.Build(src, outDir, Compressor.None, chunk: 64 * 1024);
        Assert.Equal(40, r.Stats.Chunks);
        Assert.Equal(1, r.Stats.UniqueChunks);
        Assert.Equal(64UL * 1024, r.Blob!.CompressedSize);
        // Data, then nydus blob metadata: one 16-byte chunk information entry and the 4 KiB header.
        Assert.Equal(64 * 1024 + 16 + 4096, new FileInfo(r.Blob.Path).Length);
        Assert.Equal(40.0, r.DedupRatio);
    }

    [Fact]
    public void Chunk_dict_build_stores_only_what_changed()
    {
        var src = TreeFixture.TempDir("v1");
        var rnd = new Random(7);
        var a = new byte[1 << 20]; rnd.NextBytes(a);
        var b = new byte[1 << 20]; rnd.NextBytes(b);
        File.WriteAllBytes(Path.Combine(src, "a"), a);
        File.WriteAllBytes(Path.Combine(src, "b"), b);
        var outDir = TreeFixture.TempDir("out");
        var first = RoundTripTests.Build(src, outDir, Compressor.Zstd, chunk: 64 * 1024, name: "v1");
        Assert.Equal(32, first.Stats.UniqueChunks);

        // Change one 64 KiB chunk of b and add a new file.
        b[200_000] ^= 0xFF;
        File.WriteAllBytes(Path.Combine(src, "b"), b);
        File.WriteAllBytes(Path.Combine(src, "c"), new byte[] { 1, 2, 3 });
        var second = RoundTripTests.Build(src, outDir, Compressor.Zstd, chunk: 64 * 1024, dict: first.Bootstrap, name: "v2");
        Assert.Equal(2, second.Stats.UniqueChunks);
        Assert.Equal(31, second.Stats.DictChunks);
        using var img = RafsImage.Open(second.Bootstrap);
        Assert.Equal(2, img.Blobs.Count);
        Assert.Null(ImageChecker.Check(img, outDir, null));
        var dst = Path.Combine(TreeFixture.TempDir("unpack"), "tree");
        Unpacker.Unpack(img, outDir, dst);
        TreeFixture.AssertSameTree(src, dst);
    }

    [Fact]
    public void Signed_image_verifies_with_its_key_and_not_with_another()
    {
        var (priv, pub) = Signing.Generate();
        var (_, other) = Signing.Generate();
        var (_, outDir, r) = Fresh(key: priv);
        Assert.Null(RoundTripTests.CheckFile(r.Bootstrap, outDir, pub));
        Assert.Contains("signature", RoundTripTests.CheckFile(r.Bootstrap, outDir, other));
        var (_, outDir2, unsigned) = Fresh();
        Assert.Contains("not signed", RoundTripTests.CheckFile(unsigned.Bootstrap, outDir2, pub));
    }

    [Fact]
    public void Root_digest_changes_when_a_name_changes()
    {
        var (src, outDir, r1) = Fresh();
        File.Move(Path.Combine(src, "small.txt"), Path.Combine(src, "small2.txt"));
        var r2 = RoundTripTests.Build(src, outDir, Compressor.Lz4Block, chunk: 64 * 1024, name: "renamed");
        Assert.NotEqual(r1.RootDigest, r2.RootDigest);
    }

    [Fact]
    public void Check_names_a_corrupted_blob_chunk()
    {
        var (_, outDir, r) = Fresh(Compressor.None);
        var chunks = new List<RafsChunk>();
        using (var img = RafsImage.Open(r.Bootstrap))
        {
            Assert.Equal(0, ImageWalker.Resolve(img, "/random.bin", out var ino));
            Assert.Equal(0, img.GetChunks(ino, chunks));
        }
        var blob = File.ReadAllBytes(r.Blob!.Path);
        blob[(int)chunks[2].CompressedOffset + 10] ^= 0x55;
        File.WriteAllBytes(r.Blob.Path, blob);
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.NotNull(err);
        Assert.Contains("digest", err);
    }

    [Fact]
    public void Check_warns_about_a_blob_whose_padding_changed_naming_its_id()
    {
        // Bytes no chunk covers (alignment padding) do not change what the image serves: nydus checks chunk digests and
        // the blob metadata, not a whole-blob hash. The file no longer hashing to its id is reported, as a warning.
        var (_, outDir, r) = Fresh(Compressor.None);
        var chunks = new List<RafsChunk>();
        using (var img = RafsImage.Open(r.Bootstrap))
        {
            Assert.Equal(0, ImageWalker.Resolve(img, "/small.txt", out var ino));
            Assert.Equal(0, img.GetChunks(ino, chunks));
        }
        var blob = File.ReadAllBytes(r.Blob!.Path);
        blob[(int)(chunks[0].CompressedOffset + chunks[0].CompressedSize) + 5] ^= 0x55;   // alignment padding: no chunk covers it
        File.WriteAllBytes(r.Blob.Path, blob);
        using var image = RafsImage.Open(r.Bootstrap);
        ImageCheckResult result = ImageChecker.CheckWithWarnings(image, outDir, null);
        Assert.Null(result.Error);
        string warning = Assert.Single(result.Warnings);
        Assert.Contains(r.Blob.BlobId, warning, StringComparison.Ordinal);
        Assert.Contains("sha256", warning, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_names_a_damaged_blob_metadata_header()
    {
        var (_, outDir, r) = Fresh(Compressor.Zstd);
        var blob = File.ReadAllBytes(r.Blob!.Path);
        blob[^1] ^= 0x55;                                       // the header's trailing magic
        File.WriteAllBytes(r.Blob.Path, blob);
        Assert.Contains("metadata header", RoundTripTests.CheckFile(r.Bootstrap, outDir));
    }

    [Fact]
    public void Blob_metadata_agrees_with_the_chunk_table()
    {
        var (_, outDir, r) = Fresh(Compressor.Lz4Block);
        using var img = RafsImage.Open(r.Bootstrap);
        var b = Assert.Single(img.Blobs);
        Assert.Equal((ulong)b.ChunkCount * 16, b.CiUncompressedSize);
        Assert.Equal(BlobFeatures.Aligned, b.Features);
        Assert.True(b.CiOffset >= b.CompressedSize);
        Assert.Equal((ulong)new FileInfo(r.Blob!.Path).Length, b.CiOffset + b.CiCompressedSize + 4096);
        Assert.Null(ImageChecker.Check(img, outDir, null));
    }

    [Theory]
    [InlineData(0UL, 1u, 0UL, 1u)]
    [InlineData(0xFF_FFFF_FFFFUL, 1u << 24, 0xFFF_FFFF_F000UL, 1u << 24)]
    [InlineData(12345UL, 0x12345u, 0x7000UL, 0xABCDEu)]
    public void Chunk_information_entries_round_trip(ulong co, uint cs, ulong uo, uint us)
    {
        var e = BlobChunkInfoV1Ondisk.Encode(co, cs, uo, us);
        Assert.Equal(co, e.CompressedOffset);
        Assert.Equal(cs, e.CompressedSize);
        Assert.Equal(uo, e.UncompressedOffset);
        Assert.Equal(us, e.UncompressedSize);
    }

    [Fact]
    public void Check_names_a_truncated_blob()
    {
        var (_, outDir, r) = Fresh(Compressor.Zstd);
        using (var fs = new FileStream(r.Blob!.Path, FileMode.Open)) fs.SetLength(fs.Length / 2);
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.NotNull(err);
        Assert.True(err.Contains("past the end", StringComparison.Ordinal) || err.Contains("decompress", StringComparison.Ordinal), err);
    }

    [Fact]
    public void Check_names_a_tampered_inode_digest()
    {
        var (_, outDir, r) = Fresh();
        var boot = File.ReadAllBytes(r.Bootstrap);
        ulong table = BinaryPrimitives.ReadUInt64LittleEndian(boot.AsSpan(MerkleExtension.Offset + 8));
        boot[(int)table + MerkleRow.Size * 3] ^= 1;             // inode number 4's digest
        File.WriteAllBytes(r.Bootstrap, boot);
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.NotNull(err);
        Assert.Contains("inode digest", err);
    }

    [Fact]
    public void Check_names_a_tampered_root_digest()
    {
        var (_, outDir, r) = Fresh();
        var boot = File.ReadAllBytes(r.Bootstrap);
        boot[MerkleExtension.Offset + 24] ^= 1;
        File.WriteAllBytes(r.Bootstrap, boot);
        Assert.Contains("root digest", RoundTripTests.CheckFile(r.Bootstrap, outDir));
    }

    public static TheoryData<string, int, byte[], string> Corruptions => new()
    {
        { "magic", V6.SuperOffset, [0, 0, 0, 0], "magic" },
        { "block size", V6.SuperOffset + 12, [13], "block size" },
        { "incompat", V6.SuperOffset + 80, [0xFF, 0xFF, 0, 0], "incompat" },
        { "blob table", V6.ExtSuperOffset + 8, [0, 0, 0, 0, 0, 0, 0x10, 0], "blob table" },
        { "chunk table", V6.ExtSuperOffset + 24, [0, 0, 0, 0, 0, 0, 0x10, 0], "chunk table" },
        { "chunk size", V6.ExtSuperOffset + 20, [0x01, 0x10, 0, 0], "chunk size" },
        { "merkle table", MerkleExtension.Offset + 8, [0xF0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0], "merkle table" },
        { "root nid", V6.SuperOffset + 14, [0xFF, 0xFF], "root inode" },
        { "compressor flags", V6.ExtSuperOffset, [0xFF, 0, 0, 0], "compressor" },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Corrupted_superblock_fields_give_a_named_error(string what, int offset, byte[] bytes, string expected)
    {
        var (_, outDir, r) = Fresh();
        var boot = File.ReadAllBytes(r.Bootstrap);
        bytes.CopyTo(boot, offset);
        File.WriteAllBytes(r.Bootstrap, boot);
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.True(err is not null && err.Contains(expected, StringComparison.Ordinal), $"{what}: {err}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1000)]
    [InlineData(4096)]
    [InlineData(8192)]
    public void Truncated_bootstrap_is_rejected_or_fails_check(int keep)
    {
        var (_, outDir, r) = Fresh();
        var boot = File.ReadAllBytes(r.Bootstrap);
        File.WriteAllBytes(r.Bootstrap, boot.AsSpan(0, keep).ToArray());
        Assert.NotNull(RoundTripTests.CheckFile(r.Bootstrap, outDir));
    }

    [Fact]
    public void Directory_cycle_is_detected_not_followed()
    {
        var (_, outDir, r) = Fresh();
        ulong subNid;
        using (var img = RafsImage.Open(r.Bootstrap))
        {
            Assert.Equal(0, ImageWalker.Resolve(img, "/dir/sub", out subNid));
        }
        // Point every directory entry naming /dir/sub at the root directory instead: a cycle.
        var boot = File.ReadAllBytes(r.Bootstrap);
        ushort rootNid = BinaryPrimitives.ReadUInt16LittleEndian(boot.AsSpan(V6.SuperOffset + 14));
        int patched = 0;
        for (int i = 0; i + V6.DirentSize <= boot.Length; i += 4)
        {
            if (BinaryPrimitives.ReadUInt64LittleEndian(boot.AsSpan(i)) == subNid && boot[i + 10] == V6.FtDir)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(boot.AsSpan(i), rootNid);
                patched++;
            }
        }
        Assert.True(patched > 0);
        File.WriteAllBytes(r.Bootstrap, boot);
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.NotNull(err);
        Assert.Contains("cycle", err);
    }

    [Fact]
    public void Random_bytes_never_crash_the_reader()
    {
        var (_, outDir, r) = Fresh();
        var good = File.ReadAllBytes(r.Bootstrap);
        var rnd = new Random(99);
        for (int round = 0; round < 300; round++)
        {
            var boot = (byte[])good.Clone();
            int flips = rnd.Next(1, 16);
            for (int i = 0; i < flips; i++) boot[rnd.Next(V6.SuperOffset, boot.Length)] = (byte)rnd.Next(256);
            File.WriteAllBytes(r.Bootstrap, boot);
            // Any outcome is fine except an unhandled exception or a hang.
            var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
            _ = err;
        }
    }
}
