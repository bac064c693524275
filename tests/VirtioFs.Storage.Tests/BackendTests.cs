using VirtioFs.Storage.Backend;

namespace VirtioFs.Storage.Tests;

public sealed class BackendTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"vfs-backend-{Guid.NewGuid():N}");

    public BackendTests()
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllBytes(Path.Combine(_dir, "abc123"), Enumerable.Range(0, 100).Select(i => (byte)i).ToArray());
        File.WriteAllBytes(Path.Combine(Path.GetTempPath(), "vfs-outside-blob"), [1, 2, 3]);
    }

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Reads_exact_ranges_and_counts_them()
    {
        using var b = new LocalDirectoryBackend(_dir);
        var buf = new byte[10];
        Assert.Equal(0, b.ReadAt("abc123", 90, buf));
        Assert.Equal(Enumerable.Range(90, 10).Select(i => (byte)i).ToArray(), buf);
        Assert.Equal(0, b.ReadAt("abc123", 0, buf.AsSpan(0, 0)));
        var m = b.Metrics;
        Assert.Equal(2, m.Requests);
        Assert.Equal(10, m.Bytes);
        Assert.Equal(0, m.Errors);
    }

    [Theory]
    [InlineData("missing", 0UL, 10, 2)]          // ENOENT
    [InlineData("abc123", 95UL, 10, 5)]          // EIO: the blob ends inside the range
    [InlineData("abc123", 100UL, 1, 5)]
    [InlineData("abc123", ulong.MaxValue, 1, 22)] // EINVAL: offset beyond any file
    [InlineData("../vfs-outside-blob", 0UL, 1, 22)]
    [InlineData("sub/x", 0UL, 1, 22)]
    [InlineData("..", 0UL, 1, 22)]
    [InlineData("", 0UL, 1, 22)]
    public void Bad_requests_are_errno_results(string id, ulong offset, int length, int errno)
    {
        using var b = new LocalDirectoryBackend(_dir);
        Assert.Equal(errno, b.ReadAt(id, offset, new byte[length]));
        Assert.Equal(1, b.Metrics.Errors);
        Assert.Equal(0, b.Metrics.Bytes);
    }

    [Fact]
    public void Reads_after_dispose_fail_cleanly()
    {
        var b = new LocalDirectoryBackend(_dir);
        Assert.Equal(0, b.ReadAt("abc123", 0, new byte[1]));
        b.Dispose();
        Assert.NotEqual(0, b.ReadAt("abc123", 0, new byte[1]));
    }

    [Fact]
    public void A_missing_blob_directory_is_refused_up_front()
    {
        Assert.Throws<DirectoryNotFoundException>(() => new LocalDirectoryBackend(Path.Combine(_dir, "nope")));
    }
}
