using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Oci.Http;
using static VirtioFs.Primitives.Errno;

namespace VirtioFs.Storage.Backend;

/// <summary>
/// A backend that can read without blocking a thread for the whole request. The prefetcher keeps several reads in
/// flight through it, each an awaited HTTP request rather than a pool thread parked in <see cref="IBlobBackend.ReadAt"/>.
/// </summary>
public interface IAsyncBlobBackend : IBlobBackend
{
    /// <summary>Reads all of <paramref name="destination"/>; same errno contract as <see cref="IBlobBackend.ReadAt"/>,
    /// never throws (cancellation is EIO).</summary>
    ValueTask<int> ReadAtAsync(string blobId, ulong offset, Memory<byte> destination, CancellationToken ct = default);
}

/// <summary>
/// What every HTTP blob backend (registry, S3, OSS) does alike around its client: checks the range, reads synchronously
/// for the cache's workers or asynchronously for prefetch, maps the client's failure to the errno contract of
/// <see cref="IBlobBackend"/> (404 ENOENT, 401/403 EACCES, 416 EINVAL, anything else EIO), counts every read in the
/// metrics and logs each failure. A subclass names the object of a blob id and reads a range of it; the client's
/// pipeline owns deadlines and retries, so a read never hangs.
/// </summary>
public abstract class RemoteBlobBackend : IAsyncBlobBackend
{
    /// <summary>Largest single read: the cache never asks for more than a merged read (32 MiB).</summary>
    public const int MaxReadBytes = 64 << 20;

    private readonly BackendCounters _counters = new();
    private volatile bool _disposed;
    private int _inFlight;

    protected RemoteBlobBackend(string service, ILogger? logger)
    {
        Service = service;
        Logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The backend type as nydus names it ("registry", "s3", "oss").</summary>
    public string Service { get; }

    protected ILogger Logger { get; }

    public BackendMetrics Metrics => _counters.Snapshot();

    /// <summary>The object a blob id is stored as, or null when the id cannot name one (the read is EINVAL).</summary>
    protected abstract string? ObjectNameOf(string blobId);

    /// <summary>Reads all of <paramref name="destination"/> from <paramref name="objectName"/> at <paramref name="offset"/>;
    /// throws <see cref="RemoteStorageException"/> when it cannot.</summary>
    protected abstract Task ReadRangeAsync(string objectName, long offset, Memory<byte> destination, CancellationToken ct);

    /// <summary>
    /// Synchronous read for the cache's worker threads. The bytes land in a pooled buffer and are copied once into
    /// <paramref name="destination"/> (a span cannot cross an await); the network dominates that copy.
    /// </summary>
    public int ReadAt(string blobId, ulong offset, Span<byte> destination)
    {
        long start = BackendCounters.Start();
        if (destination.Length == 0) { _counters.Complete(start, 0, true); return 0; }
        int rc = Validate(blobId, offset, destination.Length, out string name);
        if (rc != 0) { _counters.Complete(start, destination.Length, false); return rc; }
        byte[] buf = ArrayPool<byte>.Shared.Rent(destination.Length);
        int beside = Interlocked.Increment(ref _inFlight) - 1;
        try
        {
            rc = Fetch(name, offset, buf.AsMemory(0, destination.Length), CancellationToken.None).GetAwaiter().GetResult();
            if (rc == 0) buf.AsSpan(0, destination.Length).CopyTo(destination);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
            ArrayPool<byte>.Shared.Return(buf);
        }
        _counters.Complete(start, destination.Length, rc == 0);
        if (Logger.IsEnabled(LogLevel.Debug)) RemoteBackendLog.ReadDone(Logger, Service, offset, destination.Length, Stopwatch.GetElapsedTime(start).TotalMilliseconds, beside, "sync");
        if (rc != 0) RemoteBackendLog.ReadFailed(Logger, Service, blobId, offset, destination.Length, rc);
        return rc;
    }

    /// <summary>Asynchronous read straight into <paramref name="destination"/> (no copy): prefetch issues many at once,
    /// and they run concurrently over the client's connection pool. Same errno contract as <see cref="ReadAt"/>.</summary>
    public async ValueTask<int> ReadAtAsync(string blobId, ulong offset, Memory<byte> destination, CancellationToken ct = default)
    {
        long start = BackendCounters.Start();
        if (destination.Length == 0) { _counters.Complete(start, 0, true); return 0; }
        int rc = Validate(blobId, offset, destination.Length, out string name);
        int beside = Interlocked.Increment(ref _inFlight) - 1;
        try
        {
            if (rc == 0) rc = await Fetch(name, offset, destination, ct).ConfigureAwait(false);
        }
        finally { Interlocked.Decrement(ref _inFlight); }
        _counters.Complete(start, destination.Length, rc == 0);
        if (Logger.IsEnabled(LogLevel.Debug)) RemoteBackendLog.ReadDone(Logger, Service, offset, destination.Length, Stopwatch.GetElapsedTime(start).TotalMilliseconds, beside, "async");
        if (rc != 0) RemoteBackendLog.ReadFailed(Logger, Service, blobId, offset, destination.Length, rc);
        return rc;
    }

    private int Validate(string blobId, ulong offset, int length, out string name)
    {
        name = "";
        if (_disposed) return EBADF;
        if (ObjectNameOf(blobId) is not { } n) return EINVAL;
        if (length > MaxReadBytes || offset > long.MaxValue || (ulong)length > long.MaxValue - offset) return EINVAL;
        name = n;
        return 0;
    }

    private async Task<int> Fetch(string name, ulong offset, Memory<byte> destination, CancellationToken ct)
    {
        try
        {
            await ReadRangeAsync(name, (long)offset, destination, ct).ConfigureAwait(false);
            return 0;
        }
        catch (RemoteStorageException e)
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

    /// <summary>Releases the client; reads after this return EBADF.</summary>
    protected abstract void DisposeClient();

    public void Dispose()
    {
        _disposed = true;
        DisposeClient();
        GC.SuppressFinalize(this);
    }
}
