using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using VirtioFs.Fuse;

namespace VirtioFs.Microbenchmarks;

/// <summary>
/// <see cref="SegmentCursor"/>, the one cursor every layer uses over request and reply segments, on the layouts a
/// READ comes in: the headers in one buffer (the Linux driver) or cut across three (a hostile or unusual driver), then
/// 32 page buffers for the data. Measured: reading fuse_in_header + fuse_read_in out of the segments, writing a
/// fuse_out_header, and slicing the next 128 KiB into segments of their own (the destination handed to preadv).
/// </summary>
[MemoryDiagnoser]
public unsafe class SegmentCursorBenchmark
{
    private const int Pages = 32;
    private const int PageSize = 4096;

    private byte* _memory;
    private IoSegment[] _oneBuffer = null!;
    private IoSegment[] _splitHeaders = null!;
    private IoSegment[] _reply = null!;
    private readonly IoSegment[] _slice = new IoSegment[Pages + 1];

    [GlobalSetup]
    public void Setup()
    {
        _memory = (byte*)NativeMemory.AlignedAlloc((Pages + 1) * PageSize, PageSize);
        NativeMemory.Clear(_memory, (Pages + 1) * PageSize);
        byte* pages = _memory + PageSize;
        *(FuseInHeader*)_memory = new FuseInHeader { len = 80, opcode = (uint)FuseOpcode.Read, unique = 4, nodeid = 2 };
        *(FuseReadIn*)(_memory + 40) = new FuseReadIn { fh = 7, size = Pages * PageSize };
        _oneBuffer = [new IoSegment(_memory, 80)];
        _splitHeaders = [new IoSegment(_memory, 7), new IoSegment(_memory + 7, 41), new IoSegment(_memory + 48, 32)];
        _reply = new IoSegment[Pages + 1];
        _reply[0] = new IoSegment(_memory + 128, 16);
        for (int i = 0; i < Pages; i++)
        {
            _reply[i + 1] = new IoSegment(pages + i * PageSize, PageSize);
        }
    }

    [GlobalCleanup]
    public void Cleanup() => NativeMemory.AlignedFree(_memory);

    [Benchmark(Baseline = true, Description = "read in header + read_in, one buffer")]
    public ulong ReadHeadersOneBuffer() => ReadHeaders(_oneBuffer);

    [Benchmark(Description = "read in header + read_in, split over 3 buffers")]
    public ulong ReadHeadersSplit() => ReadHeaders(_splitHeaders);

    [Benchmark(Description = "write out header, slice 128 KiB into 32 page segments")]
    public int WriteHeaderAndSlice()
    {
        var cursor = new SegmentCursor(_reply);
        var header = new FuseOutHeader { len = 16 + Pages * PageSize, unique = 4 };
        if (!cursor.TryWrite(MemoryMarshal.AsBytes(new ReadOnlySpan<FuseOutHeader>(ref header))))
        {
            return -1;
        }
        return cursor.Slice(Pages * PageSize, _slice);
    }

    private static ulong ReadHeaders(ReadOnlySpan<IoSegment> segments)
    {
        var cursor = new SegmentCursor(segments);
        if (!cursor.TryRead(out FuseInHeader header) || !cursor.TryRead(out FuseReadIn read))
        {
            return 0;
        }
        return header.unique + read.fh + read.size;
    }
}
