using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.Rafs.Tests;

public sealed class RoundTripTests
{
    /// <summary>What ImageChecker finds wrong with the image at <paramref name="bootstrap"/>, a format error's message
    /// when it does not even open, or null when it checks clean.</summary>
    internal static string? CheckFile(string bootstrap, string? blobDir, byte[]? key = null)
    {
        try
        {
            using var img = RafsImage.Open(bootstrap);
            return ImageChecker.Check(img, blobDir, key);
        }
        catch (RafsFormatException e)
        {
            return e.Message;
        }
    }

    internal static BuildResult Build(string src, string outDir, Compressor c = Compressor.Zstd, Digester d = Digester.Blake3,
        uint chunk = 1 << 20, string? dict = null, byte[]? key = null, IReadOnlyList<string>? prefetch = null, string name = "bootstrap", int fsVersion = 6)
    {
        var root = DirectorySource.Load(src);
        return ImageBuilder.Build(root, new BuildOptions
        {
            BlobDir = outDir, Bootstrap = Path.Combine(outDir, name), Compressor = c, Digester = d, ChunkSize = chunk,
            ChunkDict = dict, SigningKey = key, BuildTime = 1_700_000_000, PrefetchFiles = prefetch ?? [], FsVersion = fsVersion,
        });
    }

    [Theory]
    [InlineData(6, Compressor.None, Digester.Blake3)]
    [InlineData(6, Compressor.None, Digester.Sha256)]
    [InlineData(6, Compressor.Lz4Block, Digester.Blake3)]
    [InlineData(6, Compressor.Lz4Block, Digester.Sha256)]
    [InlineData(6, Compressor.Zstd, Digester.Blake3)]
    [InlineData(6, Compressor.Zstd, Digester.Sha256)]
    [InlineData(5, Compressor.None, Digester.Blake3)]
    [InlineData(5, Compressor.None, Digester.Sha256)]
    [InlineData(5, Compressor.Lz4Block, Digester.Blake3)]
    [InlineData(5, Compressor.Lz4Block, Digester.Sha256)]
    [InlineData(5, Compressor.Zstd, Digester.Blake3)]
    [InlineData(5, Compressor.Zstd, Digester.Sha256)]
    public void Create_then_unpack_gives_identical_tree(int fsVersion, Compressor c, Digester d)
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("out");
        var dst = Path.Combine(TreeFixture.TempDir("unpack"), "tree");
        var r = Build(src, outDir, c, d, chunk: 64 * 1024, fsVersion: fsVersion);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(fsVersion, (int)img.Version);
        Assert.Equal(c, img.Compressor);
        Assert.Equal(d, img.Digester);
        Assert.Null(ImageChecker.Check(img, outDir, null));
        Unpacker.Unpack(img, outDir, dst);
        TreeFixture.AssertSameTree(src, dst);
    }

    [Fact]
    public void File_over_4GiB_round_trips_and_holes_cost_one_chunk()
    {
        var src = TreeFixture.CreateFullTree(huge: true);
        var outDir = TreeFixture.TempDir("out");
        var dst = Path.Combine(TreeFixture.TempDir("unpack"), "tree");
        var r = Build(src, outDir, Compressor.Lz4Block);
        Assert.True(r.Blob!.CompressedSize < 64 << 20, $"blob is {r.Blob.CompressedSize} bytes: zero chunks were not deduplicated");
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, "/huge", out var ino));
        Assert.Equal(0, img.GetAttr(ino, out var a));
        Assert.Equal((5UL << 30) + 17 + 12, a.Size);
        Unpacker.Unpack(img, outDir, dst);
        TreeFixture.AssertSameTree(src, dst);
        TreeFixture.Remove(src, outDir, Path.GetDirectoryName(dst)!);
    }

    [Fact]
    public void Fsck_erofs_extracts_the_same_tree_from_an_uncompressed_v6_image()
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("out");
        var dst = Path.Combine(TreeFixture.TempDir("fsck"), "tree");
        var r = Build(src, outDir, Compressor.None, chunk: 64 * 1024);
        var (code, err) = TreeFixture.RunTool("fsck.erofs", $"--device={r.Blob!.Path}", $"--extract={dst}", r.Bootstrap);
        Assert.True(code == 0, $"fsck.erofs failed: {err}");
        // fsck.erofs 1.5 checks xattr bodies but does not restore xattrs, hard links (it writes each name as its
        // own file), setuid/setgid (it chowns after chmod) or the root directory's own times; everything else must
        // match. Our own unpacker covers those.
        TreeFixture.AssertSameTree(src, dst, compareRootTimes: false, compareXattrs: false, compareLinks: false, compareSuid: false);

        // dump.erofs reads the superblock and device table the same way.
        var (dcode, text) = TreeFixture.RunTool("dump.erofs", "-s", $"--device={r.Blob!.Path}", r.Bootstrap);
        Assert.Equal(0, dcode);
        Assert.Contains($"Filesystem inode count:                       {r.Inodes}", text);
        Assert.Contains("chunked_file device_table", text);
    }

    [Fact]
    public void Same_input_gives_byte_identical_bootstrap_and_blob()
    {
        var src = TreeFixture.CreateFullTree();
        var o1 = TreeFixture.TempDir("r1");
        var o2 = TreeFixture.TempDir("r2");
        var r1 = Build(src, o1);
        var r2 = Build(src, o2);
        Assert.Equal(File.ReadAllBytes(r1.Bootstrap), File.ReadAllBytes(r2.Bootstrap));
        Assert.Equal(r1.Blob!.BlobId, r2.Blob!.BlobId);
        Assert.Equal(File.ReadAllBytes(r1.Blob.Path), File.ReadAllBytes(r2.Blob.Path));
    }

    [Fact]
    public void Directory_of_100000_entries_supports_lookup_readdir_resume_and_round_trip()
    {
        var src = TreeFixture.TempDir("wide");
        var wide = Path.Combine(src, "wide");
        Directory.CreateDirectory(wide);
        for (int i = 0; i < 100_000; i++) File.Create(Path.Combine(wide, $"entry-{i:D6}")).Dispose();
        var outDir = TreeFixture.TempDir("out");
        var r = Build(src, outDir, Compressor.None);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, "/wide", out var dir));
        foreach (var i in new[] { 0, 1, 4242, 50_000, 99_999 })
            Assert.Equal(0, img.Lookup(dir, System.Text.Encoding.ASCII.GetBytes($"entry-{i:D6}"), out _));
        Assert.Equal(RafsImage.ENOENT, img.Lookup(dir, "entry-100000"u8, out _));
        Assert.Equal(RafsImage.ENOENT, img.Lookup(dir, "a"u8, out _));
        // Read in pages of 1000, resuming from the returned offsets; every name exactly once, in order.
        var names = new List<string>();
        ulong off = 0;
        while (true)
        {
            int n = 0;
            ulong next = off;
            Assert.Equal(0, img.ReadDir(dir, off, (name, _, _, nextOff) => { names.Add(System.Text.Encoding.ASCII.GetString(name)); next = nextOff; return ++n < 1000; }));
            if (n == 0) break;
            off = next;
        }
        Assert.Equal(100_002, names.Count);
        Assert.Equal(names.OrderBy(s => s, StringComparer.Ordinal), names);
        var dst = Path.Combine(TreeFixture.TempDir("unpack"), "tree");
        Unpacker.Unpack(img, outDir, dst);
        Assert.Equal(100_000, Directory.GetFiles(Path.Combine(dst, "wide")).Length);
        TreeFixture.Remove(src, outDir, Path.GetDirectoryName(dst)!);
    }
}
