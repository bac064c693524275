using System.Diagnostics;

namespace VirtioFs.Fuse;

/// <summary>
/// The file operations nydus counts, in the order of its <c>StatsFop</c> enum (nydus-utils src/metrics.rs): the index
/// into <c>fop_hits</c>, <c>fop_errors</c> and <c>fop_cumulative_latency_total</c> of GET /api/v1/metrics.
/// nydus-snapshotter indexes those arrays with its own copy of this order (pkg/metrics/types/types.go: Read = 4).
/// </summary>
public enum StatsFop
{
    Getattr, Readlink, Open, Release, Read, Statfs, Getxattr, Listxattr, Opendir, Lookup, Readdir, Readdirplus, Access, Forget,
    BatchForget,
}

/// <summary>One request being served: nydusd's <c>FuseOp</c> of GET /api/v1/metrics/inflight.</summary>
public readonly record struct InflightOp(ulong Inode, uint Opcode, ulong Unique, ulong TimestampSecs);

/// <summary>A snapshot of <see cref="FsIoStats"/>, shaped like nydus's <c>FsIoStats</c> serialisation.</summary>
public sealed record FsIoStatsSnapshot(
    long DataRead, long NrOpens, long[] BlockCountRead, long[] FopHits, long[] FopErrors, long[] FopCumulativeLatencyTotal,
    long[] ReadLatencyDist);

/// <summary>
/// Filesystem I/O statistics with nydus's semantics (nydus-utils src/metrics.rs, <c>FsIoStats::fop_update</c> and
/// <c>latency_end</c>): per <see cref="StatsFop"/> a success count, an error count and cumulative latency in µs; bytes
/// read; reads by request size (&lt;1K, 1K, 4K, 16K, 64K, 128K, 512K, 1M and up); read latency in nydus's eight
/// ranges (≤200 µs, ≤1 ms, ≤20 ms, ≤50 ms, ≤500 ms, ≤1 s, ≤2 s, more); files open. Lock-free. Also the requests in
/// flight, each with its inode, opcode, unique and start time, in a fixed table (requests beyond it are served, just
/// not listed).
/// </summary>
public sealed class FsIoStats
{
    public const int FopCount = 15;
    public const int BlockSizeClasses = 8;
    public const int LatencyRanges = 8;
    /// <summary>Requests listed in flight at once; a FUSE server runs at most a few dozen workers.</summary>
    public const int InflightSlots = 256;

    private readonly long[] _hits = new long[FopCount];
    private readonly long[] _errors = new long[FopCount];
    private readonly long[] _latencyMicros = new long[FopCount];
    private readonly long[] _readLatency = new long[LatencyRanges];
    private readonly long[] _blockCount = new long[BlockSizeClasses];
    private long _dataRead;
    private long _nrOpens;

    // Slot state: 0 free, 1 being written, 2 published. The fields are written before the slot is published.
    private readonly int[] _slotState = new int[InflightSlots];
    private readonly InflightOp[] _slots = new InflightOp[InflightSlots];

    /// <summary>nydus's mapping of FUSE opcodes to the operations it counts; the others are not counted.</summary>
    public static bool TryMap(FuseOpcode op, out StatsFop fop)
    {
        fop = op switch
        {
            FuseOpcode.GetAttr => StatsFop.Getattr,
            FuseOpcode.ReadLink => StatsFop.Readlink,
            FuseOpcode.Open => StatsFop.Open,
            FuseOpcode.Release => StatsFop.Release,
            FuseOpcode.Read => StatsFop.Read,
            FuseOpcode.StatFs => StatsFop.Statfs,
            FuseOpcode.GetXattr => StatsFop.Getxattr,
            FuseOpcode.ListXattr => StatsFop.Listxattr,
            FuseOpcode.OpenDir => StatsFop.Opendir,
            FuseOpcode.Lookup => StatsFop.Lookup,
            FuseOpcode.ReadDir => StatsFop.Readdir,
            FuseOpcode.ReadDirPlus => StatsFop.Readdirplus,
            FuseOpcode.Access => StatsFop.Access,
            FuseOpcode.Forget => StatsFop.Forget,
            FuseOpcode.BatchForget => StatsFop.BatchForget,
            _ => (StatsFop)(-1),
        };
        return fop >= 0;
    }

    /// <summary>nydus's <c>request_size_index</c>: [0-3] &lt;1K, 1K.., 4K.., 16K..; [4-7] 64K.., 128K.., 512K.., 1M...</summary>
    public static int RequestSizeIndex(long size)
    {
        if (size < 0) size = 0;
        int ceil = System.Numerics.BitOperations.LeadingZeroCount((ulong)size >> 10);
        int shift = (Math.Max(ceil, 53) - 53) << 2;
        return (int)((0x0112_2334_5567UL >> shift) & 0xf);
    }

    /// <summary>nydus's <c>latency_micros_range_index</c>.</summary>
    public static int LatencyMicrosRangeIndex(long micros) => micros switch
    {
        <= 200 => 0,
        <= 1_000 => 1,
        <= 20_000 => 2,
        <= 50_000 => 3,
        <= 500_000 => 4,
        <= 1_000_000 => 5,
        <= 2_000_000 => 6,
        _ => 7,
    };

    /// <summary>Marks a request as started; returns a token for <see cref="End"/>.</summary>
    public InflightToken Begin(FuseOpcode op, ulong unique, ulong inode)
    {
        long start = Stopwatch.GetTimestamp();
        int first = (int)(unique % InflightSlots);
        for (int k = 0; k < InflightSlots; k++)
        {
            int i = (first + k) % InflightSlots;
            if (Volatile.Read(ref _slotState[i]) != 0 || Interlocked.CompareExchange(ref _slotState[i], 1, 0) != 0) continue;
            _slots[i] = new InflightOp(inode, (uint)op, unique, (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            Volatile.Write(ref _slotState[i], 2);
            return new InflightToken(start, i);
        }
        return new InflightToken(start, -1);
    }

    /// <summary>
    /// Counts a finished request: <paramref name="errno"/> 0 is a success; <paramref name="bytesRead"/> is the data a
    /// READ returned.
    /// </summary>
    public void End(FuseOpcode op, InflightToken token, int errno, long bytesRead)
    {
        if (token.Slot >= 0) Volatile.Write(ref _slotState[token.Slot], 0);
        Record(op, Stopwatch.GetElapsedTime(token.Start), errno, bytesRead);
    }

    /// <summary>Counts one operation that took <paramref name="elapsed"/>.</summary>
    public void Record(FuseOpcode op, TimeSpan elapsed, int errno, long bytesRead)
    {
        if (!TryMap(op, out StatsFop fop)) return;
        int f = (int)fop;
        long micros = Math.Max(0, (long)elapsed.TotalMicroseconds);
        bool ok = errno == 0;
        if (fop == StatsFop.Read)
        {
            // fop_update counts the request size of every read, failed ones as size 0; latency_end sits on the read path only.
            Interlocked.Increment(ref _blockCount[RequestSizeIndex(ok ? bytesRead : 0)]);
            Interlocked.Increment(ref _readLatency[LatencyMicrosRangeIndex(micros)]);
        }
        Interlocked.Add(ref _latencyMicros[f], micros);
        if (!ok)
        {
            Interlocked.Increment(ref _errors[f]);
            return;
        }
        Interlocked.Increment(ref _hits[f]);
        switch (fop)
        {
            case StatsFop.Read: Interlocked.Add(ref _dataRead, Math.Max(0, bytesRead)); break;
            case StatsFop.Open: Interlocked.Increment(ref _nrOpens); break;
            case StatsFop.Release: Interlocked.Decrement(ref _nrOpens); break;
        }
    }

    public FsIoStatsSnapshot Snapshot() => new(
        Volatile.Read(ref _dataRead), Math.Max(0, Volatile.Read(ref _nrOpens)), Read(_blockCount), Read(_hits), Read(_errors), Read(_latencyMicros),
        Read(_readLatency));

    /// <summary>The requests in flight now (nydusd answers 204 when there are none).</summary>
    public IReadOnlyList<InflightOp> Inflight()
    {
        var list = new List<InflightOp>();
        for (int i = 0; i < InflightSlots; i++)
        {
            if (Volatile.Read(ref _slotState[i]) != 2) continue;
            InflightOp op = _slots[i];
            // Re-check: a slot freed and reused while it was copied would give a torn entry.
            if (Volatile.Read(ref _slotState[i]) == 2 && op.Unique != 0) list.Add(op);
        }
        return list;
    }

    private static long[] Read(long[] a)
    {
        var copy = new long[a.Length];
        for (int i = 0; i < a.Length; i++) copy[i] = Volatile.Read(ref a[i]);
        return copy;
    }
}

/// <summary>What <see cref="FsIoStats.Begin"/> hands to <see cref="FsIoStats.End"/>.</summary>
public readonly record struct InflightToken(long Start, int Slot);
