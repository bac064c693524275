using System.Runtime.InteropServices;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Cache;

namespace VirtioFs.Storage.Tests;

public sealed class CacheTests : IDisposable
{
    private readonly ImageFixture _fx = new();
    private readonly CountingBackend _backend;

    public CacheTests()
    {
        _backend = new CountingBackend(new LocalDirectoryBackend(_fx.BlobDir));
    }

    public void Dispose()
    {
        _backend.Dispose();
        _fx.Dispose();
    }

    private BlobCacheManager Open(VerifyMode verify = VerifyMode.Fetch, int amplification = 0, bool cache = true) =>
        new(_fx.Image.Blobs, _backend, new CacheOptions { CacheDir = cache ? _fx.CacheDir : null, Verify = verify, AmplificationBytes = amplification });

    private byte[] ReadAll(BlobCacheManager m, string path, out int rc)
    {
        var buf = new byte[_fx.Size(path) + 10];
        rc = m.ReadFile(_fx.Chunks(path), _fx.Size(path), 0, buf);
        return rc > 0 ? buf[..rc] : [];
    }

    private void AssertReads(BlobCacheManager m, string path)
    {
        var got = ReadAll(m, path, out int rc);
        Assert.Equal(_fx.Content[path].Length, rc);
        Assert.Equal(_fx.Content[path], got);
    }

    private static ulong CompressedBytes(IEnumerable<RafsChunk> chunks) => (ulong)chunks.Where(c => !c.IsHole).Sum(c => (long)c.CompressedSize);

    [Fact]
    public void Reading_one_small_file_fetches_only_its_chunk()
    {
        using var m = Open(amplification: 1 << 20);
        AssertReads(m, "small.txt");
        var chunk = Assert.Single(_fx.Chunks("small.txt"));
        var read = Assert.Single(_backend.Reads);
        Assert.Equal((chunk.CompressedOffset, (int)chunk.CompressedSize), (read.Offset, read.Length));
        Assert.True(CompressedBytes(_fx.Chunks("big.bin")) > 50 * (ulong)read.Length, "the image is much larger than what was fetched");
        Assert.Equal(1, m.Metrics.ReadyChunks);
    }

    [Fact]
    public void Reading_part_of_a_large_file_fetches_only_the_touched_chunks()
    {
        using var m = Open();
        var chunks = _fx.Chunks("big.bin");
        var buf = new byte[100];
        ulong off = 5 * ImageFixture.ChunkSize + 10;
        Assert.Equal(100, m.ReadFile(chunks, _fx.Size("big.bin"), off, buf));
        Assert.Equal(_fx.Content["big.bin"].AsSpan((int)off, 100).ToArray(), buf);
        var read = Assert.Single(_backend.Reads);
        Assert.Equal(chunks[5].CompressedOffset, read.Offset);
        Assert.Equal((int)chunks[5].CompressedSize, read.Length);
    }

    [Fact]
    public void Second_read_is_served_from_the_cache()
    {
        using var m = Open();
        AssertReads(m, "big.bin");
        int after = _backend.Count;
        AssertReads(m, "big.bin");
        Assert.Equal(after, _backend.Count);
        Assert.Equal(16, m.Metrics.CacheHits);
        Assert.Equal(16, m.Metrics.CacheMisses);
    }

    [Fact]
    public void A_restart_reuses_the_cache_directory()
    {
        using (var m = Open()) AssertReads(m, "big.bin");
        int after = _backend.Count;
        Assert.True(after > 0);
        using (var m = Open())
        {
            Assert.Equal(16, m.Metrics.ReadyChunks);
            AssertReads(m, "big.bin");
        }
        Assert.Equal(after, _backend.Count);
    }

    [Fact]
    public void Fetched_chunks_are_synced_in_groups_and_persist_when_the_cache_closes()
    {
        var chunks = _fx.Chunks("big.bin");
        ulong size = _fx.Size("big.bin");
        var buf = new byte[ImageFixture.ChunkSize];
        using (var m = Open())
        {
            // Sixteen separate fetches (one chunk per read, no amplification): one sync each used to be the cost.
            for (int i = 0; i < chunks.Count; i++)
            {
                Assert.Equal(buf.Length, m.ReadFile(chunks, size, (ulong)i * ImageFixture.ChunkSize, buf));
                Assert.Equal(_fx.Content["big.bin"].AsSpan(i * (int)ImageFixture.ChunkSize, buf.Length).ToArray(), buf);
                Assert.True(m.IsCached(chunks[i]));
            }
            Assert.Equal(chunks.Count, _backend.Count);
            // Only the 1 s timer can have synced meanwhile (a slow machine may see one or two).
            Assert.True(m.FilesOf(0)!.Syncs <= 3, $"{m.FilesOf(0)!.Syncs} syncs for {chunks.Count} fetches");
        }
        int before = _backend.Count;
        using (var m = Open())
        {
            Assert.Equal(chunks.Count, m.Metrics.ReadyChunks); // only big.bin was read
            AssertReads(m, "big.bin");
            Assert.Equal(before, _backend.Count);
        }
    }

    [Theory]
    [InlineData(VerifyMode.Fetch)]
    [InlineData(VerifyMode.Always)]
    public unsafe void Cold_reads_that_fetch_their_own_chunks_get_the_right_bytes_in_every_segment(VerifyMode verify)
    {
        // A read copies the chunks it fetches straight from the verified buffer; amplified neighbours, chunks other
        // readers fetched and cached chunks come from the cache file. Every mix must give the file's bytes.
        using var m = Open(verify, amplification: 3 * (int)ImageFixture.ChunkSize);
        var rnd = new Random(5);
        var mem = (byte*)NativeMemory.Alloc(300_000);
        try
        {
            for (int i = 0; i < 150; i++)
            {
                string name = i % 3 == 0 ? "other.bin" : "big.bin";
                var content = _fx.Content[name];
                int off = rnd.Next(0, content.Length);
                int first = rnd.Next(1, 150_000), second = rnd.Next(1, 150_000);
                IoSegment[] segs = [new IoSegment(mem, first), new IoSegment(mem + first, second)];
                new Span<byte>(mem, first + second).Fill(0xCC);
                int want = Math.Min(first + second, content.Length - off);
                Assert.Equal(want, m.ReadFile(_fx.Chunks(name), _fx.Size(name), (ulong)off, first + second, segs));
                Assert.True(new Span<byte>(mem, want).SequenceEqual(content.AsSpan(off, want)), $"{name}: {want} bytes at {off}");
            }
        }
        finally
        {
            NativeMemory.Free(mem);
        }
    }

    [Fact]
    public void Two_caches_over_one_directory_share_a_blob()
    {
        // Images on a common base share blobs; their caches must share the blob's chunk map too.
        using var a = Open();
        using var b = Open();
        AssertReads(a, "other.bin");
        int after = _backend.Count;
        AssertReads(b, "other.bin");
        Assert.Equal(after, _backend.Count);
        a.Dispose();
        a.Dispose();
        AssertReads(b, "big.bin");
        b.Dispose();
        using var c = Open();
        Assert.Equal(20, c.Metrics.ReadyChunks);
    }

    [Fact]
    public async Task Concurrent_readers_of_one_chunk_cause_one_backend_read()
    {
        using var m = Open();
        using var release = new ManualResetEventSlim();
        _backend.BeforeRead = (_, _) => { release.Wait(TimeSpan.FromSeconds(30)); return 0; };
        const int readers = 8;
        var chunks = _fx.Chunks("other.bin");
        var tasks = Enumerable.Range(0, readers).Select(i => Task.Run(() =>
        {
            var buf = new byte[1000];
            int rc = m.ReadFile(chunks, _fx.Size("other.bin"), (ulong)i * 100, buf);
            return (rc, buf, i);
        })).ToArray();
        // Wait until one reader is inside the backend and the others wait on its claim.
        SpinWait.SpinUntil(() => m.Metrics.PendingWaits == readers - 1 && _backend.Count == 1, TimeSpan.FromSeconds(30));
        release.Set();
        foreach (var t in tasks)
        {
            var (rc, buf, i) = await t;
            Assert.Equal(1000, rc);
            Assert.Equal(_fx.Content["other.bin"].AsSpan(i * 100, 1000).ToArray(), buf);
        }
        Assert.Equal(1, _backend.Count);
        Assert.Equal(readers - 1, m.Metrics.PendingWaits);
    }

    [Fact]
    public void Chunks_one_read_needs_are_merged_into_one_backend_read()
    {
        using var m = Open(amplification: 0);
        var chunks = _fx.Chunks("other.bin");
        Assert.Equal(4, chunks.Count);
        for (int i = 1; i < chunks.Count; i++)
            Assert.Equal(chunks[i - 1].CompressedOffset + chunks[i - 1].CompressedSize, chunks[i].CompressedOffset);
        AssertReads(m, "other.bin");
        var read = Assert.Single(_backend.Reads);
        Assert.Equal(chunks[0].CompressedOffset, read.Offset);
        Assert.Equal(CompressedBytes(chunks), (ulong)read.Length);
    }

    [Fact]
    public void Amplification_brings_following_chunks_in_the_same_backend_read()
    {
        var chunks = _fx.Chunks("big.bin");
        // Budget for exactly three following chunks.
        int budget = (int)(chunks[1].CompressedSize + chunks[2].CompressedSize + chunks[3].CompressedSize);
        using var m = Open(amplification: budget);
        var buf = new byte[10];
        Assert.Equal(10, m.ReadFile(chunks, _fx.Size("big.bin"), 0, buf));
        var read = Assert.Single(_backend.Reads);
        Assert.Equal(CompressedBytes(chunks.Take(4)), (ulong)read.Length);
        Assert.True(chunks.Take(4).All(c => m.IsCached(c)));
        Assert.False(m.IsCached(chunks[4]));
        // The neighbours are now reads without the backend.
        Assert.Equal(10, m.ReadFile(chunks, _fx.Size("big.bin"), 3 * ImageFixture.ChunkSize, buf));
        Assert.Single(_backend.Reads);
        Assert.Equal(_fx.Content["big.bin"].AsSpan(3 * (int)ImageFixture.ChunkSize, 10).ToArray(), buf);
    }

    /// <summary>Two files where the second's first chunk follows the first's last chunk in the blob.</summary>
    private (string First, string Next) AdjacentFiles()
    {
        foreach (var a in _fx.Content.Keys)
            foreach (var b in _fx.Content.Keys)
            {
                var ca = _fx.Chunks(a).Where(c => !c.IsHole).ToList();
                var cb = _fx.Chunks(b).Where(c => !c.IsHole).ToList();
                if (a != b && ca.Count > 0 && cb.Count > 0 && cb[0].ChunkIndex == ca[^1].ChunkIndex + 1
                    && cb[0].CompressedOffset == ca[^1].CompressedOffset + ca[^1].CompressedSize)
                    return (a, b);
            }
        throw new InvalidOperationException("the fixture's builder laid out no two files back to back");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_miss_at_the_end_of_a_file_brings_the_next_files_chunks_when_the_blob_order_is_known(bool indexed)
    {
        var (first, next) = AdjacentFiles();
        using var m = Open(amplification: 1 << 20);
        if (indexed) m.Neighbours = BlobChunkIndex.Build(_fx.Image);
        AssertReads(m, first);
        int afterFirst = _backend.Count;
        AssertReads(m, next);
        // With the index, the first file's read already brought the next file: no further backend read.
        Assert.Equal(indexed ? afterFirst : afterFirst + 1, _backend.Count);
        Assert.Equal(indexed, m.CrossFileChunks > 0);
        Assert.Equal(indexed, _fx.Chunks(next).Where(c => !c.IsHole).All(c => m.IsCached(c)) && afterFirst == _backend.Count);
    }

    [Fact]
    public void The_blob_order_index_is_refused_for_images_above_its_cap() =>
        Assert.Null(BlobChunkIndex.Build(_fx.Image, maxChunks: _fx.Blob.ChunkCount - 1));

    [Fact]
    public void Without_amplification_a_one_byte_read_fetches_one_chunk()
    {
        using var m = Open(amplification: 0);
        var chunks = _fx.Chunks("big.bin");
        Assert.Equal(1, m.ReadFile(chunks, _fx.Size("big.bin"), 0, new byte[1]));
        Assert.Equal((int)chunks[0].CompressedSize, Assert.Single(_backend.Reads).Length);
        Assert.False(m.IsCached(chunks[1]));
    }

    private void FlipBlobByte(RafsChunk c)
    {
        using var fs = new FileStream(_fx.BlobPath, FileMode.Open, FileAccess.ReadWrite);
        fs.Position = (long)c.CompressedOffset + c.CompressedSize / 2;
        int b = fs.ReadByte();
        fs.Position--;
        fs.WriteByte((byte)(b ^ 0x01));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_flipped_blob_byte_fails_that_file_only(bool cache)
    {
        FlipBlobByte(_fx.Chunks("big.bin")[3]);
        using var m = Open(cache: cache, amplification: 1 << 20);
        ReadAll(m, "big.bin", out int rc);
        Assert.Equal(-5, rc);
        Assert.True(m.Metrics.DigestErrors >= 1);
        // Other chunks of the same file and other files stay readable.
        var buf = new byte[100];
        Assert.Equal(100, m.ReadFile(_fx.Chunks("big.bin"), _fx.Size("big.bin"), 0, buf));
        Assert.Equal(_fx.Content["big.bin"].AsSpan(0, 100).ToArray(), buf);
        AssertReads(m, "other.bin");
        AssertReads(m, "small.txt");
        // The bad chunk never reaches the cache, so it fails again rather than being served.
        Assert.Equal(-5, m.ReadFile(_fx.Chunks("big.bin"), _fx.Size("big.bin"), 3 * ImageFixture.ChunkSize, buf));
        Assert.False(m.IsCached(_fx.Chunks("big.bin")[3]));
    }

    [Theory]
    [InlineData(Compressor.Zstd, false)]
    [InlineData(Compressor.Zstd, true)]
    [InlineData(Compressor.None, false)]
    [InlineData(Compressor.None, true)]
    public void Whole_chunks_land_verified_in_the_destination_or_leave_no_byte_of_it(Compressor compressor, bool cache)
    {
        using var fx = new ImageFixture(compressor);
        var chunks = fx.Chunks("big.bin");
        ulong size = fx.Size("big.bin");
        int cs = (int)ImageFixture.ChunkSize;
        Assert.Equal(compressor != Compressor.None, chunks[5].IsCompressed);
        // Flip a byte of chunk 5's stored data.
        using (var f = new FileStream(fx.BlobPath, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = (long)chunks[5].CompressedOffset + chunks[5].CompressedSize / 2;
            int x = f.ReadByte();
            f.Position--;
            f.WriteByte((byte)(x ^ 0x10));
        }
        using var backend = new CountingBackend(new LocalDirectoryBackend(fx.BlobDir));
        using var m = new BlobCacheManager(fx.Image.Blobs, backend, new CacheOptions { CacheDir = cache ? fx.CacheDir : null });
        // A whole chunk into one buffer: decoded (or, stored plain, read) in place without a cache.
        var buf = new byte[cs];
        Assert.Equal(cs, m.ReadFile(chunks, size, 4UL * (ulong)cs, buf));
        Assert.Equal(fx.Content["big.bin"].AsSpan(4 * cs, cs).ToArray(), buf);
        // The corrupt chunk: EIO, and whatever landed in the buffer before the digest check is wiped.
        Array.Fill(buf, (byte)0xEE);
        Assert.Equal(-5, m.ReadFile(chunks, size, 5UL * (ulong)cs, buf));
        Assert.DoesNotContain(buf, v => v != 0 && v != 0xEE);
        if (!cache) Assert.All(buf, v => Assert.Equal(0, v));
        Assert.True(m.Metrics.DigestErrors >= 1); // with a cache the failed chunk is tried once more before EIO
        Assert.False(m.IsCached(chunks[5]));
        // A read of part of a chunk, and the neighbours, still come back right.
        var part = new byte[1000];
        Assert.Equal(part.Length, m.ReadFile(chunks, size, 6UL * (ulong)cs + 77, part));
        Assert.Equal(fx.Content["big.bin"].AsSpan(6 * cs + 77, part.Length).ToArray(), part);
    }

    [Theory]
    [InlineData(Compressor.None, 6)]
    [InlineData(Compressor.Lz4Block, 6)]
    [InlineData(Compressor.Zstd, 5)]
    public void Every_file_of_other_image_kinds_reads_back_verified(Compressor compressor, int fsVersion)
    {
        using var fx = new ImageFixture(compressor, fsVersion: fsVersion);
        Assert.Equal(fsVersion == 5 ? RafsVersion.V5 : RafsVersion.V6, fx.Image.Version);
        using var backend = new LocalDirectoryBackend(fx.BlobDir);
        using var m = new BlobCacheManager(fx.Image.Blobs, backend, new CacheOptions { CacheDir = fx.CacheDir, Verify = VerifyMode.Always });
        foreach (var name in fx.Content.Keys)
        {
            var buf = new byte[fx.Size(name)];
            Assert.Equal(buf.Length, m.ReadFile(fx.Chunks(name), fx.Size(name), 0, buf));
            Assert.Equal(fx.Content[name], buf);
        }
    }

    [Fact]
    public void An_image_over_two_blobs_reads_chunks_from_each()
    {
        // v2 is built against v1 as a chunk dictionary: unchanged chunks stay in v1's blob, new ones go to a second blob.
        var src = Path.Combine(_fx.Root, "v2src");
        Directory.CreateDirectory(src);
        var changed = _fx.Content["big.bin"].ToArray();
        changed[5] ^= 0x55;
        File.WriteAllBytes(Path.Combine(src, "big.bin"), changed);
        var r = VirtioFs.Rafs.Builder.ImageBuilder.Build(VirtioFs.Rafs.Builder.DirectorySource.Load(src), new VirtioFs.Rafs.Builder.BuildOptions
        {
            BlobDir = _fx.BlobDir, Bootstrap = Path.Combine(_fx.Root, "v2"), Compressor = Compressor.Zstd, ChunkSize = ImageFixture.ChunkSize,
            ChunkDict = Path.Combine(_fx.Root, "bootstrap"), BuildTime = 1_700_000_000,
        });
        using var img = RafsImage.Open(r.Bootstrap);
        Assert.Equal(2, img.Blobs.Count);
        Assert.Equal(0, img.Lookup(img.RootIno, "big.bin"u8, out ulong ino));
        var chunks = new List<RafsChunk>();
        Assert.Equal(0, img.GetChunks(ino, chunks));
        Assert.Equal(2, chunks.Select(c => c.BlobIndex).Distinct().Count());
        using var m = new BlobCacheManager(img.Blobs, _backend, new CacheOptions { CacheDir = _fx.CacheDir, AmplificationBytes = 1 << 20 });
        var buf = new byte[changed.Length];
        Assert.Equal(buf.Length, m.ReadFile(chunks, (ulong)changed.Length, 0, buf));
        Assert.Equal(changed, buf);
        Assert.Equal(2, _backend.Reads.Select(x => x.Blob).Distinct().Count());
    }

    private void TamperCache(RafsChunk c)
    {
        var path = Path.Combine(_fx.CacheDir, _fx.Blob.BlobId + ".blob.data");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        fs.Position = (long)c.UncompressedOffset + 7;
        int b = fs.ReadByte();
        fs.Position--;
        fs.WriteByte((byte)(b ^ 0xFF));
    }

    [Fact]
    public void Tampered_cache_with_verify_always_is_repaired_from_the_backend()
    {
        using (var m = Open()) AssertReads(m, "other.bin");
        var chunks = _fx.Chunks("other.bin");
        TamperCache(chunks[2]);
        int before = _backend.Count;
        using (var m = Open(VerifyMode.Always))
        {
            AssertReads(m, "other.bin");
            Assert.Equal(before + 1, _backend.Count);
            var read = _backend.Reads[^1];
            Assert.Equal(chunks[2].CompressedOffset, read.Offset);
            Assert.Equal(1, m.Metrics.CacheRepairs);
            // Repaired in place: the next read needs nothing from the backend.
            AssertReads(m, "other.bin");
            Assert.Equal(before + 1, _backend.Count);
        }
    }

    [Fact]
    public void With_verify_fetch_the_cache_is_trusted()
    {
        using (var m = Open()) AssertReads(m, "other.bin");
        var chunks = _fx.Chunks("other.bin");
        TamperCache(chunks[2]);
        int before = _backend.Count;
        using var m2 = Open(VerifyMode.Fetch);
        var got = ReadAll(m2, "other.bin", out int rc);
        Assert.Equal(_fx.Content["other.bin"].Length, rc);
        Assert.Equal(before, _backend.Count);
        int at = (int)(chunks[2].FileOffset + 7);
        Assert.Equal((byte)(_fx.Content["other.bin"][at] ^ 0xFF), got[at]);
    }

    [Theory]
    [InlineData(VerifyMode.Fetch)]
    [InlineData(VerifyMode.Always)]
    public void A_truncated_cache_file_is_refetched(VerifyMode verify)
    {
        using (var m = Open()) AssertReads(m, "big.bin");
        var path = Path.Combine(_fx.CacheDir, _fx.Blob.BlobId + ".blob.data");
        var chunks = _fx.Chunks("big.bin");
        using (var fs = new FileStream(path, FileMode.Open)) fs.SetLength((long)chunks[^1].UncompressedOffset + 5);
        int before = _backend.Count;
        using var m2 = Open(verify);
        AssertReads(m2, "big.bin");
        Assert.Equal(before + 1, _backend.Count);
        Assert.Equal(1, m2.Metrics.CacheRepairs);
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("truncated")]
    [InlineData("bad-magic")]
    [InlineData("wrong-count")]
    [InlineData("empty")]
    [InlineData("missing-data")]
    public void A_broken_chunk_map_starts_the_blob_empty(string how)
    {
        using (var m = Open()) AssertReads(m, "other.bin");
        var map = Path.Combine(_fx.CacheDir, _fx.Blob.BlobId + ".chunk_map");
        var bytes = File.ReadAllBytes(map);
        switch (how)
        {
            case "garbage": new Random(5).NextBytes(bytes); File.WriteAllBytes(map, bytes); break;
            case "truncated": File.WriteAllBytes(map, bytes[..^1]); break;
            case "bad-magic": bytes[0] ^= 1; File.WriteAllBytes(map, bytes); break;
            case "wrong-count": bytes[8] ^= 1; File.WriteAllBytes(map, bytes); break;
            case "empty": File.WriteAllBytes(map, []); break;
            case "missing-data": File.Delete(Path.Combine(_fx.CacheDir, _fx.Blob.BlobId + ".blob.data")); break;
        }
        int before = _backend.Count;
        using (var m = Open())
        {
            Assert.Equal(0, m.Metrics.ReadyChunks);
            AssertReads(m, "other.bin");
            Assert.Equal(before + 1, _backend.Count);
        }
        // The rebuilt map is valid again after a restart.
        using (var m = Open()) Assert.Equal(4, m.Metrics.ReadyChunks);
    }

    [Fact]
    public void A_chunk_map_bit_past_the_last_chunk_is_ignored()
    {
        using (var m = Open()) AssertReads(m, "small.txt");
        var map = Path.Combine(_fx.CacheDir, _fx.Blob.BlobId + ".chunk_map");
        var bytes = File.ReadAllBytes(map);
        uint count = _fx.Blob.ChunkCount;
        if (count % 8 == 0) return; // no spare bits in the last byte for this layout
        bytes[^1] |= 0x80;
        File.WriteAllBytes(map, bytes);
        using var m2 = Open();
        Assert.Equal(1, m2.Metrics.ReadyChunks);
    }

    [Fact]
    public void Holes_read_as_zeros_and_cost_no_backend_read()
    {
        using var m = Open();
        AssertReads(m, "sparse.bin");
        // The builder stores zero chunks as data; a nydus image may mark them as holes instead.
        var chunks = _fx.Chunks("sparse.bin");
        var holed = chunks.Select((c, i) => i is 1 or 2 ? new RafsChunk(c.FileOffset, 0, 0, 0, 0, 0, c.UncompressedSize, ChunkFlags.Hole, Compressor.None, default, true) : c).ToList();
        int before = _backend.Count;
        var buf = new byte[2 * ImageFixture.ChunkSize + 20];
        Array.Fill(buf, (byte)0xAA);
        Assert.Equal(buf.Length, m.ReadFile(holed, _fx.Size("sparse.bin"), ImageFixture.ChunkSize - 10, buf));
        Assert.Equal(_fx.Content["sparse.bin"].AsSpan((int)ImageFixture.ChunkSize - 10, buf.Length).ToArray(), buf);
        Assert.All(buf[10..^10], b => Assert.Equal(0, b));
        Assert.Equal(before, _backend.Count);
    }

    [Fact]
    public void Reads_at_and_past_the_end_are_short_or_empty()
    {
        using var m = Open();
        var chunks = _fx.Chunks("other.bin");
        ulong size = _fx.Size("other.bin");
        var buf = new byte[4096];
        Assert.Equal(0, m.ReadFile(chunks, size, size, buf));
        Assert.Equal(0, m.ReadFile(chunks, size, size + 100000, buf));
        Assert.Equal(50, m.ReadFile(chunks, size, size - 50, buf));
        Assert.Equal(_fx.Content["other.bin"][^50..], buf[..50]);
        Assert.Equal(0, m.ReadFile(chunks, size, 0, Span<byte>.Empty));
    }

    [Theory]
    [InlineData(VerifyMode.Fetch, 3)]
    [InlineData(VerifyMode.Fetch, 40)]   // more pieces than one preadv call takes: bounced through a buffer
    [InlineData(VerifyMode.Always, 40)]
    public unsafe void Scattered_destination_segments_get_the_right_bytes(VerifyMode verify, int pieces)
    {
        using var m = Open(verify);
        var chunks = _fx.Chunks("big.bin");
        ulong off = ImageFixture.ChunkSize - 1000;   // straddles chunks 0 and 1
        int total = 3000;
        var mem = (byte*)NativeMemory.Alloc((nuint)total);
        try
        {
            var segs = new IoSegment[pieces + 1];
            int each = total / pieces, at = 0;
            for (int i = 0; i < pieces; i++)
            {
                int len = i == pieces - 1 ? total - at : each;
                segs[i] = new IoSegment(mem + at, len);
                at += len;
            }
            segs[pieces] = new IoSegment(mem, 0); // an empty trailing segment is harmless
            for (int pass = 0; pass < 2; pass++)  // first fills the cache, second copies from it
            {
                new Span<byte>(mem, total).Clear();
                Assert.Equal(total, m.ReadFile(chunks, _fx.Size("big.bin"), off, total, segs));
                Assert.Equal(_fx.Content["big.bin"].AsSpan((int)off, total).ToArray(), new Span<byte>(mem, total).ToArray());
            }
        }
        finally
        {
            NativeMemory.Free(mem);
        }
    }

    [Fact]
    public void A_failing_backend_gives_EIO_and_a_later_read_retries()
    {
        using var m = Open();
        _backend.BeforeRead = (_, _) => 110; // ETIMEDOUT
        ReadAll(m, "other.bin", out int rc);
        Assert.Equal(-5, rc);
        Assert.Equal(1, m.Metrics.ReadErrors);
        _backend.BeforeRead = null;
        AssertReads(m, "other.bin");
    }

    [Fact]
    public void Impossible_chunk_records_give_EIO_without_touching_the_backend()
    {
        using var m = Open();
        var good = _fx.Chunks("small.txt")[0];
        RafsChunk[] bad =
        [
            good with { BlobIndex = 7 },
            good with { UncompressedSize = ImageFixture.ChunkSize + 1 },
            good with { CompressedSize = uint.MaxValue, Flags = ChunkFlags.Compressed },
            good with { CompressedOffset = ulong.MaxValue - 10 },
            good with { UncompressedOffset = ulong.MaxValue - 10 },
            good with { UncompressedOffset = (_fx.Blob.UncompressedSize + 8191) / 4096 * 4096 },
            good with { ChunkIndex = _fx.Blob.ChunkCount },
            good with { Flags = good.Flags | ChunkFlags.Encrypted },
            good with { CompressedSize = good.UncompressedSize + 1, Flags = ChunkFlags.None },
        ];
        foreach (var c in bad)
        {
            var buf = new byte[16];
            Assert.Equal(-5, m.ReadFile([c], 16, 0, buf));
        }
        Assert.Equal(-5, m.ReadFile([good with { FileOffset = 100 }], 200, 0, new byte[10]));
        Assert.Equal(-5, m.ReadFile([], 10, 0, new byte[10]));
        Assert.Equal(0, _backend.Count);
        // A chunk list that does not cover the file size fails after its real chunk.
        Assert.Equal(-5, m.ReadFile([good], good.UncompressedSize + 100, 0, new byte[good.UncompressedSize + 100]));
    }

    [Fact]
    public void Direct_mode_reads_without_a_cache_directory()
    {
        using var m = Open(cache: false);
        AssertReads(m, "other.bin");
        int after = _backend.Count;
        AssertReads(m, "other.bin");
        Assert.True(_backend.Count > after, "nothing is kept without a cache directory");
        Assert.False(Directory.Exists(_fx.CacheDir));
    }

    [Theory]
    [InlineData(VerifyMode.Fetch)]
    [InlineData(VerifyMode.Always)]
    public void A_cached_read_allocates_nothing(VerifyMode verify)
    {
        using var m = Open(verify);
        var chunks = _fx.Chunks("big.bin");
        var buf = new byte[128 * 1024];
        ulong size = _fx.Size("big.bin");
        // The first read fetches; the second is the first cache hit, which may warm one-time state (the pool's buffer
        // of the chunk's size on this thread, a verifier's static table). Steady-state hits must allocate nothing.
        Assert.Equal(buf.Length, m.ReadFile(chunks, size, 100, buf));
        Assert.Equal(buf.Length, m.ReadFile(chunks, size, 100, buf));
        // The fewest bytes over three rounds of ten reads: an allocation every read fails all three, while the runtime's
        // own occasional work on this thread, in a process running other test classes beside this one, cannot fail
        // the test (CI once saw 6,088 bytes in one round, not seen again in 9 local runs of the suite).
        long fewest = long.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            int total = 0;
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10; i++) total += m.ReadFile(chunks, size, 100, buf);
            fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
            Assert.Equal(10 * buf.Length, total);
        }
        Assert.Equal(0, fewest);
        Assert.Equal(_fx.Content["big.bin"].AsSpan(100, buf.Length).ToArray(), buf);
    }
}
