using System.Runtime.InteropServices;
using System.Text;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;

namespace VirtioFs.Microbenchmarks;

/// <summary>
/// The passthrough filesystem's READ: look the handle up, lease its fd and preadv straight into the request's
/// segments (<c>PassthroughFileSystem.Files.cs:Read</c>). The file lives in a temporary directory and is read once
/// first, so the page cache serves it and the figure is our per-call cost plus the kernel's copy, not the disk.
/// A 4 KiB read into one segment shows the fixed cost; 128 KiB into 32 page segments the READ the kernel sends most.
/// </summary>
[MemoryDiagnoser]
public unsafe class PassthroughReadBenchmark
{
    private const int Pages = 32;
    private const int PageSize = 4096;

    private string _directory = null!;
    private PassthroughFileSystem _fs = null!;
    private ulong _nodeId;
    private ulong _handle;
    private byte* _memory;
    private IoSegment[] _onePage = null!;
    private IoSegment[] _pages = null!;
    private static readonly FuseContext Root = new(0, 0, 0, 1);

    [GlobalSetup]
    public void Setup()
    {
        _directory = Directory.CreateTempSubdirectory("vfs-bench-").FullName;
        byte[] content = new byte[1 << 20];
        new Random(1).NextBytes(content);
        File.WriteAllBytes(Path.Combine(_directory, "file"), content);
        _fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _directory }, NullLogger.Instance);
        _fs.Init(FuseInitFlags.None);
        if (_fs.Lookup(Root, 1, Encoding.ASCII.GetBytes("file"), out FuseEntry entry) != 0
            || _fs.Open(Root, entry.NodeId, 0 /* O_RDONLY */, 0, out FuseOpenResult open) != 0)
        {
            throw new InvalidOperationException("cannot open the benchmark file");
        }
        _nodeId = entry.NodeId;
        _handle = open.Handle;
        _memory = (byte*)NativeMemory.AlignedAlloc(Pages * PageSize, PageSize);
        _onePage = [new IoSegment(_memory, PageSize)];
        _pages = new IoSegment[Pages];
        for (int i = 0; i < Pages; i++)
        {
            _pages[i] = new IoSegment(_memory + i * PageSize, PageSize);
        }
        if (Read128K() != Pages * PageSize || !new ReadOnlySpan<byte>(_memory, Pages * PageSize).SequenceEqual(content.AsSpan(0, Pages * PageSize)))
        {
            throw new InvalidOperationException("the read returned the wrong bytes");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _fs.Release(Root, _nodeId, _handle, 0, 0, 0);
        _fs.Dispose();
        NativeMemory.AlignedFree(_memory);
        Directory.Delete(_directory, true);
    }

    [Benchmark(Baseline = true, Description = "READ 4 KiB into 1 segment (preadv)")]
    public int Read4K() => _fs.Read(Root, _nodeId, _handle, 8192, _onePage, 0, out int n) == 0 ? n : -1;

    [Benchmark(Description = "READ 128 KiB into 32 page segments (preadv)")]
    public int Read128K() => _fs.Read(Root, _nodeId, _handle, 0, _pages, 0, out int n) == 0 ? n : -1;
}
