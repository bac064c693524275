using System.Runtime.InteropServices;
using System.Text;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;

namespace VirtioFs.Microbenchmarks;

/// <summary>
/// The FUSE dispatch hot path as a virtio-fs queue drives it: describe one request's guest buffers as segments
/// (<see cref="FuseRequestBuffers.Clear"/> / Add*), let <see cref="FuseServer.Handle"/> parse it in place, call the
/// filesystem and write the reply in place. The filesystem is a stub that does no I/O, so what is measured is the
/// transport-independent cost per request, which must stay allocation-free (MemoryDiagnoser: Allocated = 0 B).
/// The multi-segment cases lay requests out the way the Linux virtio-fs driver does: the in header and arguments in
/// one buffer, READ destinations and WRITE payloads as one descriptor per 4 KiB page; the split-header case cuts
/// fuse_in_header and fuse_read_in across three buffers, which a hostile or unusual driver may do.
/// </summary>
[MemoryDiagnoser]
public unsafe class FuseDispatchBenchmark
{
    private const int Pages = 32; // a 128 KiB READ or WRITE, the kernel's default max_read with readahead
    private const int PageSize = 4096;

    private FuseServer _server = null!;
    private FuseRequestBuffers _buffers = null!;
    private byte* _memory;
    private byte* _lookup;
    private int _lookupLength;
    private byte* _getattr;
    private byte* _read;
    private byte* _write;
    private byte* _reply;
    private byte* _pages;

    [GlobalSetup]
    public void Setup()
    {
        _server = new FuseServer(new StubFileSystem(), new FuseServerOptions(), NullLogger.Instance);
        _buffers = new FuseRequestBuffers(64);
        _memory = (byte*)NativeMemory.AlignedAlloc(4 * PageSize + (Pages + 1) * PageSize, PageSize);
        NativeMemory.Clear(_memory, 4 * PageSize + (Pages + 1) * PageSize);
        _lookup = _memory;
        _getattr = _memory + 512;
        _read = _memory + 1024;
        _write = _memory + 1536;
        _reply = _memory + PageSize;
        _pages = _memory + 4 * PageSize;

        // INIT once, like the kernel, so every later request is dispatched.
        byte* init = _memory + 2048;
        var initIn = new FuseInitIn { major = 7, minor = 38, max_readahead = 1 << 20 };
        int initLength = 40 + sizeof(FuseInitIn);
        *(FuseInHeader*)init = new FuseInHeader { len = (uint)initLength, opcode = (uint)FuseOpcode.Init, unique = 1 };
        *(FuseInitIn*)(init + 40) = initIn;
        _buffers.Clear();
        _buffers.AddReadable(init, initLength);
        _buffers.AddWritable(_reply, PageSize);
        if (_server.Handle(_buffers).Length != 16 + sizeof(FuseInitOut))
        {
            throw new InvalidOperationException("INIT was refused");
        }

        byte[] name = Encoding.ASCII.GetBytes("some-file-name.txt\0");
        _lookupLength = 40 + name.Length;
        *(FuseInHeader*)_lookup = new FuseInHeader { len = (uint)_lookupLength, opcode = (uint)FuseOpcode.Lookup, unique = 2, nodeid = 1 };
        name.CopyTo(new Span<byte>(_lookup + 40, name.Length));

        *(FuseInHeader*)_getattr = new FuseInHeader { len = 40 + 16, opcode = (uint)FuseOpcode.GetAttr, unique = 3, nodeid = 2 };
        *(FuseGetattrIn*)(_getattr + 40) = default;

        *(FuseInHeader*)_read = new FuseInHeader { len = 80, opcode = (uint)FuseOpcode.Read, unique = 4, nodeid = 2 };
        *(FuseReadIn*)(_read + 40) = new FuseReadIn { fh = 7, offset = 0, size = Pages * PageSize };

        *(FuseInHeader*)_write = new FuseInHeader { len = 80 + Pages * PageSize, opcode = (uint)FuseOpcode.Write, unique = 5, nodeid = 2 };
        *(FuseWriteIn*)(_write + 40) = new FuseWriteIn { fh = 7, offset = 0, size = Pages * PageSize };
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _buffers.Dispose();
        NativeMemory.AlignedFree(_memory);
    }

    [Benchmark(Baseline = true, Description = "LOOKUP, one readable + one writable buffer")]
    public int Lookup()
    {
        _buffers.Clear();
        _buffers.AddReadable(_lookup, _lookupLength);
        _buffers.AddWritable(_reply, 16 + 128);
        return _server.Handle(_buffers).Length;
    }

    [Benchmark(Description = "GETATTR, one readable + one writable buffer")]
    public int GetAttr()
    {
        _buffers.Clear();
        _buffers.AddReadable(_getattr, 56);
        _buffers.AddWritable(_reply, 16 + 104);
        return _server.Handle(_buffers).Length;
    }

    [Benchmark(Description = "READ 128 KiB, out header + 32 page buffers")]
    public int ReadMultiSegment()
    {
        _buffers.Clear();
        _buffers.AddReadable(_read, 80);
        _buffers.AddWritable(_reply, 16);
        for (int i = 0; i < Pages; i++)
        {
            _buffers.AddWritable(_pages + i * PageSize, PageSize);
        }
        return _server.Handle(_buffers).Length;
    }

    [Benchmark(Description = "READ, headers split over 3 buffers + 32 page buffers")]
    public int ReadSplitHeader()
    {
        _buffers.Clear();
        _buffers.AddReadable(_read, 7);
        _buffers.AddReadable(_read + 7, 41);
        _buffers.AddReadable(_read + 48, 32);
        _buffers.AddWritable(_reply, 16);
        for (int i = 0; i < Pages; i++)
        {
            _buffers.AddWritable(_pages + i * PageSize, PageSize);
        }
        return _server.Handle(_buffers).Length;
    }

    [Benchmark(Description = "WRITE 128 KiB, headers + 32 page payload buffers")]
    public int WriteMultiSegment()
    {
        _buffers.Clear();
        _buffers.AddReadable(_write, 80);
        for (int i = 0; i < Pages; i++)
        {
            _buffers.AddReadable(_pages + i * PageSize, PageSize);
        }
        _buffers.AddWritable(_reply, 16 + 8);
        return _server.Handle(_buffers).Length;
    }

    /// <summary>Answers without I/O: a fixed entry and attributes, READ and WRITE report the whole span done.</summary>
    private sealed class StubFileSystem : IFileSystem
    {
        private static readonly FuseAttr Attr = new() { ino = 2, size = 4096, mode = 0x81A4, nlink = 1, blksize = 4096 };

        public int Init(FuseInitFlags negotiated) => 0;
        public void Destroy() { }

        public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
        {
            entry = new FuseEntry { NodeId = 2, Attr = Attr, EntryTimeout = TimeSpan.FromSeconds(1), AttrTimeout = TimeSpan.FromSeconds(1) };
            return 0;
        }

        public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
        {
            attr = Attr;
            timeout = TimeSpan.FromSeconds(1);
            return 0;
        }

        public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
        {
            int n = 0;
            foreach (ref readonly IoSegment s in destination)
            {
                n += s.Length;
            }
            bytesRead = n;
            return 0;
        }

        public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
        {
            int n = 0;
            foreach (ref readonly IoSegment s in source)
            {
                n += s.Length;
            }
            bytesWritten = n;
            return 0;
        }

        // Everything else is outside the measured paths.
        public void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup) { }
        public void BatchForget(in FuseContext ctx, ReadOnlySpan<FuseForgetOne> forgets) { }
    }
}
