using Microsoft.Extensions.Logging;
using VirtioFs.Oci;

namespace VirtioFs.Storage.Backend.Registry;

// Overview: the registry backend serves RAFS data blobs straight from an OCI distribution registry, where a nydus image
// stores each blob as a layer named by its sha256 digest (nydus storage/src/backend/registry.rs). A chunk fetch is one
// HTTP Range GET of the blob layer; the client (VirtioFs.Oci.RegistryClient) owns connection pooling, auth, redirects,
// deadlines and retries; RemoteBlobBackend maps its outcome to the errno contract of IBlobBackend and counts every read.

/// <summary>
/// <see cref="IBlobBackend"/> over an OCI registry. Blob ids are the sha256 hex of the blob (RAFS blob ids), or a full
/// <c>sha256:</c> digest. A read that cannot be fetched within the configured retries returns EIO (ENOENT when the
/// registry does not have the blob, EACCES when it refuses the credentials, EINVAL for a range past the blob's end);
/// every attempt has a deadline, so a read never hangs.
/// </summary>
public sealed class RegistryBackend : RemoteBlobBackend
{
    private readonly RegistryClient _client;
    private readonly bool _ownsClient;

    public RegistryBackend(RegistryOptions options, ILogger? logger = null)
        : this(new RegistryClient(options, logger), ownsClient: true, logger) { }

    public RegistryBackend(RegistryClient client, bool ownsClient = false, ILogger? logger = null) : base("registry", logger)
    {
        _client = client ?? throw new ArgumentNullException(nameof(client));
        _ownsClient = ownsClient;
    }

    /// <summary>Builds the backend from a nydus <c>device.backend.config</c> JSON object (see <see cref="RegistryBackendConfig"/>).</summary>
    public static RegistryBackend FromConfig(ReadOnlySpan<byte> json, ILogger? logger = null) => new(RegistryBackendConfig.Parse(json), logger);

    public RegistryClient Client => _client;

    /// <summary>The layer digest of a blob id, or null when the id is neither 64 lowercase hex nor a sha256 digest.</summary>
    public static string? DigestOf(string blobId)
    {
        if (blobId.Length == 64 && OciDigest.IsLowerHex(blobId)) return "sha256:" + blobId;
        return OciDigest.IsValid(blobId) ? blobId : null;
    }

    protected override string? ObjectNameOf(string blobId) => DigestOf(blobId);

    protected override Task ReadRangeAsync(string digest, long offset, Memory<byte> destination, CancellationToken ct) =>
        _client.ReadBlobAsync(digest, offset, destination, ct);

    protected override void DisposeClient()
    {
        if (_ownsClient) _client.Dispose();
    }
}
