using Microsoft.Extensions.Logging;
using VirtioFs.Oci.ObjectStorage;

namespace VirtioFs.Storage.Backend.ObjectStorage;

// Overview: the s3 and oss backends serve RAFS data blobs from a bucket, each blob the object object_prefix + blob id
// (nydus storage/src/backend/object_storage.rs). A chunk fetch is one signed range GET; the client
// (VirtioFs.Oci.ObjectStorage.ObjectStorageClient) owns signing and the shared HTTP pipeline (deadlines, retries,
// redirects, proxy), and RemoteBlobBackend the errno contract and the metrics, as for the registry backend.

/// <summary><see cref="IBlobBackend"/> over an S3-compatible or OSS bucket.</summary>
public sealed class ObjectStorageBackend : RemoteBlobBackend
{
    private const int MaxBlobIdLength = 256;
    private readonly ObjectStorageClient _client;

    public ObjectStorageBackend(ObjectStorageOptions options, ILogger? logger = null)
        : base(options.Kind == ObjectStorageKind.S3 ? "s3" : "oss", logger)
    {
        _client = new ObjectStorageClient(options, logger);
    }

    public ObjectStorageClient Client => _client;

    /// <summary>A blob id names an object when it is 1-256 of letters, digits and <c>. _ - :</c> (nydus blob ids are
    /// 64 hex digits; nothing that could climb out of the prefix with '/' or '..').</summary>
    public static bool IsValidBlobId(string blobId) =>
        blobId.Length is > 0 and <= MaxBlobIdLength && blobId != "." && blobId != ".."
        && blobId.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or ':');

    protected override string? ObjectNameOf(string blobId) => IsValidBlobId(blobId) ? blobId : null;

    protected override Task ReadRangeAsync(string blobId, long offset, Memory<byte> destination, CancellationToken ct) =>
        _client.ReadAsync(blobId, offset, destination, ct);

    protected override void DisposeClient() => _client.Dispose();
}
