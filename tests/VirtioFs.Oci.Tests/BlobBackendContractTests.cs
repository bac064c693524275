using System.Security.Cryptography;
using VirtioFs.Oci.ObjectStorage;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Backend.ObjectStorage;
using VirtioFs.Storage.Backend.Registry;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>
/// What the chunk cache relies on from any <see cref="IBlobBackend"/>, run alike against localfs, a registry and an S3
/// server: exact bytes at any offset, ENOENT for a blob that is not there, EINVAL for an id that cannot name one, an
/// errno (never short data) for a range past the end, concurrent reads, and metrics that count what happened.
/// </summary>
public abstract class BlobBackendContract
{
    protected const int BlobSize = 200_000;

    /// <summary>Stores <paramref name="data"/> where the backend finds it and returns its blob id.</summary>
    protected abstract Task<string> StoreAsync(byte[] data);

    protected abstract IBlobBackend Open();

    private static int Errno(IBlobBackend be, string id, ulong offset, int length) => be.ReadAt(id, offset, new byte[length]);

    [Fact]
    public async Task Reads_return_the_exact_bytes_at_any_offset()
    {
        var data = RandomNumberGenerator.GetBytes(BlobSize);
        string id = await StoreAsync(data);
        using var be = Open();
        foreach (var (offset, length) in new[] { (0, 1), (0, 4096), (77_777, 33_333), (BlobSize - 1, 1), (BlobSize - 5000, 5000) })
        {
            var buf = new byte[length];
            Assert.Equal(0, be.ReadAt(id, (ulong)offset, buf));
            Assert.True(data.AsSpan(offset, length).SequenceEqual(buf), $"bytes at {offset}+{length}");
        }
        Assert.Equal(0, be.ReadAt(id, 5, Span<byte>.Empty));
    }

    [Fact]
    public async Task A_missing_blob_is_ENOENT_and_a_malformed_id_EINVAL()
    {
        await StoreAsync(RandomNumberGenerator.GetBytes(100));
        using var be = Open();
        Assert.Equal(2, Errno(be, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)), 0, 10));
        foreach (var bad in new[] { "../etc/passwd", "a/b", "" })
            Assert.Equal(22, Errno(be, bad, 0, 10));
    }

    [Fact]
    public async Task A_range_past_the_end_is_an_errno_not_short_data()
    {
        string id = await StoreAsync(RandomNumberGenerator.GetBytes(BlobSize));
        using var be = Open();
        var buf = new byte[100];
        int rc = be.ReadAt(id, BlobSize + 10, buf);
        Assert.True(rc is 5 or 22, $"errno {rc}");
        Assert.All(buf, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Concurrent_reads_are_all_correct_and_counted()
    {
        var data = RandomNumberGenerator.GetBytes(BlobSize);
        string id = await StoreAsync(data);
        using var be = Open();
        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(i => Task.Run(() =>
        {
            var buf = new byte[8192];
            int offset = i * 10_000;
            return be.ReadAt(id, (ulong)offset, buf) == 0 && data.AsSpan(offset, buf.Length).SequenceEqual(buf);
        })));
        Assert.All(results, Assert.True);
        Assert.Equal(2, Errno(be, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)), 0, 10));
        var m = be.Metrics;
        Assert.Equal(17, m.Requests);
        Assert.Equal(16 * 8192, m.Bytes);
        Assert.Equal(1, m.Errors);
    }
}

public sealed class LocalfsBackendContractTests : BlobBackendContract, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-contract-").FullName;

    protected override Task<string> StoreAsync(byte[] data)
    {
        string id = Convert.ToHexStringLower(SHA256.HashData(data));
        File.WriteAllBytes(Path.Combine(_dir, id), data);
        return Task.FromResult(id);
    }

    protected override IBlobBackend Open() => new LocalDirectoryBackend(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}

public sealed class RegistryBackendContractTests(AnonymousRegistry reg) : BlobBackendContract, IClassFixture<AnonymousRegistry>
{
    protected override async Task<string> StoreAsync(byte[] data)
    {
        string digest = OciDigest.Sha256(data);
        using var c = new RegistryClient(reg.Server.Options("vfs/contract"));
        await c.PushBlobAsync(digest, data.Length, () => new MemoryStream(data));
        return digest[7..];
    }

    protected override IBlobBackend Open() => new RegistryBackend(reg.Server.Options("vfs/contract", retries: 2, timeout: TimeSpan.FromSeconds(20)));
}

public sealed class S3BackendContractTests(S3Fixture s3) : BlobBackendContract, IClassFixture<S3Fixture>
{
    protected override async Task<string> StoreAsync(byte[] data)
    {
        string id = Convert.ToHexStringLower(SHA256.HashData(data));
        using var c = new ObjectStorageClient(s3.Server.Options("contract/"));
        await c.UploadAsync(id, data.Length, () => new MemoryStream(data));
        return id;
    }

    protected override IBlobBackend Open() => new ObjectStorageBackend(s3.Server.Options("contract/", retries: 2, timeout: TimeSpan.FromSeconds(20)));
}
