using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using VirtioFs.Rafs.Reader;
using static Tmds.Linux.LibC;

namespace VirtioFs.Storage.Cache;

/// <summary>
/// The two cache files of one blob (<c>&lt;blobId&gt;.blob.data</c> and <c>&lt;blobId&gt;.chunk_map</c>), shared by every
/// <see cref="BlobCacheManager"/> of this process that uses the same cache directory: images built on a common base
/// share blobs, and two private maps of one file would each write back their own idea of the ready bits and claim the
/// same chunk twice. Reference counted; the last release closes the files.
/// <para>
/// Fetched chunks are committed in groups: <see cref="Commit"/> makes written chunks ready for this process at once, and
/// one fdatasync of the data file followed by one chunk-map write makes a whole batch durable, when a batch reaches
/// <see cref="GroupBytes"/>, after at most <see cref="GroupDelay"/> (a timer), and on the last release. An fdatasync per
/// fetched chunk cost a journal commit per MiB read cold and made the first read with --cache-dir the slowest
/// (the reader waited on the disk for every chunk). The crash guarantee stays: a ready bit reaches the file only after
/// the fdatasync that covers its data; a crash loses at most the last batch's bits (those chunks are fetched again).
/// </para>
/// </summary>
internal sealed class BlobCacheFiles
{
    private static readonly Dictionary<string, BlobCacheFiles> Open = new(StringComparer.Ordinal);
    private static readonly Lock OpenLock = new();

    /// <summary>
    /// Unsynced bytes that make the writer sync at once, before <see cref="GroupDelay"/> is up: only a fill faster than
    /// 1 GB/s (a local blob) gets there. It was 64 MiB, and each of those syncs wrote to the disk while the fill was
    /// still reading from it: `vfsd mount --cache-dir` reading a 400 MB image cold took 0.64-0.76 s against 0.47-0.51 s
    /// without a cache; with 1 GiB, 0.53-0.56 s (3 alternating runs each, /work/bench/fill3.sh, settled, same CPU). A
    /// crash still loses at most the last second's chunks, which are fetched again.
    /// </summary>
    internal const long GroupBytes = 1L << 30;
    /// <summary>Longest a written chunk waits to become durable.</summary>
    internal static readonly TimeSpan GroupDelay = TimeSpan.FromSeconds(1);

    private readonly string _key;
    private readonly ILogger _logger;
    private readonly Lock _queueLock = new();
    private readonly Lock _flushLock = new();
    private List<uint> _queue = new();
    /// <summary>The batch being synced (swapped with <see cref="_queue"/>, so a flush allocates nothing).</summary>
    private List<uint> _flushing = new();
    private long _queuedBytes;
    private long _syncs;
    /// <summary>A background flush of a full group is queued and has not taken its batch yet.</summary>
    private bool _flushQueued;
    private Timer? _timer;
    private int _refs;

    public SafeFileHandle Data { get; }
    public ChunkMap Map { get; }
    public string DataPath { get; }
    private uint ChunkCount { get; }
    private uint ChunkSize { get; }
    private ulong UncompressedSize { get; }

    private BlobCacheFiles(string key, SafeFileHandle data, ChunkMap map, string dataPath, RafsBlobInfo info, ILogger logger)
    {
        _key = key;
        _logger = logger;
        Data = data;
        Map = map;
        DataPath = dataPath;
        ChunkCount = info.ChunkCount;
        ChunkSize = info.ChunkSize;
        UncompressedSize = info.UncompressedSize;
    }

    /// <summary>Opens (or shares) the cache files of <paramref name="info"/>; null with <paramref name="refusal"/> set
    /// when another image already uses the same blob id with a different layout.</summary>
    public static BlobCacheFiles? Acquire(string cacheDir, RafsBlobInfo info, ILogger logger, out string? refusal)
    {
        refusal = null;
        string dataPath = Path.GetFullPath(Path.Combine(cacheDir, info.BlobId + ".blob.data"));
        lock (OpenLock)
        {
            if (Open.TryGetValue(dataPath, out var shared))
            {
                if (shared.ChunkCount != info.ChunkCount || shared.ChunkSize != info.ChunkSize || shared.UncompressedSize != info.UncompressedSize)
                {
                    refusal = "another image uses this blob id with a different chunk layout";
                    return null;
                }
                shared._refs++;
                return shared;
            }
            string mapPath = Path.Combine(cacheDir, info.BlobId + ".chunk_map");
            // Ready bits without the data file they describe would be lies: start that blob over.
            if (!File.Exists(dataPath)) File.Delete(mapPath);
            var data = File.OpenHandle(dataPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
            PageCacheAdvice.NoReadahead(data); // ChunkReader asks for each chunk it reads instead
            try
            {
                var map = ChunkMap.Open(mapPath, info.ChunkCount, info.ChunkSize, info.UncompressedSize, logger);
                if (map.WasReset) RandomAccess.SetLength(data, 0); // stale data is never read, but give the space back
                StorageLog.CacheOpened(logger, info.BlobId, dataPath, map.ReadyCount, info.ChunkCount);
                var files = new BlobCacheFiles(dataPath, data, map, dataPath, info, logger) { _refs = 1 };
                Open.Add(dataPath, files);
                return files;
            }
            catch
            {
                data.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// Chunks whose data was just written to <see cref="Data"/> (<paramref name="bytes"/> in all): ready for readers now,
    /// durable with the next group sync. A full group is synced on a thread-pool thread: the reader whose chunk filled
    /// it must not wait for the group to reach the disk.
    /// </summary>
    public void Commit(ReadOnlySpan<uint> indexes, long bytes)
    {
        Map.MarkReadyVolatile(indexes);
        bool full;
        lock (_queueLock)
        {
            foreach (uint i in indexes) _queue.Add(i);
            _queuedBytes += bytes;
            full = _queuedBytes >= GroupBytes && !_flushQueued;
            if (full) _flushQueued = true;
            _timer ??= new Timer(static s => ((BlobCacheFiles)s!).FlushQuietly(), this, GroupDelay, GroupDelay);
        }
        if (full) ThreadPool.UnsafeQueueUserWorkItem(static f => f.FlushQuietly(), this, preferLocal: false);
    }

    /// <summary>The timer's flush: a thread-pool callback must not throw (it would end the process); a failure only
    /// leaves the batch's bits unwritten, which a restart pays for by fetching those chunks again.</summary>
    private void FlushQuietly()
    {
        try
        {
            Flush();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
        {
            StorageLog.CacheIoFailed(_logger, DataPath, "group commit", e.Message);
        }
    }

    /// <summary>Group syncs done so far (for tests).</summary>
    internal long Syncs => Interlocked.Read(ref _syncs);

    /// <summary>Makes every committed chunk durable: fdatasync of the data, then their bits in the chunk map.</summary>
    public void Flush()
    {
        lock (_flushLock)
        {
            List<uint> batch;
            long epoch;
            lock (_queueLock)
            {
                _flushQueued = false;
                if (_queue.Count == 0 || Data.IsClosed) return;
                batch = _queue;
                _queue = _flushing;
                _flushing = batch;
                _queuedBytes = 0;
                // Read before the sync: every chunk in the batch was written before this point.
                epoch = Map.Epoch;
            }
            var chunks = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(batch);
            Interlocked.Increment(ref _syncs);
            if (fdatasync((int)Data.DangerousGetHandle()) != 0)
            {
                StorageLog.CacheIoFailed(_logger, DataPath, "fdatasync", $"errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
                Map.ForgetVolatile(chunks); // not known to be stored: fetch them again rather than trust them
            }
            else if (!Map.MarkDurable(chunks, epoch))
            {
                // A chunk was found corrupt and cleared meanwhile, and may have been rewritten after the sync: keep
                // the batch for the next round, whose sync will cover any rewrite.
                lock (_queueLock) _queue.AddRange(batch);
            }
            batch.Clear();
        }
    }

    public void Release()
    {
        lock (OpenLock)
        {
            if (--_refs > 0) return;
            Open.Remove(_key);
            Timer? t;
            lock (_queueLock)
            {
                t = _timer;
                _timer = null;
            }
            t?.Dispose();
            // A timer callback already running finishes under the flush lock before the files close.
            Flush();
            lock (_flushLock)
            {
                Map.Dispose();
                Data.Dispose();
            }
        }
    }
}
