using System.Text;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;

namespace VirtioFs.Storage.Tests;

/// <summary>
/// A small image built by the tests themselves: 64 KiB chunks, files of known content, one data blob.
/// big.bin has 16 chunks of compressible data, other.bin 4 chunks, small.txt one, sparse.bin data/hole/data.
/// </summary>
public sealed class ImageFixture : IDisposable
{
    public const uint ChunkSize = 64 * 1024;

    public string Root { get; }
    public string BlobDir { get; }
    public string CacheDir { get; }
    public RafsImage Image { get; }
    public Dictionary<string, byte[]> Content { get; } = new();
    public RafsBlobInfo Blob => Image.Blobs[0];
    public string BlobPath => Path.Combine(BlobDir, Blob.BlobId);

    public ImageFixture(Compressor compressor = Compressor.Zstd, IReadOnlyList<string>? prefetch = null, int fsVersion = 6)
    {
        Root = Path.Combine(Path.GetTempPath(), $"vfs-storage-{Guid.NewGuid():N}");
        var src = Path.Combine(Root, "src");
        BlobDir = Path.Combine(Root, "blobs");
        CacheDir = Path.Combine(Root, "cache");
        Directory.CreateDirectory(src);
        Directory.CreateDirectory(BlobDir);
        var rnd = new Random(1234);
        Add(src, "big.bin", Compressible(rnd, 16 * (int)ChunkSize));
        Add(src, "other.bin", Compressible(rnd, 4 * (int)ChunkSize - 100));
        Add(src, "small.txt", Encoding.ASCII.GetBytes("a small file of one chunk\n"));
        Directory.CreateDirectory(Path.Combine(src, "dir"));
        Add(src, "dir/nested.bin", Compressible(rnd, 2 * (int)ChunkSize));
        // data, a two-chunk hole, data
        var sparse = new byte[4 * ChunkSize];
        rnd.NextBytes(sparse.AsSpan(0, (int)ChunkSize));
        rnd.NextBytes(sparse.AsSpan(3 * (int)ChunkSize));
        using (var fs = File.Create(Path.Combine(src, "sparse.bin")))
        {
            fs.Write(sparse, 0, (int)ChunkSize);
            fs.Seek(2 * ChunkSize, SeekOrigin.Current);
            fs.Write(sparse, 3 * (int)ChunkSize, (int)ChunkSize);
        }
        Content["sparse.bin"] = sparse;
        var root = DirectorySource.Load(src);
        var r = ImageBuilder.Build(root, new BuildOptions
        {
            BlobDir = BlobDir, Bootstrap = Path.Combine(Root, "bootstrap"), Compressor = compressor, Digester = Digester.Blake3,
            ChunkSize = ChunkSize, BuildTime = 1_700_000_000, PrefetchFiles = prefetch ?? [], FsVersion = fsVersion,
        });
        Image = RafsImage.Open(r.Bootstrap);
    }

    private void Add(string src, string name, byte[] data)
    {
        File.WriteAllBytes(Path.Combine(src, name), data);
        Content[name] = data;
    }

    /// <summary>Bytes from a small alphabet: compress well but each chunk differs (no dedup).</summary>
    private static byte[] Compressible(Random rnd, int n)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)('a' + rnd.Next(4));
        return b;
    }

    public ulong Ino(string path)
    {
        ulong ino = Image.RootIno;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            int rc = Image.Lookup(ino, Encoding.UTF8.GetBytes(part), out ino);
            if (rc != 0) throw new FileNotFoundException(path);
        }
        return ino;
    }

    public List<RafsChunk> Chunks(string path)
    {
        var list = new List<RafsChunk>();
        Assert.Equal(0, Image.GetChunks(Ino(path), list));
        return list;
    }

    public ulong Size(string path) => (ulong)Content[path].Length;

    public void Dispose()
    {
        Image.Dispose();
        try { Directory.Delete(Root, true); } catch (IOException) { }
    }
}

/// <summary>Wraps a backend, records every read and can fail or hold reads on demand.</summary>
public sealed class CountingBackend(IBlobBackend inner) : IBlobBackend
{
    private readonly Lock _lock = new();
    private readonly List<(string Blob, ulong Offset, int Length)> _reads = new();

    /// <summary>Called before each read with its range; return a nonzero errno to fail the read instead.</summary>
    public Func<ulong, int, int>? BeforeRead { get; set; }

    public int Count { get { lock (_lock) return _reads.Count; } }
    public long Bytes { get { lock (_lock) return _reads.Sum(r => (long)r.Length); } }
    public List<(string Blob, ulong Offset, int Length)> Reads { get { lock (_lock) return _reads.ToList(); } }

    public int ReadAt(string blobId, ulong offset, Span<byte> destination)
    {
        lock (_lock) _reads.Add((blobId, offset, destination.Length));
        int rc = BeforeRead?.Invoke(offset, destination.Length) ?? 0;
        return rc != 0 ? rc : inner.ReadAt(blobId, offset, destination);
    }

    public BackendMetrics Metrics => inner.Metrics;

    public void Dispose() => inner.Dispose();
}

/// <summary>A clock that moves only when told; timers fire on <see cref="Advance"/>.</summary>
public sealed class ManualTimeProvider : TimeProvider
{
    private readonly Lock _lock = new();
    private readonly List<ManualTimer> _timers = new();
    private long _ticks;

    /// <summary>Released each time a timer is armed (prefetch waiting for bandwidth).</summary>
    public SemaphoreSlim TimerArmed { get; } = new(0);

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    public override long GetTimestamp() { lock (_lock) return _ticks; }
    public override DateTimeOffset GetUtcNow() { lock (_lock) return new DateTimeOffset(_ticks, TimeSpan.Zero); }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var t = new ManualTimer(this, callback, state);
        t.Change(dueTime, period);
        return t;
    }

    public void Advance(TimeSpan by)
    {
        List<ManualTimer> due;
        lock (_lock)
        {
            _ticks += by.Ticks;
            due = _timers.Where(t => t.Due <= _ticks).ToList();
            foreach (var t in due) _timers.Remove(t);
        }
        foreach (var t in due) t.Fire();
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public long Due;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._lock)
            {
                owner._timers.Remove(this);
                if (dueTime == Timeout.InfiniteTimeSpan) return true;
                Due = owner._ticks + dueTime.Ticks;
                owner._timers.Add(this);
            }
            owner.TimerArmed.Release();
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose()
        {
            lock (owner._lock) owner._timers.Remove(this);
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
