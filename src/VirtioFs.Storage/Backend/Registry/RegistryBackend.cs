using System.Buffers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Oci;
using static VirtioFs.Primitives.Errno;

namespace VirtioFs.Storage.Backend.Registry;

// Overview: the registry backend serves RAFS data blobs straight from an OCI distribution registry, where a nydus image
// stores each blob as a layer named by its sha256 digest (nydus storage/src/backend/registry.rs). A chunk fetch is one
// HTTP Range GET of the blob layer; the client (VirtioFs.Oci.RegistryClient) owns connection pooling, auth, redirects,
// deadlines and retries. This class maps its outcome to the errno contract of IBlobBackend and counts every read.

/// <summary>
/// <see cref="IBlobBackend"/> over an OCI registry. Blob ids are the sha256 hex of the blob (RAFS blob ids), or a full
/// <c>sha256:</c> digest. A read that cannot be fetched within the configured retries returns EIO (ENOENT when the
/// registry does not have the blob, EACCES when it refuses the credentials, EINVAL for a range past the blob's end);
/// every attempt has a deadline, so a read never hangs.
/// </summary>
public sealed class RegistryBackend : IBlobBackend
{

    /// <summary>Largest single read: the cache never asks for more than a merged read (32 MiB).</summary>
    public const int MaxReadBytes = 64 << 20;

    private readonly RegistryClient _client;
    private readonly bool _ownsClient;
    private readonly ILogger _log;
    private readonly BackendCounters _counters = new();
    private volatile bool _disposed;

    public RegistryBackend(RegistryOptions options, ILogger? logger = null)
        : this(new RegistryClient(options, logger), ownsClient: true, logger) { }

    public RegistryBackend(RegistryClient client, bool ownsClient = false, ILogger? logger = null)
    {
        _client = client ?? throw new ArgumentNullException(nameof(client));
        _ownsClient = ownsClient;
        _log = logger ?? NullLogger.Instance;
    }

    /// <summary>Builds the backend from a nydus <c>device.backend.config</c> JSON object (see <see cref="RegistryBackendConfig"/>).</summary>
    public static RegistryBackend FromConfig(ReadOnlySpan<byte> json, ILogger? logger = null) => new(RegistryBackendConfig.Parse(json), logger);

    public RegistryClient Client => _client;

    public BackendMetrics Metrics => _counters.Snapshot();

    /// <summary>The layer digest of a blob id, or null when the id is neither 64 lowercase hex nor a sha256 digest.</summary>
    public static string? DigestOf(string blobId)
    {
        if (blobId.Length == 64 && OciDigest.IsLowerHex(blobId)) return "sha256:" + blobId;
        return OciDigest.IsValid(blobId) ? blobId : null;
    }

    /// <summary>
    /// Synchronous read for the cache's worker threads. The bytes land in a pooled buffer and are copied once into
    /// <paramref name="destination"/> (a span cannot cross an await); the network dominates that copy.
    /// </summary>
    public int ReadAt(string blobId, ulong offset, Span<byte> destination)
    {
        long start = BackendCounters.Start();
        if (destination.Length == 0) { _counters.Complete(start, 0, true); return 0; }
        int rc = Validate(blobId, offset, destination.Length, out string digest);
        if (rc != 0) { _counters.Complete(start, destination.Length, false); return rc; }
        byte[] buf = ArrayPool<byte>.Shared.Rent(destination.Length);
        try
        {
            rc = Fetch(digest, offset, buf.AsMemory(0, destination.Length), CancellationToken.None).GetAwaiter().GetResult();
            if (rc == 0) buf.AsSpan(0, destination.Length).CopyTo(destination);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        _counters.Complete(start, destination.Length, rc == 0);
        if (rc != 0) RegistryBackendLog.ReadFailed(_log, blobId, offset, destination.Length, rc);
        return rc;
    }

    /// <summary>Asynchronous read straight into <paramref name="destination"/> (no copy): prefetch issues many at once,
    /// and they run concurrently over the client's connection pool. Same errno contract as <see cref="ReadAt"/>.</summary>
    public async ValueTask<int> ReadAtAsync(string blobId, ulong offset, Memory<byte> destination, CancellationToken ct = default)
    {
        long start = BackendCounters.Start();
        if (destination.Length == 0) { _counters.Complete(start, 0, true); return 0; }
        int rc = Validate(blobId, offset, destination.Length, out string digest);
        if (rc == 0) rc = await Fetch(digest, offset, destination, ct).ConfigureAwait(false);
        _counters.Complete(start, destination.Length, rc == 0);
        if (rc != 0) RegistryBackendLog.ReadFailed(_log, blobId, offset, destination.Length, rc);
        return rc;
    }

    private int Validate(string blobId, ulong offset, int length, out string digest)
    {
        digest = "";
        if (_disposed) return EBADF;
        if (DigestOf(blobId) is not { } d) return EINVAL;
        if (length > MaxReadBytes || offset > long.MaxValue || (ulong)length > long.MaxValue - offset) return EINVAL;
        digest = d;
        return 0;
    }

    private async Task<int> Fetch(string digest, ulong offset, Memory<byte> destination, CancellationToken ct)
    {
        try
        {
            await _client.ReadBlobAsync(digest, (long)offset, destination, ct).ConfigureAwait(false);
            return 0;
        }
        catch (RegistryException e)
        {
            return e.StatusCode switch
            {
                404 => ENOENT,
                401 or 403 => EACCES,
                416 => EINVAL,
                _ => EIO,
            };
        }
        catch (OperationCanceledException) { return EIO; }
        catch (ObjectDisposedException) { return EBADF; }
        // The backend contract is an errno, never an exception: a failure the client did not classify (a socket or
        // TLS error surfacing unwrapped from the HTTP stack) is an I/O error for the reader, not a crashed worker.
        catch (Exception e) when (e is not OutOfMemoryException) { return EIO; }
    }

    public void Dispose()
    {
        _disposed = true;
        if (_ownsClient) _client.Dispose();
    }
}
