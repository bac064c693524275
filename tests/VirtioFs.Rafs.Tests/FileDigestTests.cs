using System.Buffers.Binary;
using System.Security.Cryptography;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;
using VirtioFs.Rafs.Tests.Support;
using Xunit;

namespace VirtioFs.Rafs.Tests;

/// <summary>
/// The whole-file content digest of merkle extension version 3 (src/VirtioFs.ImageTool/USAGE.md, "The merkle
/// extension"): each regular file's row holds the digest `b3sum` / `sha256sum` print for the file, covered by the
/// file's content digest, so an edited row fails `check` and changes the root digest; version 2 images still read.
/// </summary>
public sealed class FileDigestTests
{
    private const uint Chunk = 64 * 1024;

    /// <summary>Files of every shape the chunker handles: empty, one chunk, exactly one chunk, several chunks (random,
    /// all zeros, repeated chunks stored once), a hard link, plus a symlink and a directory that hold no file digest.</summary>
    private static Dictionary<string, byte[]> MakeTree(string src)
    {
        var rnd = new Random(13);
        byte[] Random(int n) { var b = new byte[n]; rnd.NextBytes(b); return b; }
        var block = Random((int)Chunk);
        var files = new Dictionary<string, byte[]>
        {
            ["empty"] = [],
            ["small"] = "hello\n"u8.ToArray(),
            ["exact"] = Random((int)Chunk),
            ["big"] = Random(3 * (int)Chunk + 12_345),
            ["zeros"] = new byte[3 * Chunk],
            ["sub/repeated"] = [.. block, .. block, .. block, .. "tail"u8],
        };
        Directory.CreateDirectory(Path.Combine(src, "sub"));
        foreach (var (name, data) in files) File.WriteAllBytes(Path.Combine(src, name), data);
        File.CreateSymbolicLink(Path.Combine(src, "sub/link"), "../big");
        HardLink(Path.Combine(src, "big"), Path.Combine(src, "sub/hardlink"));
        files["sub/hardlink"] = files["big"];
        return files;
    }

    private static void HardLink(string target, string link)
    {
        using var p = System.Diagnostics.Process.Start("ln", [target, link]);
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    private static byte[] Reference(Digester d, byte[] data) =>
        d == Digester.Sha256 ? SHA256.HashData(data) : Blake3Of(data);

    private static byte[] Blake3Of(byte[] data)
    {
        var r = new byte[32];
        Blake3.Hasher.Hash(data, r);
        return r;
    }

    [Theory]
    [InlineData(6, Digester.Blake3)]
    [InlineData(6, Digester.Sha256)]
    [InlineData(5, Digester.Blake3)]
    [InlineData(5, Digester.Sha256)]
    public void Every_regular_file_row_holds_the_digest_of_its_whole_content(int fsVersion, Digester digester)
    {
        var src = TreeFixture.TempDir("fd-src");
        var files = MakeTree(src);
        var outDir = TreeFixture.TempDir("fd-out");
        var r = RoundTripTests.Build(src, outDir, Compressor.Zstd, digester, chunk: Chunk, fsVersion: fsVersion);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(MerkleExtension.Version, img.MerkleVersion);
        Assert.True(img.HasFileDigests);
        foreach (var (path, data) in files)
        {
            Assert.Equal(0, ImageWalker.Resolve(img, path, out ulong h));
            Assert.Equal(0, img.GetAttr(h, out var a));
            Assert.True(Reference(digester, data).AsSpan().SequenceEqual(img.GetFileDigest(a.Ino)), $"{path}: {Convert.ToHexStringLower(img.GetFileDigest(a.Ino))}");
        }
        foreach (var path in new[] { "/", "sub", "sub/link" })
        {
            Assert.Equal(0, ImageWalker.Resolve(img, path, out ulong h));
            Assert.Equal(0, img.GetAttr(h, out var a));
            Assert.False(img.GetFileDigest(a.Ino).ContainsAnyExcept((byte)0), $"{path} is not a regular file: its row's file digest is zero");
        }
        var checkError = ImageChecker.Check(img, outDir, null);
        Assert.True(checkError is null, checkError);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void A_row_edited_to_another_file_digest_fails_check_by_name(int fsVersion)
    {
        var src = TreeFixture.TempDir("fd-src");
        MakeTree(src);
        var outDir = TreeFixture.TempDir("fd-out");
        var r = RoundTripTests.Build(src, outDir, Compressor.Lz4Block, chunk: Chunk, fsVersion: fsVersion);
        long at = FileDigestOffset(r.Bootstrap, "big", out ulong ino);
        var boot = File.ReadAllBytes(r.Bootstrap);
        boot[at] ^= 1;
        File.WriteAllBytes(r.Bootstrap, boot);
        foreach (var blobs in new[] { null, outDir })
        {
            var err = RoundTripTests.CheckFile(r.Bootstrap, blobs);
            Assert.True(err?.Contains($"'/big' (ino {ino})", StringComparison.Ordinal) == true, err);
        }
    }

    [Theory]
    [InlineData(6, "big")]      // several chunks: only the data tells
    [InlineData(5, "big")]
    [InlineData(6, "small")]    // one chunk: its chunk digest tells, without the blobs
    public void A_tree_rebuilt_around_a_false_file_digest_has_another_root_and_fails_check_with_the_blobs(int fsVersion, string path)
    {
        var src = TreeFixture.TempDir("fd-src");
        MakeTree(src);
        var outDir = TreeFixture.TempDir("fd-out");
        var r = RoundTripTests.Build(src, outDir, Compressor.Zstd, chunk: Chunk, fsVersion: fsVersion);
        var original = File.ReadAllBytes(r.Bootstrap);

        // The rewrite recomputes the tree as the builder does: with the true digest it reproduces the image exactly.
        byte[] truth;
        using (var img = RafsImage.Open(r.Bootstrap))
        {
            Assert.Equal(0, ImageWalker.Resolve(img, path, out ulong h));
            Assert.Equal(0, img.GetAttr(h, out var a));
            truth = img.GetFileDigest(a.Ino).ToArray();
        }
        Assert.Equal(Convert.ToHexStringLower(r.RootDigest), Convert.ToHexStringLower(MerkleRewrite.LieAboutFileDigest(r.Bootstrap, path, truth)));
        Assert.Equal(original, File.ReadAllBytes(r.Bootstrap));

        var lie = Blake3Of("something else\n"u8.ToArray());
        var root = MerkleRewrite.LieAboutFileDigest(r.Bootstrap, path, lie);
        Assert.NotEqual(r.RootDigest, root); // so a pinned --root-digest or a signature over the old root refuses it
        var err = RoundTripTests.CheckFile(r.Bootstrap, outDir);
        Assert.NotNull(err);
        Assert.Contains($"'/{path}'", err, StringComparison.Ordinal);
        Assert.Contains("file digest", err, StringComparison.Ordinal);
        if (path == "small") Assert.Contains("file digest", RoundTripTests.CheckFile(r.Bootstrap, null), StringComparison.Ordinal);
    }

    [Fact]
    public void A_non_file_row_with_a_file_digest_fails_check()
    {
        var src = TreeFixture.TempDir("fd-src");
        MakeTree(src);
        var outDir = TreeFixture.TempDir("fd-out");
        var r = RoundTripTests.Build(src, outDir, Compressor.Lz4Block, chunk: Chunk);
        long at = FileDigestOffset(r.Bootstrap, "sub/link", out _);
        var boot = File.ReadAllBytes(r.Bootstrap);
        boot[at] = 1;
        File.WriteAllBytes(r.Bootstrap, boot);
        var err = RoundTripTests.CheckFile(r.Bootstrap, null);
        Assert.True(err?.Contains("'/sub/link'", StringComparison.Ordinal) == true, err);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void A_version_2_image_without_file_digests_still_reads_and_checks(int fsVersion)
    {
        var src = TreeFixture.TempDir("fd-src");
        var files = MakeTree(src);
        var outDir = TreeFixture.TempDir("fd-out");
        var r = RoundTripTests.Build(src, outDir, Compressor.Zstd, chunk: Chunk, fsVersion: fsVersion);
        MerkleRewrite.ToVersion2(r.Bootstrap);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(MerkleExtension.MetadataBoundVersion, img.MerkleVersion);
        Assert.True(img.HasMerkle);
        Assert.False(img.HasFileDigests);
        Assert.NotEqual(r.RootDigest, img.RootDigest);
        Assert.Equal(0, ImageWalker.Resolve(img, "big", out ulong h));
        Assert.Equal(0, img.GetAttr(h, out var a));
        Assert.True(img.GetFileDigest(a.Ino).IsEmpty);
        var checkError = ImageChecker.Check(img, outDir, null);
        Assert.True(checkError is null, checkError);
        using var store = new BlobStore(img, outDir);
        using var content = new MemoryStream();
        Assert.Null(store.CopyFile(h, content, verify: true));
        Assert.Equal(files["big"], content.ToArray());
    }

    [Fact]
    public void Identical_input_still_gives_identical_bytes()
    {
        var src = TreeFixture.TempDir("fd-src");
        MakeTree(src);
        var a = RoundTripTests.Build(src, TreeFixture.TempDir("fd-a"), Compressor.Zstd, chunk: Chunk);
        var b = RoundTripTests.Build(src, TreeFixture.TempDir("fd-b"), Compressor.Zstd, chunk: Chunk);
        Assert.Equal(File.ReadAllBytes(a.Bootstrap), File.ReadAllBytes(b.Bootstrap));
        Assert.Equal(a.Blob!.BlobId, b.Blob!.BlobId);
    }

    /// <summary>Bootstrap offset of the file digest in the merkle row of <paramref name="path"/>.</summary>
    private static long FileDigestOffset(string bootstrap, string path, out ulong ino)
    {
        using var img = RafsImage.Open(bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, path, out ulong h));
        Assert.Equal(0, img.GetAttr(h, out var a));
        ino = a.Ino;
        var boot = File.ReadAllBytes(bootstrap);
        int header = img.Version == RafsVersion.V5 ? V5.SignatureHeaderOffset : MerkleExtension.Offset;
        long table = (long)BinaryPrimitives.ReadUInt64LittleEndian(boot.AsSpan(header + 8));
        return table + ((long)a.Ino - 1) * MerkleRow.Size + MerkleRow.FileDigestOffset;
    }
}
