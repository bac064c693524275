using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace VirtioFs.Storage.Cache;

/// <summary>A chunk fetch in progress; readers that need the same chunk wait for its result instead of fetching it again.</summary>
internal sealed class Inflight
{
    private int _result;
    private bool _done;

    /// <summary>Blocks until the fetcher completes; returns 0 or a positive errno.</summary>
    public int Wait()
    {
        lock (this)
        {
            while (!_done) Monitor.Wait(this);
            return _result;
        }
    }

    public void Set(int errno)
    {
        lock (this)
        {
            _result = errno;
            _done = true;
            Monitor.PulseAll(this);
        }
    }
}

internal enum ClaimResult { Ready, Claimed, Pending }

/// <summary>
/// Which chunks of one blob are in the cache (ready) and which are being fetched (pending), so one chunk is fetched
/// once however many readers want it (the shape of nydus storage/src/cache/state: an indexed chunk map plus an
/// in-flight tracker). The ready bits persist in <c>&lt;blobId&gt;.chunk_map</c>:
/// <code>
///   0  u32 magic 0x50414d43 ("CMAP")   4  u32 version (1)   8  u32 chunk_count   12 u32 chunk_size
///   16 u64 blob uncompressed size      24 u64 reserved (0)
///   32 bitmap, ceil(chunk_count / 8) bytes; bit (i % 8) of byte (i / 8) set = chunk i is ready
/// </code>
/// A bit is written only after the chunk's data was written and fdatasync'ed (the caller's order), so a crash can lose
/// ready bits but never set one whose data is not on disk. The map keeps two bitmaps for that: the ready bits readers
/// go by, and the durable bits (the file's image). A freshly written chunk can be ready before it is durable
/// (<see cref="MarkReadyVolatile"/>: its data sits in the page cache of the data file, which this process reads
/// coherently); <see cref="MarkDurable"/> persists it once a later fdatasync has covered it. A file whose header or
/// size does not match the blob is discarded and the blob starts empty.
/// </summary>
internal sealed class ChunkMap : IDisposable
{
    public const uint Magic = 0x50414D43;
    public const uint Version = 1;
    public const int HeaderSize = 32;

    private readonly ulong[] _bits;
    /// <summary>What the file says (or will say once written): only chunks whose data was fdatasync'ed.</summary>
    private readonly ulong[] _durable;
    /// <summary>Bumped by every <see cref="ClearReady"/>, so a batch synced across a clear is not made durable blindly.</summary>
    private long _epoch;
    private readonly uint _count;
    private readonly SafeFileHandle? _file;
    private readonly string? _path;
    private readonly ILogger _logger;
    private readonly Dictionary<uint, Inflight> _pending = new();
    private readonly Lock _lock = new();
    private int _ready;

    public uint Count => _count;
    public int ReadyCount => Volatile.Read(ref _ready);
    /// <summary>True when the file on disk was missing or unusable and the map started empty.</summary>
    public bool WasReset { get; }

    private ChunkMap(uint count, SafeFileHandle? file, string? path, ILogger logger, ulong[] bits, bool wasReset)
    {
        _count = count;
        _file = file;
        _path = path;
        _logger = logger;
        _bits = bits;
        _durable = (ulong[])bits.Clone();
        WasReset = wasReset;
        foreach (var w in bits) _ready += System.Numerics.BitOperations.PopCount(w);
    }

    private static int BitmapBytes(uint count) => (int)((count + 7) / 8);

    /// <summary>Opens (or creates) the persistent map of a blob with <paramref name="count"/> chunks.</summary>
    public static ChunkMap Open(string path, uint count, uint chunkSize, ulong uncompressedSize, ILogger logger)
    {
        var bits = new ulong[(count + 63) / 64];
        var file = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        try
        {
            int bytes = BitmapBytes(count);
            long len = RandomAccess.GetLength(file);
            string? problem = null;
            if (len == 0) problem = "";
            else if (len != HeaderSize + bytes) problem = $"size {len}, expected {HeaderSize + bytes}";
            else
            {
                Span<byte> h = stackalloc byte[HeaderSize];
                if (RandomAccess.Read(file, h, 0) != HeaderSize) problem = "short header";
                else if (BinaryPrimitives.ReadUInt32LittleEndian(h) != Magic) problem = "bad magic";
                else if (BinaryPrimitives.ReadUInt32LittleEndian(h[4..]) != Version) problem = "unknown version";
                else if (BinaryPrimitives.ReadUInt32LittleEndian(h[8..]) != count || BinaryPrimitives.ReadUInt32LittleEndian(h[12..]) != chunkSize
                    || BinaryPrimitives.ReadUInt64LittleEndian(h[16..]) != uncompressedSize)
                    problem = "written for a different blob layout";
                else
                {
                    var dst = MemoryMarshal.AsBytes(bits.AsSpan())[..bytes];
                    if (RandomAccess.Read(file, dst, HeaderSize) != bytes) problem = "short bitmap";
                    else if (!BitConverter.IsLittleEndian) problem = "big-endian host";
                    else if (count % 64 != 0 && bits.Length > 0)
                        bits[^1] &= (1UL << (int)(count % 64)) - 1; // bits past the last chunk mean nothing; drop them
                }
            }
            bool reset = problem is not null;
            if (reset)
            {
                if (problem!.Length > 0) StorageLog.ChunkMapReset(logger, path, problem);
                Array.Clear(bits);
                var fresh = new byte[HeaderSize + bytes];
                BinaryPrimitives.WriteUInt32LittleEndian(fresh, Magic);
                BinaryPrimitives.WriteUInt32LittleEndian(fresh.AsSpan(4), Version);
                BinaryPrimitives.WriteUInt32LittleEndian(fresh.AsSpan(8), count);
                BinaryPrimitives.WriteUInt32LittleEndian(fresh.AsSpan(12), chunkSize);
                BinaryPrimitives.WriteUInt64LittleEndian(fresh.AsSpan(16), uncompressedSize);
                RandomAccess.SetLength(file, 0);
                RandomAccess.Write(file, fresh, 0);
                RandomAccess.FlushToDisk(file);
            }
            return new ChunkMap(count, file, path, logger, bits, reset);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>A map kept only in memory (no cache directory: used for the in-flight tracking alone).</summary>
    public static ChunkMap InMemory(uint count, ILogger logger) => new(count, null, null, logger, new ulong[(count + 63) / 64], true);

    public bool IsReady(uint index) =>
        index < _count && (Volatile.Read(ref _bits[index >> 6]) & (1UL << (int)(index & 63))) != 0;

    /// <summary>
    /// Ready: the chunk is cached. Claimed: the caller must fetch it and then call <see cref="Complete"/> with the
    /// returned <paramref name="inflight"/>. Pending: another reader is fetching it; wait on <paramref name="inflight"/>.
    /// </summary>
    public ClaimResult TryClaim(uint index, out Inflight? inflight)
    {
        lock (_lock)
        {
            if (IsReady(index)) { inflight = null; return ClaimResult.Ready; }
            if (_pending.TryGetValue(index, out inflight)) return ClaimResult.Pending;
            inflight = new Inflight();
            _pending.Add(index, inflight);
            return ClaimResult.Claimed;
        }
    }

    /// <summary>Like <see cref="TryClaim"/> but never waits: returns false when the chunk is ready or pending.</summary>
    public bool TryClaimMissing(uint index, out Inflight? inflight)
    {
        lock (_lock)
        {
            inflight = null;
            if (IsReady(index) || _pending.ContainsKey(index)) return false;
            inflight = new Inflight();
            _pending.Add(index, inflight);
            return true;
        }
    }

    /// <summary>Ends a claimed fetch: waiters wake with <paramref name="errno"/> (0 = the chunk is now ready).</summary>
    public void Complete(uint index, Inflight inflight, int errno)
    {
        lock (_lock)
        {
            if (_pending.TryGetValue(index, out var cur) && ReferenceEquals(cur, inflight)) _pending.Remove(index);
        }
        inflight.Set(errno);
    }

    /// <summary>Marks chunks ready, in memory and then on disk. The caller has already made their data durable.</summary>
    public void MarkReady(ReadOnlySpan<uint> indexes)
    {
        lock (_lock)
        {
            SetReady(indexes, true);
            SetDurable(indexes, true, onlyIfReady: false);
        }
    }

    /// <summary>Marks chunks ready for readers of this process only: their data is written but not yet known to be on
    /// disk. Returns the epoch to hand to <see cref="MarkDurable"/> after the covering fdatasync.</summary>
    public long MarkReadyVolatile(ReadOnlySpan<uint> indexes)
    {
        lock (_lock)
        {
            SetReady(indexes, true);
            return _epoch;
        }
    }

    /// <summary>The epoch a batch of ready-but-volatile chunks is synced under (see <see cref="MarkDurable"/>).</summary>
    public long Epoch { get { lock (_lock) return _epoch; } }

    /// <summary>
    /// Persists the ready bits of chunks whose data an fdatasync that started after <paramref name="epoch"/> was read
    /// has covered. Returns false (and persists nothing) when a chunk was cleared since: a chunk cleared and fetched
    /// again may have data newer than that sync, so the caller retries the batch after the next one.
    /// </summary>
    public bool MarkDurable(ReadOnlySpan<uint> indexes, long epoch)
    {
        lock (_lock)
        {
            if (epoch != _epoch) return false;
            SetDurable(indexes, true, onlyIfReady: true);
            return true;
        }
    }

    /// <summary>Drops ready-but-volatile chunks whose sync failed, so they are fetched again; durable ones stay.</summary>
    public void ForgetVolatile(ReadOnlySpan<uint> indexes)
    {
        lock (_lock)
        {
            foreach (uint i in indexes)
            {
                if (i >= _count || (_durable[i >> 6] & (1UL << (int)(i & 63))) != 0) continue;
                SetReady([i], false);
            }
        }
    }

    /// <summary>Forgets a chunk (its cached copy proved corrupt), so the next read fetches it again.</summary>
    public void ClearReady(uint index)
    {
        lock (_lock)
        {
            _epoch++;
            SetReady([index], false);
            SetDurable([index], false, onlyIfReady: false);
        }
    }

    private void SetReady(ReadOnlySpan<uint> indexes, bool ready)
    {
        foreach (uint i in indexes)
        {
            if (i >= _count) continue;
            ref ulong word = ref _bits[i >> 6];
            ulong mask = 1UL << (int)(i & 63);
            if (((word & mask) != 0) == ready) continue;
            Volatile.Write(ref word, ready ? word | mask : word & ~mask);
            _ready += ready ? 1 : -1;
        }
    }

    /// <summary>Updates the durable bits and writes the bytes that changed. Caller holds the lock.</summary>
    private void SetDurable(ReadOnlySpan<uint> indexes, bool durable, bool onlyIfReady)
    {
        if (indexes.IsEmpty) return;
        int lo = int.MaxValue, hi = -1;
        foreach (uint i in indexes)
        {
            if (i >= _count) continue;
            ref ulong word = ref _durable[i >> 6];
            ulong mask = 1UL << (int)(i & 63);
            if (((word & mask) != 0) == durable) continue;
            if (onlyIfReady && (_bits[i >> 6] & mask) == 0) continue;
            word = durable ? word | mask : word & ~mask;
            lo = Math.Min(lo, (int)(i / 8));
            hi = Math.Max(hi, (int)(i / 8));
        }
        if (_file is null || hi < 0) return;
        var bytes = MemoryMarshal.AsBytes(_durable.AsSpan()).Slice(lo, hi - lo + 1);
        try
        {
            RandomAccess.Write(_file, bytes, HeaderSize + lo);
        }
        catch (IOException e)
        {
            // The bit stays set in memory (the data is durable); only a restart loses it.
            StorageLog.CacheIoFailed(_logger, _path!, "chunk map write", e.Message);
        }
    }

    public void Dispose() => _file?.Dispose();
}
