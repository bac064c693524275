using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.Microbenchmarks;

/// <summary>
/// The ring side of one guest READ: pop a head from the available ring (<see cref="SplitQueue.TryPopChain"/>), walk
/// its descriptors with every check and translate each buffer through <see cref="GuestMemory.TryTranslate"/>
/// (<see cref="DescriptorChain.TryCollect"/>), and put it on the used ring (<see cref="SplitQueue.AddUsed"/>). The
/// chain is laid out the way the Linux virtio-fs driver lays out a 128 KiB READ: one readable buffer for
/// fuse_in_header + fuse_read_in, one writable buffer for fuse_out_header, then one writable descriptor per 4 KiB page;
/// once as a direct chain and once through an indirect table (VIRTIO_RING_F_INDIRECT_DESC, which the driver uses
/// when it can). <see cref="MockSplitQueue"/> lays both out once; each call republishes the same head.
/// </summary>
[MemoryDiagnoser]
public unsafe class VirtqueueBenchmark
{
    private const int Pages = 32;
    private const int PageSize = 4096;

    private TestGuestMemory _guest = null!;
    private MockSplitQueue _driver = null!;
    private GuestMemory _memory = null!;
    private SplitQueue _queue = null!;
    private byte* _availRing;
    private ushort _availIdx;
    private ushort _directHead;
    private ushort _indirectHead;
    private readonly IoSegment[] _readable = new IoSegment[4];
    private readonly IoSegment[] _writable = new IoSegment[Pages + 2];

    [GlobalSetup]
    public void Setup()
    {
        _guest = TestGuestMemory.Single(8 << 20);
        _driver = new MockSplitQueue(_guest, 0, 256);
        var buffers = new ChainBuffer[Pages + 2];
        buffers[0] = _driver.Readable(new byte[80]);
        buffers[1] = _driver.Writable(16);
        for (int i = 0; i < Pages; i++)
        {
            buffers[i + 2] = new ChainBuffer(_guest.Allocate(PageSize, PageSize), PageSize, true);
        }
        _directHead = _driver.WriteChain(buffers);
        _indirectHead = _driver.TakeDescriptors(1);
        _driver.WriteDescriptor(_indirectHead, _driver.WriteIndirectTable(buffers), 16 * (uint)buffers.Length, VirtqDescFlags.Indirect, 0);

        _availRing = _guest.Host(_driver.AvailAddr, 4 + 2 * 256);
        _memory = _guest.CreateBackendView();
        _queue = new SplitQueue(_memory);
        if (!_queue.TrySetSize(256))
        {
            throw new InvalidOperationException("queue size refused");
        }
        _queue.SetAddresses(_driver.DescUserAddr, _driver.AvailUserAddr, _driver.UsedUserAddr);
        if (!_queue.TryActivate(out string? error))
        {
            throw new InvalidOperationException(error);
        }
        if (PopWalkComplete(_directHead) != Pages * PageSize + 16 + 80 || PopWalkComplete(_indirectHead) != Pages * PageSize + 16 + 80)
        {
            throw new InvalidOperationException("the chain did not walk");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _memory.Dispose();
        _driver.Dispose();
        _guest.Dispose();
    }

    [Benchmark(Baseline = true, Description = "pop + walk + translate + used: 34 direct descriptors")]
    public int DirectChain() => PopWalkComplete(_directHead);

    [Benchmark(Description = "pop + walk + translate + used: 1 INDIRECT -> 34-entry table")]
    public int IndirectChain() => PopWalkComplete(_indirectHead);

    /// <summary>The driver's publish (§2.7.13), written here without MockSplitQueue's lookups so that the guest side
    /// adds no cost or allocation to what is measured.</summary>
    private void Publish(ushort head)
    {
        Unsafe.WriteUnaligned(_availRing + 4 + 2 * (_availIdx % 256), head);
        _availIdx++;
        Volatile.Write(ref Unsafe.AsRef<ushort>(_availRing + 2), _availIdx);
    }

    private int PopWalkComplete(ushort head)
    {
        Publish(head);
        if (!_queue.TryPopChain(out DescriptorChain chain))
        {
            return -1;
        }
        ChainError error = chain.TryCollect(_readable, _writable, out int readableCount, out int writableCount);
        _queue.AddUsed(chain.Head, 0);
        if (error != ChainError.None)
        {
            return -(int)error;
        }
        long total = 0;
        foreach (IoSegment s in _readable.AsSpan(0, readableCount))
        {
            total += s.Length;
        }
        foreach (IoSegment s in _writable.AsSpan(0, writableCount))
        {
            total += s.Length;
        }
        return (int)total;
    }
}
