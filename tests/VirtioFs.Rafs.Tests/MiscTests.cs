using Microsoft.Extensions.Logging;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.Rafs.Tests;

public sealed class MiscTests
{
    private sealed class ListLogger : ILogger
    {
        public readonly List<(int Id, string Text)> Events = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => Events.Add((eventId.Id, formatter(state, exception)));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    public void Prefetch_files_land_in_the_prefetch_table(int fsVersion)
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("pf");
        var r = RoundTripTests.Build(src, outDir, prefetch: ["/dir/copy.bin", "small.txt"], fsVersion: fsVersion);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(2, img.PrefetchInodes.Count);
        Assert.Equal(0, ImageWalker.Resolve(img, "/dir/copy.bin", out var a));
        Assert.Equal(0, ImageWalker.Resolve(img, "/small.txt", out var b));
        Assert.Equal(0, img.GetAttr(a, out var aa));
        Assert.Equal(0, img.GetAttr(b, out var ba));
        // v6 lists nids (the reader's inode handles); v5 lists inode numbers (also its handles).
        Assert.Equal(new[] { a, b }, img.PrefetchInodes);
        Assert.NotEqual(aa.Ino, ba.Ino);
    }

    [Fact]
    public void Prefetch_of_a_missing_file_is_a_named_error()
    {
        var src = TreeFixture.TempDir("pf2");
        File.WriteAllText(Path.Combine(src, "x"), "x");
        var e = Assert.Throws<RafsFormatException>(() => RoundTripTests.Build(src, TreeFixture.TempDir("o"), prefetch: ["/nope"]));
        Assert.Contains("/nope", e.Message);
    }

    [Fact]
    public void Build_and_check_log_with_event_ids_in_the_rafs_band()
    {
        var src = TreeFixture.TempDir("log");
        File.WriteAllText(Path.Combine(src, "x"), "hello");
        var outDir = TreeFixture.TempDir("o");
        var log = new ListLogger();
        var r = ImageBuilder.Build(DirectorySource.Load(src), new BuildOptions { BlobDir = outDir, Bootstrap = Path.Combine(outDir, "b") }, log);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Null(ImageChecker.Check(img, outDir, null, log));
        Assert.Equal(new[] { 3000, 3001, 3002, 3005 }, log.Events.Select(e => e.Id));
        Assert.Contains(Convert.ToHexStringLower(r.RootDigest), log.Events[2].Text);
    }

    [Fact]
    public void Getattr_reports_what_the_source_had()
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("attr");
        var r = RoundTripTests.Build(src, outDir);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, "/small.txt", out var ino));
        Assert.Equal(0, img.GetAttr(ino, out var a));
        Assert.Equal(0x8000u | 0x9ED, a.Mode);
        Assert.Equal(1234u, a.Uid);
        Assert.Equal(5678u, a.Gid);
        Assert.Equal(1_600_000_000L, a.MtimeSec);
        Assert.Equal(123_456_789u, a.MtimeNsec);
        Assert.Equal(2u, a.Nlink);
        Assert.Equal(11UL, a.Size);
        Assert.Equal(0, ImageWalker.Resolve(img, "/blk", out var blk));
        Assert.Equal(0, img.GetAttr(blk, out var b));
        Assert.Equal(TreeFixture.MakeDev(259, 70000), b.Rdev);
        var names = new List<byte[]>();
        Assert.Equal(0, img.ListXattr(ino, names));
        Assert.Equal("user.comment"u8.ToArray(), Assert.Single(names));
        Assert.Equal(RafsImage.ENODATA, img.GetXattr(ino, "user.nope"u8, out _));
        Assert.Equal(RafsImage.ENOTDIR, img.Lookup(ino, "x"u8, out _));
        Assert.Equal(RafsImage.EINVAL, img.ReadLink(ino, out _));
        Assert.Equal(RafsImage.EISDIR, img.GetChunks(img.RootIno, new List<RafsChunk>()));
    }
}

public sealed class RangeTests
{
    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    public void Chunk_range_queries_return_exactly_the_overlapping_chunks(int fsVersion)
    {
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("range");
        var r = RoundTripTests.Build(src, outDir, chunk: 64 * 1024, fsVersion: fsVersion);
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(0, ImageWalker.Resolve(img, "/random.bin", out var ino));
        var all = new List<RafsChunk>();
        Assert.Equal(0, img.GetChunks(ino, all));
        Assert.Equal(49, all.Count);                                   // 3 MiB + 123 bytes in 64 KiB chunks
        foreach (var (off, len) in new (ulong, ulong)[] { (0, 1), (65535, 2), (65536, 65536), (3 * 1024 * 1024, 1000), (100, 10_000_000), (5_000_000, 10) })
        {
            var part = new List<RafsChunk>();
            Assert.Equal(0, img.GetChunks(ino, off, len, part));
            var expect = all.Where(c => c.FileOffset + c.UncompressedSize > off && c.FileOffset < off + len).ToList();
            Assert.Equal(expect, part);
        }
    }
}
