using System.Buffers.Binary;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.Fuzz;

/// <summary>
/// Descriptor tables, avail rings and indirect tables exactly as a guest leaves them in its memory, walked by the
/// device's <see cref="SplitQueue"/> and <see cref="DescriptorChain"/> (virtio 1.2 §2.7.5, §2.7.13). Input layout:
/// byte 0 = log2 queue size (0..4) and bit 7 = EVENT_IDX, byte 1 = avail idx, then the descriptor table
/// (16 bytes per entry), the avail ring entries (2 bytes each), and the rest lands in a 60 KiB data area at
/// <see cref="DataGpa"/> where indirect tables and buffers live. A walk must end, and every segment it accepts must lie
/// inside the mapped guest region.
/// </summary>
public sealed unsafe class ChainTarget : IFuzzTarget
{
    /// <summary>Guest-physical address of the only region (TestGuestMemory.Single's).</summary>
    public const ulong RegionGpa = 0x1000_0000;
    private const ulong RegionSize = 64 * 1024;
    private const ulong DescOffset = 0x0, AvailOffset = 0x200, UsedOffset = 0x400;
    public const ulong DataGpa = RegionGpa + 0x1000;
    private const int SegmentCapacity = 64;

    private readonly TestGuestMemory _guest = TestGuestMemory.Single(RegionSize);
    private readonly GuestMemory _device;
    private readonly byte* _deviceBase;
    private readonly IoSegment[] _readable = new IoSegment[SegmentCapacity];
    private readonly IoSegment[] _writable = new IoSegment[SegmentCapacity];

    public ChainTarget()
    {
        _device = _guest.CreateBackendView();
        if (!_device.TryTranslate(RegionGpa, RegionSize, out _deviceBase))
        {
            throw new InvalidOperationException("the backend view does not map the test region");
        }
    }

    public string Name => "chain";

    public int MaxInput => 2 + 16 * 16 + 2 * 16 + (int)(RegionSize - 0x1000);

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        // A direct chain: readable 40-byte request, writable 16 + 128 reply (a FUSE LOOKUP as the kernel lays it out).
        yield return ("direct", Build(3, 1, [new(DataGpa, 40, VirtqDescFlags.Next, 1), new(DataGpa + 64, 144, VirtqDescFlags.Write, 0)], [0]));
        // An indirect table of three descriptors in the data area.
        var table = new byte[48];
        WriteDesc(table, 0, DataGpa + 0x100, 40, VirtqDescFlags.Next, 1);
        WriteDesc(table, 1, DataGpa + 0x200, 16, VirtqDescFlags.Write | VirtqDescFlags.Next, 2);
        WriteDesc(table, 2, DataGpa + 0x300, 4096, VirtqDescFlags.Write, 0);
        yield return ("indirect", Build(3, 1, [new(DataGpa, 48, VirtqDescFlags.Indirect, 0)], [0], table));
        // Two chains published, the second wrapping the table.
        yield return ("two-chains", Build(2, 2,
            [new(DataGpa, 8, VirtqDescFlags.Next, 3), new(DataGpa + 8, 8, VirtqDescFlags.Write, 0), new(DataGpa + 16, 8, 0, 0), new(DataGpa + 24, 8, VirtqDescFlags.Write, 0)],
            [2, 0]));
        // A loop: the TTL must end it.
        yield return ("loop", Build(2, 1, [new(DataGpa, 8, VirtqDescFlags.Next, 1), new(DataGpa, 8, VirtqDescFlags.Next, 0)], [0]));
    }

    private readonly record struct Desc(ulong Addr, uint Len, ushort Flags, ushort Next);

    private static void WriteDesc(Span<byte> table, int i, ulong addr, uint len, ushort flags, ushort next)
    {
        Span<byte> d = table.Slice(16 * i, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    private static byte[] Build(int sizeLog2, byte availIdx, Desc[] descs, ushort[] ring, byte[]? data = null)
    {
        int size = 1 << sizeLog2;
        var bytes = new byte[2 + 16 * size + 2 * size + (data?.Length ?? 0)];
        bytes[0] = (byte)sizeLog2;
        bytes[1] = availIdx;
        for (int i = 0; i < descs.Length; i++)
        {
            WriteDesc(bytes.AsSpan(2), i, descs[i].Addr, descs[i].Len, descs[i].Flags, descs[i].Next);
        }
        for (int i = 0; i < ring.Length; i++)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 + 16 * size + 2 * i), ring[i]);
        }
        data?.CopyTo(bytes, 2 + 18 * size);
        return bytes;
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        if (input.Length < 2)
        {
            return;
        }
        int size = 1 << Math.Min(input[0] & 0x7, 4);
        bool eventIdx = (input[0] & 0x80) != 0;
        ushort availIdx = input[1];
        input = input[2..];

        // Lay the rings out in guest memory as the driver would.
        Span<byte> region = new(_guest.Host(RegionGpa, RegionSize), (int)RegionSize);
        region.Clear();
        ReadOnlySpan<byte> table = input[..Math.Min(input.Length, 16 * size)];
        table.CopyTo(region[(int)DescOffset..]);
        input = input[table.Length..];
        ReadOnlySpan<byte> ring = input[..Math.Min(input.Length, 2 * size)];
        ring.CopyTo(region[((int)AvailOffset + 4)..]);
        input = input[ring.Length..];
        BinaryPrimitives.WriteUInt16LittleEndian(region[((int)AvailOffset + 2)..], availIdx);
        input[..Math.Min(input.Length, (int)(RegionSize - 0x1000))].CopyTo(region[0x1000..]);

        var queue = new SplitQueue(_device) { EventIdx = eventIdx };
        if (!queue.TrySetSize((uint)size))
        {
            throw new FuzzFailure($"queue size {size} refused");
        }
        queue.SetAddresses(_guest.ToUser(RegionGpa + DescOffset), _guest.ToUser(RegionGpa + AvailOffset), _guest.ToUser(RegionGpa + UsedOffset));
        if (!queue.TryActivate(out string? error))
        {
            throw new FuzzFailure($"rings inside guest memory refused: {error}");
        }
        for (int popped = 0; popped <= size && queue.TryPopChain(out DescriptorChain chain); popped++)
        {
            ChainError collected = chain.TryCollect(_readable, _writable, out int nr, out int nw);
            if (collected == ChainError.None && chain.Head >= size)
            {
                // The device must check the head against the ring size before it reads the table (§2.7.13.1).
                throw new FuzzFailure($"head {chain.Head} of a {size}-entry ring accepted");
            }
            if (collected == ChainError.None)
            {
                CheckInside(_readable.AsSpan(0, nr));
                CheckInside(_writable.AsSpan(0, nw));
            }
            // The enumerator alone (the path the FUSE transport takes) must end too, within the spec's bound.
            int steps = 0;
            ChainEnumerator e = chain.GetEnumerator();
            while (e.MoveNext())
            {
                CheckInside(e.Current.Pointer, e.Current.Length);
                if (++steps > size + ChainEnumerator.MaxIndirectEntries)
                {
                    throw new FuzzFailure("descriptor walk exceeded the queue size plus the indirect table bound");
                }
            }
            queue.AddUsed(chain.Head, 0);
            if (queue.NeedsNotification())
            {
                queue.DisableNotification();
            }
            queue.EnableNotification();
        }
    }

    private void CheckInside(ReadOnlySpan<IoSegment> segments)
    {
        foreach (IoSegment s in segments)
        {
            CheckInside(s.Pointer, s.Length);
        }
    }

    private void CheckInside(byte* p, int length)
    {
        if (length < 0 || p < _deviceBase || p + length > _deviceBase + RegionSize)
        {
            throw new FuzzFailure($"segment of {length} bytes at offset {p - _deviceBase} lies outside guest memory");
        }
    }

    public void Dispose()
    {
        _device.Dispose();
        _guest.Dispose();
    }
}
