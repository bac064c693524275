using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;
using static VirtioFs.Primitives.Errno;

namespace VirtioFs.Storage.Backend;

/// <summary>
/// Blobs stored as files in one directory, each named by its blob id (nydus's localfs backend; the image tool writes
/// blobs this way). Files are opened on first use and kept open; reads are pread(2), so concurrent reads do not share
/// a file position. Blobs are also lent mapped (<see cref="IMappedBlobBackend"/>), so the cache decodes straight from
/// the page cache.
/// </summary>
public sealed class LocalDirectoryBackend : IMappedBlobBackend
{
    private readonly string _dir;
    private readonly ConcurrentDictionary<string, SafeFileHandle> _open = new(StringComparer.Ordinal);
    /// <summary>Mapped blobs by id; null where a blob could not be mapped (it is then read with pread).</summary>
    private readonly ConcurrentDictionary<string, MappedBlob?> _mapped = new(StringComparer.Ordinal);
    private readonly Lock _openLock = new();
    private readonly BackendCounters _counters = new();
    private volatile bool _disposed;

    public LocalDirectoryBackend(string blobDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(blobDir);
        if (!Directory.Exists(blobDir)) throw new DirectoryNotFoundException($"blob directory '{blobDir}' does not exist");
        _dir = Path.GetFullPath(blobDir);
    }

    public BackendMetrics Metrics => _counters.Snapshot();

    /// <summary>A blob id becomes a file name: it must be one plain path component.</summary>
    internal static bool IsValidBlobId(string id)
    {
        if (id.Length is 0 or > 255 || id is "." or "..") return false;
        foreach (char ch in id)
            if (ch < 0x21 || ch > 0x7E || ch == '/') return false;
        return true;
    }

    public int ReadAt(string blobId, ulong offset, Span<byte> destination)
    {
        long start = BackendCounters.Start();
        int rc = Read(blobId, offset, destination);
        _counters.Complete(start, destination.Length, rc == 0);
        return rc;
    }

    private int Read(string blobId, ulong offset, Span<byte> destination)
    {
        if (_disposed) return EBADF;
        if (!IsValidBlobId(blobId)) return EINVAL;
        if (offset > long.MaxValue || (ulong)destination.Length > long.MaxValue - offset) return EINVAL;
        if (!_open.TryGetValue(blobId, out var h))
        {
            int rc = Open(blobId, out h);
            if (rc != 0) return rc;
        }
        int done = 0;
        try
        {
            while (done < destination.Length)
            {
                int n = RandomAccess.Read(h, destination[done..], (long)offset + done);
                if (n <= 0) return EIO; // the blob ends before the range does: truncated or wrong blob
                done += n;
            }
        }
        catch (IOException) { return EIO; }
        catch (ObjectDisposedException) { return EBADF; }
        return 0;
    }

    public bool TryMap(string blobId, ulong offset, int length, out BlobRange range)
    {
        range = default;
        if (_disposed || !IsValidBlobId(blobId)) return false;
        if (!_mapped.TryGetValue(blobId, out var blob))
        {
            if (!_open.TryGetValue(blobId, out var handle) && Open(blobId, out handle) != 0) return false;
            lock (_openLock)
            {
                if (_disposed) return false;
                if (!_mapped.TryGetValue(blobId, out blob))
                {
                    blob = MappedBlob.TryOpen(handle);
                    _mapped[blobId] = blob;
                }
            }
        }
        if (blob is null || !blob.TryLend(offset, length, out range)) return false;
        // The mapping never reads ahead (PageCacheAdvice): ask for the range, and the window past it, before it is touched.
        if (_open.TryGetValue(blobId, out var h)) PageCacheAdvice.WillNeed(h, (long)offset, length);
        // Counted as a read of the range, as ReadAt would count it (the page cache does the I/O as it is touched).
        _counters.Complete(BackendCounters.Start(), length, ok: true);
        return true;
    }

    /// <summary>Opens a blob once; the lock keeps two racing readers (or a racing Dispose) from leaking a descriptor.</summary>
    private int Open(string blobId, out SafeFileHandle h)
    {
        lock (_openLock)
        {
            h = null!;
            if (_disposed) return EBADF;
            if (_open.TryGetValue(blobId, out h!)) return 0;
            try
            {
                h = File.OpenHandle(Path.Combine(_dir, blobId), FileMode.Open, FileAccess.Read, FileShare.Read);
            }
            catch (FileNotFoundException) { return ENOENT; }
            catch (DirectoryNotFoundException) { return ENOENT; }
            catch (UnauthorizedAccessException) { return EACCES; }
            catch (IOException) { return EIO; }
            PageCacheAdvice.NoReadahead(h); // order-0 pages: see PageCacheAdvice
            _open[blobId] = h;
            return 0;
        }
    }

    public void Dispose()
    {
        lock (_openLock)
        {
            _disposed = true;
            foreach (var blob in _mapped.Values) blob?.Close();
            _mapped.Clear();
            foreach (var h in _open.Values) h.Dispose();
            _open.Clear();
        }
    }
}
