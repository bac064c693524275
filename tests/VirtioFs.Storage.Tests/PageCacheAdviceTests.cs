using Tmds.Linux;
using VirtioFs.Rafs;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Cache;
using static Tmds.Linux.LibC;

namespace VirtioFs.Storage.Tests;

/// <summary>
/// On a VM that reports free pages, blobs and cache files are read into the page cache as asked for (the range and a
/// window past it), not by the kernel's readahead; elsewhere nothing changes. Residency is checked with mincore(2).
/// The tests set <see cref="PageCacheAdvice.Enabled"/>, which every blob and cache read consults, so they run alone
/// (their collection is not parallel): no other test's reads change behaviour under them.
/// </summary>
[Collection(Name)]
public sealed class PageCacheAdviceTests : IDisposable
{
    public const string Name = "page cache advice (process-wide flag)";

    private const int Page = 4096;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"vfs-pagecache-{Guid.NewGuid():N}");
    private readonly bool _was = PageCacheAdvice.Enabled;

    public PageCacheAdviceTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        PageCacheAdvice.Enabled = _was;
        Directory.Delete(_dir, true);
    }

    [Theory]
    [InlineData("01100101000000000000000000000000100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", true)] // this machine's balloon
    [InlineData("01100010000000000000000000000000100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000", false)] // no REPORTING bit
    [InlineData("011001", true)]
    [InlineData("01100", false)] // too short to say
    [InlineData("", false)]
    public void Free_page_reporting_is_read_from_the_balloons_negotiated_features(string features, bool reports)
    {
        var device = Path.Combine(_dir, "virtio_balloon", "virtio7");
        Directory.CreateDirectory(device);
        File.WriteAllText(Path.Combine(device, "features"), features + "\n");
        // Entries that are not devices are skipped.
        Directory.CreateDirectory(Path.Combine(_dir, "virtio_balloon", "module"));
        File.WriteAllText(Path.Combine(_dir, "virtio_balloon", "module", "features"), "111111");
        Assert.Equal(reports, PageCacheAdvice.ReportsFreePages(Path.Combine(_dir, "virtio_balloon")));
    }

    [Fact]
    public void No_balloon_driver_means_no_reporting()
    {
        Assert.False(PageCacheAdvice.ReportsFreePages(Path.Combine(_dir, "missing")));
        Directory.CreateDirectory(Path.Combine(_dir, "empty"));
        Assert.False(PageCacheAdvice.ReportsFreePages(Path.Combine(_dir, "empty")));
    }

    [Fact]
    public void A_lent_blob_range_and_the_window_past_it_are_read_ahead_and_nothing_further()
    {
        PageCacheAdvice.Enabled = true;
        string blob = WriteColdFile("blob", 8 << 20);
        using var backend = new LocalDirectoryBackend(_dir);
        Assert.True(backend.TryMap("blob", 64 * 1024, 64 * 1024, out var range));
        long sum = 0;
        using (range)
        {
            foreach (byte b in range.Data) sum += b; // touches every page of the range through the mapping
        }
        Assert.Equal(Expected(64 * 1024, 64 * 1024), sum);
        long windowEnd = 128 * 1024 + PageCacheAdvice.ReadAheadBytes;
        Assert.True(WaitResident(blob, 64 * 1024, windowEnd - 64 * 1024), "the range and the window past it were not read");
        // With the kernel's readahead (8 MiB on this machine) the fault would have read far past the window.
        Assert.Equal(0, CountResident(blob, windowEnd + Page, (4 << 20) - windowEnd));
        Assert.Equal(0, CountResident(blob, 0, 60 * 1024)); // nor before it
    }

    [Fact]
    public void Without_reporting_a_lent_range_asks_for_nothing_ahead()
    {
        PageCacheAdvice.Enabled = false;
        string blob = WriteColdFile("blob", 4 << 20);
        using var backend = new LocalDirectoryBackend(_dir);
        Assert.True(backend.TryMap("blob", 0, Page, out var range));
        range.Dispose(); // lent, never touched: only a hint could have read anything
        Thread.Sleep(200);
        Assert.Equal(0, CountResident(blob, 0, 4 << 20));
    }

    [Fact]
    public void A_read_from_the_start_of_a_cached_chunk_reads_the_chunk_and_the_window_and_nothing_further()
    {
        PageCacheAdvice.Enabled = true;
        using var fx = new ImageFixture(Compressor.Lz4Block);
        using var backend = new LocalDirectoryBackend(fx.BlobDir);
        var options = new CacheOptions { CacheDir = fx.CacheDir };
        var big = fx.Chunks("big.bin");
        var buf = new byte[fx.Content.Values.Max(c => c.Length)];
        using (var fill = new BlobCacheManager(fx.Image.Blobs, backend, options))
        {
            foreach (var (path, content) in fx.Content) Assert.Equal(content.Length, fill.ReadFile(fx.Chunks(path), fx.Size(path), 0, buf));
        }
        string data = Path.Combine(fx.CacheDir, fx.Blob.BlobId + ".blob.data");
        long size = new FileInfo(data).Length;
        Assert.True(size > PageCacheAdvice.ReadAheadBytes + 2 * ImageFixture.ChunkSize, $"cache file of {size} bytes is too small for the test");
        DropPages(data);
        Assert.Equal(0, CountResident(data, 0, size));

        using var m = new BlobCacheManager(fx.Image.Blobs, backend, options);
        var chunk = big[1];
        Assert.True(m.IsCached(chunk));
        Assert.Equal(Page, m.ReadFile(big, fx.Size("big.bin"), ImageFixture.ChunkSize, buf.AsSpan(0, Page)));
        Assert.Equal(fx.Content["big.bin"].AsSpan((int)ImageFixture.ChunkSize, Page).ToArray(), buf[..Page]);
        long start = (long)chunk.UncompressedOffset;
        long windowEnd = Math.Min(size, start + chunk.UncompressedSize + PageCacheAdvice.ReadAheadBytes);
        Assert.True(WaitResident(data, start, windowEnd - start), "the chunk and the window past it were not read");
        // The cache file has no readahead of the kernel's: nothing past the window, nothing before the chunk.
        long after = (windowEnd + Page - 1) / Page * Page + Page;
        if (after < size) Assert.Equal(0, CountResident(data, after, size - after));
        Assert.Equal(0, CountResident(data, 0, start / Page * Page - Page));

        // Reads inside a chunk ask for nothing ahead, and the kernel reads no more than they do: two pages for two
        // sequential one-page reads, where its readahead would see a stream and read ahead of the second.
        DropPages(data);
        ulong inside = 8 * ImageFixture.ChunkSize + 2 * Page;
        for (ulong at = inside; at < inside + 2 * Page; at += Page)
        {
            Assert.Equal(Page, m.ReadFile(big, fx.Size("big.bin"), at, buf.AsSpan(0, Page)));
            Assert.Equal(fx.Content["big.bin"].AsSpan((int)at, Page).ToArray(), buf[..Page]);
        }
        Assert.Equal(2, CountResident(data, 0, size));
    }

    /// <summary>A file of <paramref name="length"/> bytes (byte i = i * 7 mod 256), on disk and out of the page cache.</summary>
    private string WriteColdFile(string name, int length)
    {
        string path = Path.Combine(_dir, name);
        var bytes = new byte[length];
        for (int i = 0; i < length; i++) bytes[i] = (byte)(i * 7);
        File.WriteAllBytes(path, bytes);
        DropPages(path);
        Assert.Equal(0, CountResident(path, 0, length));
        return path;
    }

    private static long Expected(int offset, int length)
    {
        long sum = 0;
        for (int i = offset; i < offset + length; i++) sum += (byte)(i * 7);
        return sum;
    }

    /// <summary>Writes the file's dirty pages back, then drops its clean pages from the page cache.</summary>
    private static void DropPages(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        int fd = (int)handle.DangerousGetHandle();
        Assert.Equal(0, fsync(fd));
        Assert.Equal(0, posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED));
    }

    /// <summary>Pages of [offset, offset + length) in the page cache (mincore(2) over a mapping of the file).</summary>
    private static unsafe int CountResident(string path, long offset, long length)
    {
        if (length <= 0) return 0;
        Assert.Equal(0, offset % Page);
        using var handle = File.OpenHandle(path);
        void* map = mmap(null, (size_t)(ulong)(offset + length), PROT_READ, MAP_SHARED, (int)handle.DangerousGetHandle(), 0);
        Assert.True(map != MAP_FAILED, "mmap failed");
        try
        {
            int pages = (int)((length + Page - 1) / Page);
            var vec = new byte[pages];
            fixed (byte* v = vec)
            {
                Assert.Equal(0, mincore((byte*)map + offset, (size_t)(ulong)length, v));
            }
            return vec.Count(b => (b & 1) != 0);
        }
        finally
        {
            munmap(map, (size_t)(ulong)(offset + length));
        }
    }

    /// <summary>WILLNEED starts I/O without waiting for it: waits up to 10 s for every page of the range.</summary>
    private static bool WaitResident(string path, long offset, long length)
    {
        long first = offset / Page * Page;
        int pages = (int)((offset + length - first + Page - 1) / Page);
        for (int i = 0; i < 200; i++)
        {
            if (CountResident(path, first, offset + length - first) == pages) return true;
            Thread.Sleep(50);
        }
        return false;
    }
}

[CollectionDefinition(PageCacheAdviceTests.Name, DisableParallelization = true)]
public sealed class PageCacheAdviceCollection;
