using VirtioFs.Daemon.Api;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using VirtioFs.RafsFs;
using VirtioFs.Storage.Cache;
using VirtioFs.Storage.Prefetch;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>Prefetch progress as the metrics report it: finished, a second pass finding everything cached, a cancelled one.</summary>
public sealed class PrefetchProgressTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("vfs-pfprogress-").FullName;

    public PrefetchProgressTests()
    {
        string src = Directory.CreateDirectory(Path.Combine(_root, "src")).FullName;
        var data = new byte[3 * 65536 + 100];
        new Random(9).NextBytes(data);
        File.WriteAllBytes(Path.Combine(src, "a.bin"), data);
        File.WriteAllBytes(Path.Combine(src, "b.bin"), data.AsSpan(0, 65536 + 1).ToArray().Reverse().ToArray());
        Directory.CreateDirectory(Path.Combine(_root, "blobs"));
        ImageBuilder.Build(DirectorySource.Load(src), new BuildOptions
        {
            BlobDir = Path.Combine(_root, "blobs"), Bootstrap = Path.Combine(_root, "bootstrap"), ChunkSize = 65536, BuildTime = 1_700_000_000,
        });
    }

    public void Dispose() => Directory.Delete(_root, true);

    private RafsMount Open() => RafsMount.Open(new RafsMountOptions
    {
        Bootstrap = Path.Combine(_root, "bootstrap"), BlobDir = Path.Combine(_root, "blobs"), CacheDir = Path.Combine(_root, "cache"),
        Prefetch = PrefetchSource.None,
    });

    [Fact]
    public async Task Progress_reaches_its_totals_and_says_finished()
    {
        using RafsMount image = Open();
        Assert.Equal(PrefetchState.None, image.Cache.PrefetchProgress.State);
        Assert.Null(image.Cache.PrefetchProgress.Began);

        await image.Cache.PrefetchAsync(PrefetchPlan.All(image.Image), new PrefetchOptions { MaxConcurrency = 2 });
        PrefetchProgress p = image.Cache.PrefetchProgress;
        Assert.Equal(PrefetchState.Finished, p.State);
        Assert.True(p.Finished);
        Assert.Equal(2, p.FilesQueued);
        Assert.Equal(2, p.FilesDone);
        Assert.Equal(6, p.ChunksQueued); // 4 chunks of a.bin, 2 of b.bin
        Assert.Equal(6, p.ChunksFetched);
        Assert.Equal(0, p.ChunksAlreadyCached);
        Assert.Equal(p.BytesQueued, p.BytesFetched);
        Assert.Equal(0, p.Workers);
        Assert.NotNull(p.Began);
        Assert.True(p.Ended >= p.Began);

        // A second pass finds everything in the cache; the counts say so instead of going stale.
        await image.Cache.PrefetchAsync(PrefetchPlan.All(image.Image), new PrefetchOptions());
        p = image.Cache.PrefetchProgress;
        Assert.Equal(12, p.ChunksQueued);
        Assert.Equal(6, p.ChunksFetched);
        Assert.Equal(6, p.ChunksAlreadyCached);

        var json = ImageMetrics.Of("/m", image).CacheJson();
        Assert.True((bool)json["data_all_ready"]!);
        Assert.True((bool)json["prefetch_finished"]!);
        Assert.Equal(6L, (long)json["entries_count"]!);
    }

    [Fact]
    public async Task A_cancelled_prefetch_is_stopped_not_finished()
    {
        using RafsMount image = Open();
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => image.Cache.PrefetchAsync(PrefetchPlan.All(image.Image), new PrefetchOptions(), cts.Token));
        PrefetchProgress p = image.Cache.PrefetchProgress;
        Assert.Equal(PrefetchState.Stopped, p.State);
        Assert.False(p.Finished);
        Assert.Equal(0, p.Workers);
        Assert.NotNull(p.Ended);
        var json = ImageMetrics.Of("/m", image).CacheJson();
        Assert.Equal("stopped", (string)json["prefetch_state"]!);
        Assert.False((bool)json["data_all_ready"]!);
    }
}
