using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Cache;

namespace VirtioFs.Storage.Tests;

public sealed class StressTests : IDisposable
{
    private readonly ImageFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    [Theory]
    [InlineData(VerifyMode.Fetch, 0)]
    [InlineData(VerifyMode.Fetch, 256 * 1024)]
    [InlineData(VerifyMode.Always, 128 * 1024)]
    public async Task Many_readers_at_random_ranges_get_right_bytes_and_fetch_each_chunk_once(VerifyMode verify, int amplification)
    {
        using var backend = new CountingBackend(new LocalDirectoryBackend(_fx.BlobDir));
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir, Verify = verify, AmplificationBytes = amplification });
        string[] names = ["big.bin", "other.bin", "small.txt", "dir/nested.bin", "sparse.bin"];
        var lists = names.ToDictionary(n => n, n => (IReadOnlyList<RafsChunk>)_fx.Chunks(n));
        var workers = Enumerable.Range(0, 6).Select(seed => Task.Run(() =>
        {
            var rnd = new Random(seed);
            var buf = new byte[200_000];
            for (int k = 0; k < 150; k++)
            {
                var name = names[rnd.Next(names.Length)];
                var content = _fx.Content[name];
                int off = rnd.Next(content.Length + 10);
                int len = rnd.Next(1, buf.Length);
                int rc = m.ReadFile(lists[name], (ulong)content.Length, (ulong)off, buf.AsSpan(0, len));
                int want = Math.Max(0, Math.Min(len, content.Length - off));
                Assert.Equal(want, rc);
                Assert.True(buf.AsSpan(0, rc).SequenceEqual(content.AsSpan(Math.Min(off, content.Length), rc)), $"{name} at {off}+{len}");
            }
        })).ToArray();
        await Task.WhenAll(workers);
        // Every distinct chunk came from the backend at most once, whatever the interleaving.
        var distinct = lists.Values.SelectMany(l => l).Where(c => !c.IsHole).Select(c => c.ChunkIndex).Distinct().Count();
        Assert.True(m.Metrics.ChunksFetched <= distinct, $"{m.Metrics.ChunksFetched} fetched, {distinct} distinct chunks");
        Assert.Equal(0, m.Metrics.ReadErrors);
    }

    [Fact]
    public void Random_chunk_records_never_throw_or_hang()
    {
        using var backend = new LocalDirectoryBackend(_fx.BlobDir);
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir });
        using var direct = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions());
        var rnd = new Random(99);
        var real = _fx.Chunks("big.bin");
        var buf = new byte[70_000];
        for (int k = 0; k < 2000; k++)
        {
            var list = new List<RafsChunk>();
            ulong pos = 0;
            int n = rnd.Next(1, 4);
            for (int j = 0; j < n; j++)
            {
                var baseChunk = real[rnd.Next(real.Count)];
                uint usize = rnd.Next(4) == 0 ? (uint)rnd.Next() : baseChunk.UncompressedSize;
                var c = baseChunk with
                {
                    FileOffset = rnd.Next(8) == 0 ? (ulong)rnd.NextInt64() : pos,
                    BlobIndex = rnd.Next(10) == 0 ? (uint)rnd.Next(3) : 0,
                    ChunkIndex = rnd.Next(6) == 0 ? (uint)rnd.Next() : baseChunk.ChunkIndex,
                    CompressedOffset = rnd.Next(6) == 0 ? (ulong)rnd.NextInt64() : baseChunk.CompressedOffset + (ulong)rnd.Next(3),
                    CompressedSize = rnd.Next(6) == 0 ? (uint)rnd.Next() : baseChunk.CompressedSize,
                    UncompressedOffset = rnd.Next(6) == 0 ? (ulong)rnd.NextInt64() * 2 : baseChunk.UncompressedOffset,
                    UncompressedSize = usize,
                    Flags = (ChunkFlags)rnd.Next(16),
                    Compressor = (Compressor)rnd.Next(5),
                    IsHole = rnd.Next(10) == 0,
                };
                list.Add(c);
                pos += usize;
            }
            ulong size = (ulong)rnd.NextInt64(1, 1L << 40);
            ulong off = (ulong)rnd.NextInt64(0, (long)Math.Min(size, 1UL << 20));
            int len = rnd.Next(buf.Length);
            int rc = m.ReadFile(list, size, off, buf.AsSpan(0, len));
            Assert.True(rc == -5 || (rc >= 0 && rc <= len), $"rc {rc}");
            rc = direct.ReadFile(list, size, off, buf.AsSpan(0, len));
            Assert.True(rc == -5 || (rc >= 0 && rc <= len), $"rc {rc}");
        }
        // The real file still reads correctly through the same cache afterwards.
        var all = new byte[_fx.Size("big.bin")];
        Assert.Equal(all.Length, m.ReadFile(real, _fx.Size("big.bin"), 0, all));
        Assert.Equal(_fx.Content["big.bin"], all);
    }
}

public sealed class ChunkMapTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"vfs-map-{Guid.NewGuid():N}");

    public ChunkMapTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Claims_are_exclusive_until_completed_and_only_success_marks_ready()
    {
        using var map = ChunkMap.Open(Path.Combine(_dir, "m"), 100, 65536, 100 * 65536, NullLogger.Instance);
        Assert.Equal(ClaimResult.Claimed, map.TryClaim(7, out var mine));
        Assert.Equal(ClaimResult.Pending, map.TryClaim(7, out var other));
        Assert.Same(mine, other);
        Assert.False(map.TryClaimMissing(7, out _));
        map.Complete(7, mine!, 5);
        Assert.Equal(5, other!.Wait());
        Assert.False(map.IsReady(7));
        Assert.Equal(ClaimResult.Claimed, map.TryClaim(7, out mine));
        map.MarkReady([7]);
        map.Complete(7, mine!, 0);
        Assert.Equal(ClaimResult.Ready, map.TryClaim(7, out _));
        Assert.False(map.IsReady(100));
    }

    [Fact]
    public void Volatile_ready_bits_reach_the_file_only_when_made_durable()
    {
        var path = Path.Combine(_dir, "m");
        using (var map = ChunkMap.Open(path, 70, 65536, 70 * 65536, NullLogger.Instance))
        {
            long epoch = map.MarkReadyVolatile([1, 2, 3, 40]);
            Assert.True(map.IsReady(1) && map.IsReady(40));
            Assert.Equal(0, OnDisk(path).Count(b => b != 0)); // readable here, but nothing claims it on disk yet
            Assert.True(map.MarkDurable([1, 2], epoch));
            map.ForgetVolatile([2, 3]); // 2 is durable and stays; 3 never synced and goes
            Assert.True(map.IsReady(2));
            Assert.False(map.IsReady(3));
            // A clear after the batch was taken: its sync may predate a rewrite of the chunk, so nothing is persisted.
            long before = map.Epoch;
            map.ClearReady(1);
            map.MarkReadyVolatile([1]);
            Assert.False(map.MarkDurable([1, 40], before));
            Assert.True(map.MarkDurable([1, 40], map.Epoch));
        }
        using (var map = ChunkMap.Open(path, 70, 65536, 70 * 65536, NullLogger.Instance))
        {
            Assert.Equal(3, map.ReadyCount);
            Assert.True(map.IsReady(1) && map.IsReady(2) && map.IsReady(40));
        }

        static byte[] OnDisk(string p) => File.ReadAllBytes(p)[ChunkMap.HeaderSize..];
    }

    [Fact]
    public void Ready_bits_persist_and_cleared_bits_stay_cleared()
    {
        var path = Path.Combine(_dir, "m");
        using (var map = ChunkMap.Open(path, 70, 65536, 70 * 65536, NullLogger.Instance))
        {
            Assert.True(map.WasReset);
            map.MarkReady([0, 9, 63, 64, 69]);
            map.ClearReady(9);
        }
        Assert.Equal(ChunkMap.HeaderSize + 9, new FileInfo(path).Length);
        using (var map = ChunkMap.Open(path, 70, 65536, 70 * 65536, NullLogger.Instance))
        {
            Assert.False(map.WasReset);
            Assert.Equal(4, map.ReadyCount);
            Assert.True(map.IsReady(0) && map.IsReady(63) && map.IsReady(64) && map.IsReady(69));
            Assert.False(map.IsReady(9));
        }
        // Same file, different blob layout: it is not this blob's map.
        using (var map = ChunkMap.Open(path, 70, 131072, 70 * 65536, NullLogger.Instance))
        {
            Assert.True(map.WasReset);
            Assert.Equal(0, map.ReadyCount);
        }
    }
}
