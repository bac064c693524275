using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Cache;
using static Tmds.Linux.LibC;

namespace VirtioFs.Storage.Tests;

/// <summary>The first read through an empty cache: chunks decoded straight into the reader's own buffer and written to
/// the cache from there, zero chunks kept as holes, and every byte still verified.</summary>
public sealed class CacheFillTests : IDisposable
{
    private readonly ImageFixture _fx = new();
    private readonly CountingBackend _backend;

    public CacheFillTests()
    {
        _backend = new CountingBackend(new LocalDirectoryBackend(_fx.BlobDir));
    }

    public void Dispose()
    {
        _backend.Dispose();
        _fx.Dispose();
    }

    private BlobCacheManager Open(VerifyMode verify = VerifyMode.Fetch) =>
        new(_fx.Image.Blobs, _backend, new CacheOptions { CacheDir = _fx.CacheDir, Verify = verify, AmplificationBytes = 0 });

    private string CacheData => Path.Combine(_fx.CacheDir, _fx.Blob.BlobId + ".blob.data");

    /// <summary>True when [offset, offset + length) of the file holds no data (SEEK_DATA finds none before its end).</summary>
    private static bool IsHole(string path, long offset, long length)
    {
        using var handle = File.OpenHandle(path);
        const int SeekData = 3; // SEEK_DATA, linux/fs.h
        long data = lseek((int)handle.DangerousGetHandle(), offset, SeekData);
        return data < 0 || data >= offset + length;
    }

    [Fact]
    public void A_chunk_of_zeros_is_cached_as_a_hole_and_reads_back_as_zeros()
    {
        // sparse.bin is data, two chunks of zeros, data; the builder stores the zeros as one (deduplicated) data chunk.
        var chunks = _fx.Chunks("sparse.bin");
        Assert.False(chunks[1].IsHole);
        Assert.Equal(chunks[1].ChunkIndex, chunks[2].ChunkIndex);
        var buf = new byte[_fx.Size("sparse.bin")];
        using (var m = Open())
        {
            Assert.Equal(buf.Length, m.ReadFile(chunks, _fx.Size("sparse.bin"), 0, buf));
            Assert.Equal(_fx.Content["sparse.bin"], buf);
            Assert.Equal(1, m.ZeroChunksAsHoles);
            Assert.True(m.IsCached(chunks[1]));
        }
        Assert.True(IsHole(CacheData, (long)chunks[1].UncompressedOffset, chunks[1].UncompressedSize), "the zero chunk takes disk space");
        Assert.False(IsHole(CacheData, (long)chunks[0].UncompressedOffset, chunks[0].UncompressedSize));
        // After a restart the hole is a cached chunk like any other: no backend read, and with verify=always it passes
        // its digest check (zeros are what it holds).
        int before = _backend.Count;
        using var again = Open(VerifyMode.Always);
        Array.Fill(buf, (byte)0xAA);
        Assert.Equal(buf.Length, again.ReadFile(chunks, _fx.Size("sparse.bin"), 0, buf));
        Assert.Equal(_fx.Content["sparse.bin"], buf);
        Assert.Equal(before, _backend.Count);
        Assert.Equal(0, again.Metrics.CacheRepairs);
    }

    [Fact]
    public void A_whole_chunk_decoded_into_the_readers_buffer_is_cached_verified()
    {
        var chunks = _fx.Chunks("big.bin");
        ulong size = _fx.Size("big.bin");
        int chunkSize = (int)ImageFixture.ChunkSize;
        var buf = new byte[chunkSize];
        using (var m = Open())
        {
            for (int i = 0; i < chunks.Count; i++)
            {
                Assert.Equal(chunkSize, m.ReadFile(chunks, size, (ulong)(i * chunkSize), buf));
                Assert.Equal(_fx.Content["big.bin"].AsSpan(i * chunkSize, chunkSize).ToArray(), buf);
            }
            Assert.Equal(chunks.Count, m.Metrics.ChunksFetched);
        }
        // What went to the cache file is what was verified: a restart that checks every cached chunk finds no fault.
        int before = _backend.Count;
        using var again = Open(VerifyMode.Always);
        var all = new byte[size];
        Assert.Equal((int)size, again.ReadFile(chunks, size, 0, all));
        Assert.Equal(_fx.Content["big.bin"], all);
        Assert.Equal(0, again.Metrics.CacheRepairs);
        Assert.Equal(before, _backend.Count);
    }

    [Fact]
    public void A_corrupt_chunk_decoded_into_the_readers_buffer_is_wiped_and_never_cached()
    {
        var chunks = _fx.Chunks("big.bin");
        int chunkSize = (int)ImageFixture.ChunkSize;
        using (var f = new FileStream(_fx.BlobPath, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = (long)chunks[2].CompressedOffset + chunks[2].CompressedSize / 2;
            int x = f.ReadByte();
            f.Position--;
            f.WriteByte((byte)(x ^ 0x01));
        }
        using var m = Open();
        var buf = new byte[chunkSize];
        Array.Fill(buf, (byte)0xEE);
        Assert.Equal(-EIO, m.ReadFile(chunks, _fx.Size("big.bin"), 2UL * (ulong)chunkSize, buf));
        Assert.All(buf, b => Assert.True(b is 0 or 0xEE));
        Assert.False(m.IsCached(chunks[2]));
        Assert.False(File.Exists(CacheData) && new FileInfo(CacheData).Length > (long)chunks[2].UncompressedOffset
            && !IsHole(CacheData, (long)chunks[2].UncompressedOffset, chunks[2].UncompressedSize), "the bad chunk reached the cache file");
    }
}

/// <summary>The local backend lends blobs mapped, and the cache decodes straight from the mapping.</summary>
public sealed class MappedBlobTests : IDisposable
{
    private readonly ImageFixture _fx = new(Compressor.Lz4Block);

    public void Dispose() => _fx.Dispose();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Every_file_reads_back_verified_from_a_mapped_blob(bool cache)
    {
        using var backend = new LocalDirectoryBackend(_fx.BlobDir);
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = cache ? _fx.CacheDir : null });
        foreach (var (path, content) in _fx.Content)
        {
            var buf = new byte[content.Length + 3];
            Assert.Equal(content.Length, m.ReadFile(_fx.Chunks(path), _fx.Size(path), 0, buf));
            Assert.Equal(content, buf[..content.Length]);
        }
        Assert.True(m.Metrics.BackendReads > 0);
        Assert.Equal(m.Metrics.BackendReads, backend.Metrics.Requests);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_flipped_byte_in_a_mapped_blob_is_EIO_and_never_served(bool cache)
    {
        var chunks = _fx.Chunks("big.bin");
        using (var f = new FileStream(_fx.BlobPath, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = (long)chunks[3].CompressedOffset + chunks[3].CompressedSize / 2;
            int x = f.ReadByte();
            f.Position--;
            f.WriteByte((byte)(x ^ 0x40));
        }
        using var backend = new LocalDirectoryBackend(_fx.BlobDir);
        using var m = new BlobCacheManager(_fx.Image.Blobs, backend, new CacheOptions { CacheDir = cache ? _fx.CacheDir : null });
        var buf = new byte[ImageFixture.ChunkSize];
        Assert.Equal(-5, m.ReadFile(chunks, _fx.Size("big.bin"), 3UL * ImageFixture.ChunkSize, buf));
        Assert.Equal(-5, m.ReadFile(chunks, _fx.Size("big.bin"), 3UL * ImageFixture.ChunkSize + 10, buf.AsSpan(0, 100)));
        Assert.True(m.Metrics.DigestErrors >= 2);
        Assert.Equal((int)ImageFixture.ChunkSize, m.ReadFile(chunks, _fx.Size("big.bin"), 4UL * ImageFixture.ChunkSize, buf));
        Assert.Equal(_fx.Content["big.bin"].AsSpan(4 * (int)ImageFixture.ChunkSize, buf.Length).ToArray(), buf);
    }

    [Fact]
    public void Ranges_outside_the_blob_are_not_lent_and_a_lent_range_outlives_dispose()
    {
        long size = new FileInfo(_fx.BlobPath).Length;
        var expected = File.ReadAllBytes(_fx.BlobPath).AsSpan((int)size - 16).ToArray();
        var backend = new LocalDirectoryBackend(_fx.BlobDir);
        Assert.False(backend.TryMap(_fx.Blob.BlobId, (ulong)size - 15, 16, out _));
        Assert.False(backend.TryMap(_fx.Blob.BlobId, ulong.MaxValue - 3, 8, out _));
        Assert.False(backend.TryMap("../" + _fx.Blob.BlobId, 0, 1, out _));
        Assert.False(backend.TryMap("no-such-blob", 0, 1, out _));
        Assert.True(backend.TryMap(_fx.Blob.BlobId, (ulong)size - 16, 16, out var range));
        backend.Dispose();
        // Unmapped only once the range is returned: still readable here.
        Assert.Equal(expected, range.Data.ToArray());
        range.Dispose();
        Assert.False(backend.TryMap(_fx.Blob.BlobId, 0, 1, out _));
    }
}
