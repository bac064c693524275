using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Storage.Cache;

/// <summary>
/// The two cache files of one blob (<c>&lt;blobId&gt;.blob.data</c> and <c>&lt;blobId&gt;.chunk_map</c>), shared by every
/// <see cref="BlobCacheManager"/> of this process that uses the same cache directory: images built on a common base
/// share blobs, and two private maps of one file would each write back their own idea of the ready bits and claim the
/// same chunk twice. Reference counted; the last release closes the files.
/// </summary>
internal sealed class BlobCacheFiles
{
    private static readonly Dictionary<string, BlobCacheFiles> Open = new(StringComparer.Ordinal);
    private static readonly Lock OpenLock = new();

    private readonly string _key;
    private int _refs;

    public SafeFileHandle Data { get; }
    public ChunkMap Map { get; }
    public string DataPath { get; }
    private uint ChunkCount { get; }
    private uint ChunkSize { get; }
    private ulong UncompressedSize { get; }

    private BlobCacheFiles(string key, SafeFileHandle data, ChunkMap map, string dataPath, RafsBlobInfo info)
    {
        _key = key;
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
            try
            {
                var map = ChunkMap.Open(mapPath, info.ChunkCount, info.ChunkSize, info.UncompressedSize, logger);
                if (map.WasReset) RandomAccess.SetLength(data, 0); // stale data is never read, but give the space back
                StorageLog.CacheOpened(logger, info.BlobId, dataPath, map.ReadyCount, info.ChunkCount);
                var files = new BlobCacheFiles(dataPath, data, map, dataPath, info) { _refs = 1 };
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

    public void Release()
    {
        lock (OpenLock)
        {
            if (--_refs > 0) return;
            Open.Remove(_key);
            Map.Dispose();
            Data.Dispose();
        }
    }
}
