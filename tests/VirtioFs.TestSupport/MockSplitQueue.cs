using System.Runtime.CompilerServices;
using Tmds.Linux;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;

namespace VirtioFs.TestSupport;

/// <summary>A guest buffer to put in a chain: guest address, length and direction.</summary>
public readonly record struct ChainBuffer(ulong Addr, uint Length, bool Writable);

/// <summary>
/// The driver side of a split virtqueue laid out in <see cref="TestGuestMemory"/> (virtio spec 1.2 §2.7): writes
/// descriptors (direct or indirect), publishes heads in the available ring, kicks through an eventfd, reads the used
/// ring and waits on the call eventfd. Not thread-safe; one test thread drives it.
/// </summary>
public sealed unsafe class MockSplitQueue : IDisposable
{
    private ushort _nextDesc;
    private ushort _availIdx;
    private ushort _lastUsedSeen;

    public MockSplitQueue(TestGuestMemory memory, int index, ushort size, TestRegion? region = null)
    {
        if (size == 0 || (size & (size - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(size));
        }
        Memory = memory;
        Index = index;
        Size = size;
        DescAddr = memory.Allocate(16UL * size, 16, region);
        AvailAddr = memory.Allocate(6UL + 2UL * size, 2, region);
        UsedAddr = memory.Allocate(6UL + 8UL * size, 4, region);
        KickFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        CallFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (KickFd < 0 || CallFd < 0)
        {
            throw new IOException("eventfd failed");
        }
    }

    public TestGuestMemory Memory { get; }
    public int Index { get; }
    public ushort Size { get; }
    public ulong DescAddr { get; }
    public ulong AvailAddr { get; }
    public ulong UsedAddr { get; }
    /// <summary>Eventfd the test writes to kick the device (send it with SET_VRING_KICK).</summary>
    public int KickFd { get; }
    /// <summary>Eventfd the device writes to interrupt the guest (send it with SET_VRING_CALL).</summary>
    public int CallFd { get; }

    public ulong DescUserAddr => Memory.ToUser(DescAddr);
    public ulong AvailUserAddr => Memory.ToUser(AvailAddr);
    public ulong UsedUserAddr => Memory.ToUser(UsedAddr);

    /// <summary>The avail idx we published last.</summary>
    public ushort AvailIdx => _availIdx;

    /// <summary>The device's used idx as it is in guest memory now.</summary>
    public ushort UsedIdx => Volatile.Read(ref Unsafe.AsRef<ushort>(Memory.Host(UsedAddr + 2, 2)));

    /// <summary>used.flags (bit 0 = the device asks for no kicks).</summary>
    public ushort UsedFlags => Volatile.Read(ref Unsafe.AsRef<ushort>(Memory.Host(UsedAddr, 2)));

    /// <summary>avail_event written by the device (EVENT_IDX): kick when avail idx passes it.</summary>
    public ushort AvailEvent => Volatile.Read(ref Unsafe.AsRef<ushort>(Memory.Host(UsedAddr + 4 + 8UL * Size, 2)));

    /// <summary>used_event (EVENT_IDX): interrupt us only when used idx passes it.</summary>
    public ushort UsedEvent
    {
        get => Memory.Read<ushort>(AvailAddr + 4 + 2UL * Size);
        set => Volatile.Write(ref Unsafe.AsRef<ushort>(Memory.Host(AvailAddr + 4 + 2UL * Size, 2)), value);
    }

    /// <summary>avail.flags (bit 0 = no interrupts, used without EVENT_IDX).</summary>
    public ushort AvailFlags
    {
        get => Memory.Read<ushort>(AvailAddr);
        set => Volatile.Write(ref Unsafe.AsRef<ushort>(Memory.Host(AvailAddr, 2)), value);
    }

    /// <summary>A readable buffer holding a copy of <paramref name="data"/>.</summary>
    public ChainBuffer Readable(ReadOnlySpan<byte> data) => new(Memory.AllocateBytes(data), (uint)data.Length, false);

    /// <summary>A zeroed writable buffer of <paramref name="length"/> bytes.</summary>
    public ChainBuffer Writable(uint length) => new(Memory.Allocate(Math.Max(length, 1u), 8), length, true);

    /// <summary>Writes one raw descriptor (for malformed-chain tests).</summary>
    public void WriteDescriptor(ushort index, ulong addr, uint len, ushort flags, ushort next)
    {
        if (index >= Size)
        {
            throw new ArgumentOutOfRangeException(nameof(index));
        }
        Memory.Write(DescAddr + 16UL * index, new VringDesc { addr = addr, len = len, flags = flags, next = next });
    }

    /// <summary>Lays out a direct chain in free descriptor slots and publishes it. Returns the head index.</summary>
    public ushort AddChain(params ChainBuffer[] buffers)
    {
        ushort head = WriteChain(buffers);
        Publish(head);
        return head;
    }

    /// <summary>Writes an indirect descriptor table for <paramref name="buffers"/> and publishes a single INDIRECT
    /// descriptor pointing at it (§2.7.5.3). Returns the head index.</summary>
    public ushort AddIndirectChain(params ChainBuffer[] buffers)
    {
        ulong table = WriteIndirectTable(buffers);
        ushort head = TakeDescriptors(1);
        WriteDescriptor(head, table, (uint)(16 * buffers.Length), VirtqDescFlags.Indirect, 0);
        Publish(head);
        return head;
    }

    /// <summary>Writes an indirect table (entries chained 0 -> 1 -> ...) into guest memory and returns its address.</summary>
    public ulong WriteIndirectTable(params ChainBuffer[] buffers)
    {
        ulong table = Memory.Allocate(16UL * (ulong)Math.Max(buffers.Length, 1), 16);
        for (int i = 0; i < buffers.Length; i++)
        {
            ushort flags = (ushort)((buffers[i].Writable ? VirtqDescFlags.Write : 0) | (i + 1 < buffers.Length ? VirtqDescFlags.Next : 0));
            Memory.Write(table + 16UL * (ulong)i,
                new VringDesc { addr = buffers[i].Addr, len = buffers[i].Length, flags = flags, next = (ushort)(i + 1) });
        }
        return table;
    }

    /// <summary>Writes a direct chain without publishing it. Returns the head index.</summary>
    public ushort WriteChain(params ChainBuffer[] buffers)
    {
        if (buffers.Length == 0)
        {
            throw new ArgumentException("a chain needs at least one buffer", nameof(buffers));
        }
        ushort first = TakeDescriptors(buffers.Length);
        for (int i = 0; i < buffers.Length; i++)
        {
            ushort index = (ushort)((first + i) % Size);
            bool last = i == buffers.Length - 1;
            ushort flags = (ushort)((buffers[i].Writable ? VirtqDescFlags.Write : 0) | (last ? 0 : VirtqDescFlags.Next));
            WriteDescriptor(index, buffers[i].Addr, buffers[i].Length, flags, (ushort)((index + 1) % Size));
        }
        return first;
    }

    /// <summary>Reserves consecutive descriptor slots (round robin; tests keep fewer than Size outstanding).</summary>
    public ushort TakeDescriptors(int count)
    {
        if (count > Size)
        {
            throw new ArgumentOutOfRangeException(nameof(count));
        }
        if (_nextDesc + count > Size)
        {
            _nextDesc = 0;
        }
        ushort first = _nextDesc;
        _nextDesc = (ushort)((_nextDesc + count) % Size);
        return first;
    }

    /// <summary>Puts a head in the available ring and publishes the new idx with release semantics (§2.7.13).</summary>
    public void Publish(ushort head)
    {
        Memory.Write(AvailAddr + 4 + 2UL * (ulong)(_availIdx % Size), head);
        _availIdx++;
        Volatile.Write(ref Unsafe.AsRef<ushort>(Memory.Host(AvailAddr + 2, 2)), _availIdx);
    }

    /// <summary>Publishes an arbitrary avail idx (for broken-driver tests).</summary>
    public void SetAvailIdx(ushort idx)
    {
        _availIdx = idx;
        Volatile.Write(ref Unsafe.AsRef<ushort>(Memory.Host(AvailAddr + 2, 2)), idx);
    }

    /// <summary>Kicks the device.</summary>
    public void Kick()
    {
        ulong one = 1;
        write(KickFd, &one, sizeof(ulong));
    }

    /// <summary>Waits for an interrupt on the call eventfd and consumes it.</summary>
    public bool WaitForCall(TimeSpan timeout) => WaitAndDrain(CallFd, timeout);

    /// <summary>Consumes a pending interrupt without waiting; true if there was one.</summary>
    public bool TryConsumeCall() => WaitAndDrain(CallFd, TimeSpan.Zero);

    private static bool WaitAndDrain(int fd, TimeSpan timeout)
    {
        pollfd p = new() { fd = fd, events = POLLIN };
        int r = poll(&p, 1, (int)timeout.TotalMilliseconds);
        if (r <= 0)
        {
            return false;
        }
        ulong value;
        read(fd, &value, sizeof(ulong));
        return true;
    }

    /// <summary>Reads the next used element if the device published one.</summary>
    public bool TryGetUsed(out VringUsedElem element)
    {
        if (UsedIdx == _lastUsedSeen)
        {
            element = default;
            return false;
        }
        element = Memory.Read<VringUsedElem>(UsedAddr + 4 + 8UL * (ulong)(_lastUsedSeen % Size));
        _lastUsedSeen++;
        return true;
    }

    /// <summary>Waits (polling the used ring, not relying on interrupts) for the next used element.</summary>
    public VringUsedElem WaitForUsed(TimeSpan? timeout = null)
    {
        DateTime deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (true)
        {
            if (TryGetUsed(out VringUsedElem e))
            {
                return e;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"queue {Index}: no used element after used idx {_lastUsedSeen}");
            }
            Thread.Sleep(1);
        }
    }

    /// <summary>Zeroes the rings and the driver's counters, as a rebooted guest driver would.</summary>
    public void ResetRings()
    {
        Memory.Span(DescAddr, 16 * Size).Clear();
        Memory.Span(AvailAddr, 6 + 2 * Size).Clear();
        Memory.Span(UsedAddr, 6 + 8 * Size).Clear();
        _nextDesc = 0;
        _availIdx = 0;
        _lastUsedSeen = 0;
    }

    public void Dispose()
    {
        close(KickFd);
        close(CallFd);
    }
}
