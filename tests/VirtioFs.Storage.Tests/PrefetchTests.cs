using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Cache;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.Storage.Tests;

public sealed class PrefetchTests : IDisposable
{
    private readonly ImageFixture _fx = new(prefetch: ["/other.bin", "/dir"]);
    private readonly CountingBackend _backend;

    public PrefetchTests()
    {
        _backend = new CountingBackend(new LocalDirectoryBackend(_fx.BlobDir));
    }

    public void Dispose()
    {
        _backend.Dispose();
        _fx.Dispose();
    }

    private BlobCacheManager Open(int amplification = 1 << 20) =>
        new(_fx.Image.Blobs, _backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = amplification });

    private void AssertReadsWithoutBackend(BlobCacheManager m, string path)
    {
        int before = _backend.Count;
        var buf = new byte[_fx.Size(path)];
        Assert.Equal(buf.Length, m.ReadFile(_fx.Chunks(path), _fx.Size(path), 0, buf));
        Assert.Equal(_fx.Content[path], buf);
        Assert.Equal(before, _backend.Count);
    }

    [Fact]
    public async Task Prefetch_fills_the_cache_so_reads_need_no_backend()
    {
        using var m = Open();
        await m.PrefetchAsync([_fx.Chunks("big.bin"), _fx.Chunks("small.txt")], new PrefetchOptions());
        var metrics = m.Metrics;
        Assert.Equal(2, metrics.PrefetchFilesTotal);
        Assert.Equal(2, metrics.PrefetchFilesDone);
        Assert.Equal(17, metrics.PrefetchChunks);
        Assert.Equal(0, metrics.PrefetchErrors);
        // 1 MiB amplification merges big.bin's 16 compressed chunks into few reads.
        Assert.True(_backend.Count < 17, $"{_backend.Count} backend reads");
        AssertReadsWithoutBackend(m, "big.bin");
        AssertReadsWithoutBackend(m, "small.txt");
        Assert.False(m.IsCached(_fx.Chunks("other.bin")[0]));
    }

    [Fact]
    public async Task The_image_prefetch_table_and_named_paths_resolve_to_files()
    {
        using var m = Open();
        await m.PrefetchAsync(PrefetchPlan.FromPrefetchTable(_fx.Image), new PrefetchOptions());
        AssertReadsWithoutBackend(m, "other.bin");
        AssertReadsWithoutBackend(m, "dir/nested.bin");
        Assert.False(m.IsCached(_fx.Chunks("big.bin")[0]));

        var missing = new List<string>();
        var files = PrefetchPlan.FromPaths(_fx.Image, ["/small.txt", "/nope", "/small.txt"], missing).ToList();
        Assert.Single(files);
        Assert.Equal(["/nope"], missing);
        Assert.Equal(5, PrefetchPlan.All(_fx.Image).Count());
    }

    [Fact]
    public async Task Prefetch_all_then_restart_serves_everything_from_the_cache()
    {
        using (var m = Open()) await m.PrefetchAsync(PrefetchPlan.All(_fx.Image), new PrefetchOptions { MaxConcurrency = 3 });
        using var m2 = Open();
        foreach (var name in _fx.Content.Keys) AssertReadsWithoutBackend(m2, name);
    }

    [Fact]
    public async Task Prefetch_skips_a_corrupt_chunk_and_carries_on()
    {
        var bad = _fx.Chunks("big.bin")[2];
        using (var fs = new FileStream(_fx.BlobPath, FileMode.Open, FileAccess.ReadWrite))
        {
            fs.Position = (long)bad.CompressedOffset + 3;
            int b = fs.ReadByte();
            fs.Position--;
            fs.WriteByte((byte)~b);
        }
        using var m = Open(amplification: 0);
        await m.PrefetchAsync([_fx.Chunks("big.bin"), _fx.Chunks("small.txt")], new PrefetchOptions { MaxConcurrency = 1 });
        Assert.Equal(1, m.Metrics.PrefetchErrors);
        Assert.Equal(16, m.Metrics.PrefetchChunks);
        Assert.False(m.IsCached(bad));
        AssertReadsWithoutBackend(m, "small.txt");
    }

    [Fact]
    public async Task Bandwidth_limit_holds_each_next_read_until_the_clock_allows_it()
    {
        var clock = new ManualTimeProvider();
        using var m = Open(amplification: 0);
        var chunks = _fx.Chunks("other.bin");
        long rate = chunks.Max(c => c.CompressedSize); // about one chunk per second
        var task = m.PrefetchAsync([chunks], new PrefetchOptions { MaxConcurrency = 1, BandwidthBytesPerSecond = rate, TimeProvider = clock });
        for (int expected = 1; expected <= chunks.Count - 1; expected++)
        {
            // The next read waits for a timer; until the clock moves, no more backend reads happen.
            Assert.True(await clock.TimerArmed.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(expected, _backend.Count);
            Assert.False(task.IsCompleted);
            clock.Advance(TimeSpan.FromSeconds(1));
        }
        await task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(chunks.Count, _backend.Count);
        Assert.All(chunks, c => Assert.True(m.IsCached(c)));
    }

    [Fact]
    public async Task A_guest_read_completes_while_prefetch_is_stuck_on_the_backend()
    {
        using var m = Open(amplification: 0);
        var big = _fx.Chunks("big.bin");
        using var stuck = new ManualResetEventSlim();
        using var entered = new SemaphoreSlim(0);
        ulong bigStart = big[0].CompressedOffset, bigEnd = big[^1].CompressedOffset + big[^1].CompressedSize;
        _backend.BeforeRead = (off, _) =>
        {
            if (off >= bigStart && off < bigEnd)
            {
                entered.Release();
                stuck.Wait(TimeSpan.FromSeconds(30));
            }
            return 0;
        };
        var prefetch = m.PrefetchAsync([big], new PrefetchOptions { MaxConcurrency = 1 });
        Assert.True(await entered.WaitAsync(TimeSpan.FromSeconds(30)));
        var read = Task.Run(() =>
        {
            var buf = new byte[_fx.Size("other.bin")];
            return (m.ReadFile(_fx.Chunks("other.bin"), _fx.Size("other.bin"), 0, buf), buf);
        });
        var (rc, data) = await read.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(_fx.Content["other.bin"].Length, rc);
        Assert.Equal(_fx.Content["other.bin"], data);
        Assert.False(prefetch.IsCompleted);
        stuck.Set();
        await prefetch.WaitAsync(TimeSpan.FromSeconds(30));
        AssertReadsWithoutBackend(m, "big.bin");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_guest_read_of_a_chunk_prefetch_is_fetching_waits_for_it(bool prefetchFails)
    {
        using var m = Open(amplification: 0);
        var small = _fx.Chunks("small.txt");
        using var stuck = new ManualResetEventSlim();
        using var entered = new SemaphoreSlim(0);
        int calls = 0;
        _backend.BeforeRead = (_, _) =>
        {
            if (Interlocked.Increment(ref calls) > 1) return 0;
            entered.Release();
            stuck.Wait(TimeSpan.FromSeconds(30));
            return prefetchFails ? 110 : 0; // ETIMEDOUT
        };
        var prefetch = m.PrefetchAsync([small], new PrefetchOptions());
        Assert.True(await entered.WaitAsync(TimeSpan.FromSeconds(30)));
        var read = Task.Run(() =>
        {
            var buf = new byte[_fx.Size("small.txt")];
            return (m.ReadFile(small, _fx.Size("small.txt"), 0, buf), buf);
        });
        Assert.True(SpinWait.SpinUntil(() => m.Metrics.PendingWaits == 1, TimeSpan.FromSeconds(30)));
        stuck.Set();
        var (rc, data) = await read.WaitAsync(TimeSpan.FromSeconds(30));
        await prefetch.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(_fx.Content["small.txt"], data[..rc]);
        // Shared when the prefetch succeeds; when it fails, the guest read tries once itself rather than fail.
        Assert.Equal(prefetchFails ? 2 : 1, _backend.Count);
        Assert.Equal(prefetchFails ? 1 : 0, m.Metrics.PrefetchErrors);
    }

    // A start-up list (YieldToGuestReads = false, what RafsMount passes for the prefetch table and named files) fetches
    // beside a guest read that is waiting on the backend; a whole-image warm (true) starts nothing until it ends.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Prefetch_waits_for_guest_reads_only_when_asked_to(bool yieldToGuestReads)
    {
        using var m = Open(amplification: 0);
        var other = _fx.Chunks("other.bin");
        var big = _fx.Chunks("big.bin");
        using var release = new ManualResetEventSlim();
        using var guestInBackend = new SemaphoreSlim(0);
        using var prefetchInBackend = new SemaphoreSlim(0);
        ulong otherStart = other[0].CompressedOffset, otherEnd = other[^1].CompressedOffset + other[^1].CompressedSize;
        ulong bigStart = big[0].CompressedOffset, bigEnd = big[^1].CompressedOffset + big[^1].CompressedSize;
        _backend.BeforeRead = (off, _) =>
        {
            if (off >= otherStart && off < otherEnd)
            {
                guestInBackend.Release();
                release.Wait(TimeSpan.FromSeconds(30));
            }
            else if (off >= bigStart && off < bigEnd)
            {
                prefetchInBackend.Release();
            }
            return 0;
        };
        var read = Task.Run(() =>
        {
            var buf = new byte[_fx.Size("other.bin")];
            return (m.ReadFile(other, _fx.Size("other.bin"), 0, buf), buf);
        });
        Assert.True(await guestInBackend.WaitAsync(TimeSpan.FromSeconds(30)));
        var prefetch = m.PrefetchAsync([big], new PrefetchOptions { MaxConcurrency = 1, YieldToGuestReads = yieldToGuestReads });
        // Not yielding: big.bin's first backend read starts while the guest read still waits. Yielding: none does.
        bool fetchedBeside = await prefetchInBackend.WaitAsync(TimeSpan.FromSeconds(yieldToGuestReads ? 1 : 30));
        Assert.Equal(!yieldToGuestReads, fetchedBeside);
        release.Set();
        var (rc, data) = await read.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(_fx.Content["other.bin"], data[..rc]);
        await prefetch.WaitAsync(TimeSpan.FromSeconds(30));
        AssertReadsWithoutBackend(m, "big.bin");
    }

    // With an HTTP-like backend, prefetch keeps MaxConcurrency reads in flight, each an awaited request (the synchronous
    // ReadAt, which parks a thread per read, is never used), and never more than that.
    [Fact]
    public async Task Prefetch_keeps_a_bounded_number_of_async_reads_in_flight_without_the_sync_path()
    {
        using var backend = new GatedAsyncBackend(new LocalDirectoryBackend(_fx.BlobDir));
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = 0 });
        var big = _fx.Chunks("big.bin");
        var prefetch = m.PrefetchAsync([big, _fx.Chunks("other.bin")], new PrefetchOptions { MaxConcurrency = 4 });
        Assert.True(SpinWait.SpinUntil(() => backend.InFlight == 4, TimeSpan.FromSeconds(30)), $"{backend.InFlight} in flight");
        await Task.Delay(200);
        Assert.Equal(4, backend.InFlight);
        Assert.False(prefetch.IsCompleted);
        backend.Open();
        await prefetch.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(4, backend.MaxInFlight);
        Assert.Equal(0, backend.SyncReads);
        Assert.Equal(2, m.Metrics.PrefetchFilesDone);
        Assert.Equal(0, m.Metrics.PrefetchErrors);
        var buf = new byte[_fx.Size("big.bin")];
        Assert.Equal(buf.Length, m.ReadFile(big, _fx.Size("big.bin"), 0, buf));
        Assert.Equal(_fx.Content["big.bin"], buf);
        Assert.Equal(0, backend.SyncReads);
    }

    // Cancelling a prefetch with reads on the wire ends them at once; their claims complete with EIO, so a guest read
    // of those chunks fetches them itself instead of waiting.
    [Fact]
    public async Task Cancelling_prefetch_ends_async_reads_in_flight_and_releases_their_claims()
    {
        using var backend = new GatedAsyncBackend(new LocalDirectoryBackend(_fx.BlobDir));
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = 0 });
        using var cts = new CancellationTokenSource();
        var big = _fx.Chunks("big.bin");
        var prefetch = m.PrefetchAsync([big], new PrefetchOptions { MaxConcurrency = 3 }, cts.Token);
        Assert.True(SpinWait.SpinUntil(() => backend.InFlight == 3, TimeSpan.FromSeconds(30)));
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => prefetch.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, backend.InFlight);
        Assert.True(m.Metrics.PrefetchErrors == 3, $"{m.Metrics.PrefetchErrors} prefetch errors, {m.Metrics.PrefetchChunks} chunks");
        var buf = new byte[_fx.Size("big.bin")];
        var read = Task.Run(() => m.ReadFile(big, _fx.Size("big.bin"), 0, buf));
        Assert.Equal(buf.Length, await read.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(_fx.Content["big.bin"], buf);
    }

    // A prefetch read that fails (the registry's 5xx after retries, as EIO) leaves its chunks to the guest read.
    [Fact]
    public async Task A_failed_async_prefetch_read_is_counted_and_the_guest_read_still_gets_the_data()
    {
        using var backend = new GatedAsyncBackend(new LocalDirectoryBackend(_fx.BlobDir)) { FailAsync = true };
        backend.Open();
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = 0 });
        var small = _fx.Chunks("small.txt");
        await m.PrefetchAsync([small], new PrefetchOptions { MaxConcurrency = 2 }).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, m.Metrics.PrefetchErrors);
        Assert.False(m.IsCached(small[0]));
        var buf = new byte[_fx.Size("small.txt")];
        Assert.Equal(buf.Length, m.ReadFile(small, _fx.Size("small.txt"), 0, buf));
        Assert.Equal(_fx.Content["small.txt"], buf);
        Assert.Equal(1, backend.SyncReads);
    }

    // A guest read whose missing chunks fall into several runs (a chunk in between is cached) puts the later runs'
    // requests on the wire while the first is read, rather than one round trip per run.
    [Fact]
    public async Task A_guest_read_over_several_missing_runs_has_their_requests_in_flight_at_once()
    {
        using var backend = new GatedAsyncBackend(new LocalDirectoryBackend(_fx.BlobDir));
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = 0 });
        var big = _fx.Chunks("big.bin");
        var one = new byte[big[1].UncompressedSize];
        Assert.Equal(one.Length, m.ReadFile(big, _fx.Size("big.bin"), big[1].FileOffset, one));
        Assert.Equal(1, backend.SyncReads);
        bool secondRunOnTheWire = false;
        backend.OnSyncRead = () =>
        {
            secondRunOnTheWire |= SpinWait.SpinUntil(() => backend.InFlight >= 1, TimeSpan.FromSeconds(30));
            backend.Open();
        };
        var buf = new byte[_fx.Size("big.bin")];
        var read = Task.Run(() => m.ReadFile(big, _fx.Size("big.bin"), 0, buf));
        Assert.Equal(buf.Length, await read.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(secondRunOnTheWire);
        Assert.Equal(_fx.Content["big.bin"], buf);
        Assert.Equal(2, backend.SyncReads);
        Assert.True(backend.AsyncReads >= 1);
        Assert.True(big.All(c => m.IsCached(c)));
    }

    // A start-up list is mostly small files; prefetch plans a batch of files in blob order, so neighbouring files (and
    // small holes between them) come in one read rather than one round trip per file. Every chunk is still verified.
    [Fact]
    public async Task Prefetch_reads_neighbouring_small_files_in_one_request()
    {
        using var backend = new GatedAsyncBackend(new LocalDirectoryBackend(_fx.BlobDir));
        backend.Open();
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = 1 << 20 });
        var files = new[] { "other.bin", "small.txt" };
        var all = files.SelectMany(f => _fx.Chunks(f)).Where(c => !c.IsHole).OrderBy(c => c.CompressedOffset).ToList();
        // The fixture lays these two files next to each other in the blob (within the largest hole a read spans).
        for (int k = 1; k < all.Count; k++)
            Assert.InRange((long)all[k].CompressedOffset - (long)(all[k - 1].CompressedOffset + all[k - 1].CompressedSize), 0, Prefetcher.MaxGapBytes);
        await m.PrefetchAsync(files.Select(f => _fx.Chunks(f)).ToList(), new PrefetchOptions { MaxConcurrency = 4 }).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, backend.AsyncReads);
        Assert.Equal(2, m.Metrics.PrefetchFilesDone);
        Assert.Equal(0, m.Metrics.PrefetchErrors);
        foreach (var f in files)
        {
            var buf = new byte[_fx.Size(f)];
            Assert.Equal(buf.Length, m.ReadFile(_fx.Chunks(f), _fx.Size(f), 0, buf));
            Assert.Equal(_fx.Content[f], buf);
        }
        Assert.Equal(0, backend.SyncReads);
    }

    /// <summary>An asynchronous backend whose reads wait, without a thread, until <see cref="Open"/> (or cancellation);
    /// counts reads in flight and synchronous reads.</summary>
    private sealed class GatedAsyncBackend(IBlobBackend inner) : IAsyncBlobBackend
    {
        private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _inFlight, _maxInFlight, _syncReads, _asyncReads;
        public int AsyncReads => Volatile.Read(ref _asyncReads);
        public Action? OnSyncRead { get; set; }
        public int InFlight => Volatile.Read(ref _inFlight);
        public int MaxInFlight => Volatile.Read(ref _maxInFlight);
        public int SyncReads => Volatile.Read(ref _syncReads);
        public bool FailAsync { get; init; }
        public void Open() => _gate.TrySetResult();

        public int ReadAt(string blobId, ulong offset, Span<byte> destination)
        {
            Interlocked.Increment(ref _syncReads);
            OnSyncRead?.Invoke();
            return inner.ReadAt(blobId, offset, destination);
        }

        public async ValueTask<int> ReadAtAsync(string blobId, ulong offset, Memory<byte> destination, CancellationToken ct = default)
        {
            Interlocked.Increment(ref _asyncReads);
            int now = Interlocked.Increment(ref _inFlight);
            for (int max = Volatile.Read(ref _maxInFlight); now > max; max = Volatile.Read(ref _maxInFlight))
                if (Interlocked.CompareExchange(ref _maxInFlight, now, max) == max) break;
            try
            {
                await _gate.Task.WaitAsync(ct).ConfigureAwait(false);
                return FailAsync ? 5 : inner.ReadAt(blobId, offset, destination.Span); // EIO
            }
            catch (OperationCanceledException) { return 5; }
            finally { Interlocked.Decrement(ref _inFlight); }
        }

        public BackendMetrics Metrics => inner.Metrics;
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public async Task Foreground_gate_releases_prefetch_only_when_the_last_guest_read_ends()
    {
        var gate = new ForegroundGate();
        gate.Enter();
        gate.Enter();
        var waiting = gate.WaitIdleAsync(CancellationToken.None).AsTask();
        gate.Exit();
        Assert.False(waiting.IsCompleted);
        gate.Exit();
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(gate.WaitIdleAsync(CancellationToken.None).IsCompleted);
    }

    [Fact]
    public async Task Cancelling_prefetch_stops_it_and_releases_every_claim()
    {
        var clock = new ManualTimeProvider();
        using var m = Open(amplification: 0);
        using var cts = new CancellationTokenSource();
        var chunks = _fx.Chunks("big.bin");
        var task = m.PrefetchAsync([chunks], new PrefetchOptions { BandwidthBytesPerSecond = 1, TimeProvider = clock, MaxConcurrency = 1 }, cts.Token);
        Assert.True(await clock.TimerArmed.WaitAsync(TimeSpan.FromSeconds(30)));
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => task);
        Assert.Equal(1, _backend.Count);
        // Nothing is left claimed: a guest read of every chunk completes.
        var buf = new byte[_fx.Size("big.bin")];
        Assert.Equal(buf.Length, m.ReadFile(chunks, _fx.Size("big.bin"), 0, buf));
        Assert.Equal(_fx.Content["big.bin"], buf);
    }
}
