using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Backend.Registry;
using VirtioFs.Storage.Cache;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.Storage.Tests;

/// <summary>The chunk cache reading an image's blob lazily from a real registry: every chunk's digest is verified on
/// fetch, prefetch runs concurrent range reads, and faults in the network give EIO or correct data, never wrong data.</summary>
public sealed class RegistryCacheTests : IDisposable
{
    private readonly ImageFixture _fx = new();
    private readonly RegistryServer _server = RegistryServer.Start();
    private readonly FaultProxy _proxy;

    public RegistryCacheTests()
    {
        _proxy = new FaultProxy(_server.Port);
        using var c = new RegistryClient(_server.Options("vfs/cache"));
        var d = "sha256:" + _fx.Blob.BlobId;
        c.PushBlobAsync(d, new FileInfo(_fx.BlobPath).Length, () => File.OpenRead(_fx.BlobPath)).GetAwaiter().GetResult();
    }

    public void Dispose()
    {
        _proxy.Dispose();
        _server.Dispose();
        _fx.Dispose();
    }

    private RegistryBackend Backend(int retries = 3) =>
        new(_server.Options("vfs/cache", retries: retries, timeout: TimeSpan.FromSeconds(1), host: _proxy.Host));

    private BlobCacheManager Open(IBlobBackend be, bool cache = true) =>
        new(_fx.Image.Blobs, be, new CacheOptions { CacheDir = cache ? _fx.CacheDir : null, Verify = VerifyMode.Fetch });

    private void AssertFile(BlobCacheManager m, string path)
    {
        var buf = new byte[_fx.Size(path)];
        Assert.Equal(buf.Length, m.ReadFile(_fx.Chunks(path), _fx.Size(path), 0, buf));
        Assert.True(_fx.Content[path].AsSpan().SequenceEqual(buf), path);
    }

    [Fact]
    public void Files_read_through_the_registry_match_and_hit_the_cache_afterwards()
    {
        using var be = Backend();
        using var m = Open(be);
        foreach (var p in new[] { "big.bin", "other.bin", "small.txt", "dir/nested.bin", "sparse.bin" }) AssertFile(m, p);
        long requests = be.Metrics.Requests;
        Assert.True(requests > 0);
        Assert.True(be.Metrics.Bytes > 0);
        AssertFile(m, "big.bin");
        Assert.Equal(requests, be.Metrics.Requests);   // served from the cache
        Assert.Equal(0, be.Metrics.Errors);
    }

    [Fact]
    public async Task Prefetch_over_the_registry_fills_the_cache()
    {
        using var be = Backend();
        using var m = Open(be);
        await m.PrefetchAsync(PrefetchPlan.All(_fx.Image), new PrefetchOptions { MaxConcurrency = 4 });
        long requests = be.Metrics.Requests;
        _proxy.Set(Fault.Drop);                         // the registry is gone: everything must come from the cache
        AssertFile(m, "big.bin");
        AssertFile(m, "dir/nested.bin");
        Assert.Equal(requests, be.Metrics.Requests);
    }

    [Fact]
    public void Network_faults_give_correct_data_or_EIO_and_reads_recover()
    {
        // Two faults per transient case and three retries: one spare attempt, so a healthy request that misses the
        // 1 s deadline on a loaded machine does not turn the transient case into an EIO.
        using var be = Backend(retries: 3);
        using var m = Open(be, cache: false);
        var rnd = new Random(5);
        var chunks = _fx.Chunks("big.bin");
        var size = _fx.Size("big.bin");
        foreach (var fault in new[] { Fault.Drop, Fault.Http500, Fault.Http429, Fault.Truncate, Fault.Slow })
        {
            // Transient: two faulted requests, then the retry gets through.
            _proxy.SlowDelay = TimeSpan.FromSeconds(2);
            _proxy.Set(fault, count: 2);
            ulong off = (ulong)rnd.Next(0, (int)size - 5000);
            var buf = new byte[5000];
            Assert.Equal(5000, m.ReadFile(chunks, size, off, buf));
            Assert.True(_fx.Content["big.bin"].AsSpan((int)off, 5000).SequenceEqual(buf), $"{fault} at {off}");
            // Persistent: EIO within the deadline (4 attempts of 1 s plus backoff).
            _proxy.Set(fault);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            Assert.Equal(-5, m.ReadFile(chunks, size, off, buf));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(8), $"{fault}: {sw.Elapsed}");
            _proxy.Set(Fault.None);
            Assert.Equal(5000, m.ReadFile(chunks, size, off, buf));
            Assert.True(_fx.Content["big.bin"].AsSpan((int)off, 5000).SequenceEqual(buf));
        }
    }
}
