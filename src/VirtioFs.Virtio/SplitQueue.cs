using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace VirtioFs.Virtio;

/// <summary>
/// The device side of one split virtqueue (virtio spec 1.2 §2.7). Not thread-safe: one consumer pops chains, and
/// completions (<see cref="AddUsed"/>, <see cref="NeedsNotification"/>) must be serialised by the owner (the vhost-user
/// Vring does so with a lock).
/// </summary>
/// <remarks>
/// Ring addresses are front-end user addresses (vhost-user SET_VRING_ADDR); <see cref="TryActivate"/> translates them
/// into host pointers and must be called again after guest memory changed.
/// </remarks>
public sealed class SplitQueue(GuestMemory memory)
{
    /// <summary>Largest queue size the spec allows (§2.7: "Queue Size ... maximum 32768").</summary>
    public const int MaxSize = 32768;

    // SAFETY (the three ring pointers): set only by TryActivate, from GuestMemory.TryTranslateUser of the full size of
    // each ring for Size entries (§2.7.2 alignment checked), and cleared before guest memory changes (Deactivate
    // under the ring's used lock); every access below indexes them with a slot masked by Size - 1.
    private unsafe byte* _desc;
    private unsafe byte* _avail;
    private unsafe byte* _used;
    private ushort _signalledUsed;
    private bool _signalledValid;

    public GuestMemory Memory { get; } = memory;

    /// <summary>Queue size Q (0 until set).</summary>
    public ushort Size { get; private set; }

    public ulong DescUserAddr { get; private set; }
    public ulong AvailUserAddr { get; private set; }
    public ulong UsedUserAddr { get; private set; }

    /// <summary>VIRTIO_F_EVENT_IDX negotiated (§2.7.7.2 / §2.7.10).</summary>
    public bool EventIdx { get; set; }

    /// <summary>Next available-ring index we will consume (the vring "base").</summary>
    public ushort NextAvail { get; private set; }

    /// <summary>Next used-ring index we will produce.</summary>
    public ushort NextUsed { get; private set; }

    /// <summary>True once the rings are translated to host pointers.</summary>
    // SAFETY: compares the pointer only.
    public unsafe bool IsActive => _desc != null;

    /// <summary>Set when the driver published an impossible avail index; the queue then yields nothing until reset.</summary>
    public bool IsBroken { get; private set; }

    /// <summary>Sets Q; it must be a power of two between 1 and <paramref name="max"/> (≤ 32768).</summary>
    public bool TrySetSize(uint size, int max = MaxSize)
    {
        if (size == 0 || size > (uint)Math.Min(max, MaxSize) || (size & (size - 1)) != 0)
        {
            return false;
        }
        Size = (ushort)size;
        Deactivate();
        return true;
    }

    /// <summary>Records the ring addresses (front-end user addresses). Call <see cref="TryActivate"/> afterwards.</summary>
    public void SetAddresses(ulong descUserAddr, ulong availUserAddr, ulong usedUserAddr)
    {
        DescUserAddr = descUserAddr;
        AvailUserAddr = availUserAddr;
        UsedUserAddr = usedUserAddr;
        Deactivate();
    }

    /// <summary>
    /// SET_VRING_BASE: the next avail index to consume. The used index is re-read from guest memory when active
    /// (rust-vmm/vhost #183: after a guest reboot the rings restart at 0 and a stale NextUsed kills the device).
    /// </summary>
    public void SetBase(ushort nextAvail)
    {
        NextAvail = nextAvail;
        NextUsed = nextAvail;
        IsBroken = false;
        _signalledValid = false;
        if (IsActive)
        {
            NextUsed = LoadUsedIdx();
        }
    }

    /// <summary>Translates the ring addresses into host pointers, checking sizes and alignment (§2.7.2).</summary>
    // SAFETY: stores translated pointers whose ranges cover the whole rings (16Q, 6 + 2Q, 6 + 8Q bytes).
    public unsafe bool TryActivate(out string? error)
    {
        _desc = _avail = _used = null;
        if (Size == 0)
        {
            error = "queue size not set";
            return false;
        }
        // §2.7.2 alignment: descriptor table 16, available ring 2, used ring 4.
        if (DescUserAddr % 16 != 0 || AvailUserAddr % 2 != 0 || UsedUserAddr % 4 != 0)
        {
            error = "misaligned ring address";
            return false;
        }
        ulong q = Size;
        if (!Memory.TryTranslateUser(DescUserAddr, 16 * q, out byte* desc)
            || !Memory.TryTranslateUser(AvailUserAddr, 6 + 2 * q, out byte* avail)
            || !Memory.TryTranslateUser(UsedUserAddr, 6 + 8 * q, out byte* used))
        {
            error = $"ring addresses desc=0x{DescUserAddr:x} avail=0x{AvailUserAddr:x} used=0x{UsedUserAddr:x} " +
                    $"for size {Size} are not inside guest memory";
            return false;
        }
        _desc = desc;
        _avail = avail;
        _used = used;
        NextUsed = LoadUsedIdx();
        _signalledValid = false;
        error = null;
        return true;
    }

    /// <summary>Forgets the host pointers (before guest memory changes, or on reset).</summary>
    // SAFETY: clears the pointers only.
    public unsafe void Deactivate()
    {
        _desc = _avail = _used = null;
    }

    /// <summary>Back to the power-on state (RESET_DEVICE / disconnect).</summary>
    public void Reset()
    {
        Deactivate();
        Size = 0;
        DescUserAddr = AvailUserAddr = UsedUserAddr = 0;
        NextAvail = NextUsed = 0;
        EventIdx = false;
        IsBroken = false;
        _signalledValid = false;
    }

    /// <summary>
    /// Pops the next available chain head. The avail idx is loaded with acquire semantics so the ring entry and the
    /// descriptors it names are visible (§2.7.13.2 write barrier on the driver side pairs with this).
    /// </summary>
    // SAFETY: reads avail.idx and avail.ring[slot], slot < Size, inside the 6 + 2Q bytes translated for the ring.
    public unsafe bool TryPopChain(out DescriptorChain chain)
    {
        chain = default;
        if (_avail == null || IsBroken)
        {
            return false;
        }
        ushort availIdx = LoadAvailIdx();
        ushort pending = (ushort)(availIdx - NextAvail);
        if (pending == 0)
        {
            return false;
        }
        if (pending > Size)
        {
            // The driver claims more buffers than the ring holds: it is broken (§2.7.13.3 bounds idx - last_seen by Q).
            IsBroken = true;
            return false;
        }
        int slot = NextAvail & (Size - 1);
        ushort head = Le(Unsafe.ReadUnaligned<ushort>(_avail + 4 + 2 * slot));
        NextAvail++;
        chain = new DescriptorChain(Memory, _desc, Size, head);
        return true;
    }

    /// <summary>Returns a chain to the driver: write the used element, then publish the used idx with release.</summary>
    // SAFETY: writes used.ring[slot] (slot < Size) and used.idx, inside the 6 + 8Q bytes translated for the ring.
    public unsafe void AddUsed(ushort head, uint length)
    {
        if (_used == null)
        {
            return;
        }
        int slot = NextUsed & (Size - 1);
        byte* elem = _used + 4 + 8 * slot;
        Unsafe.WriteUnaligned(elem, Le((uint)head));
        Unsafe.WriteUnaligned(elem + 4, Le(length));
        NextUsed++;
        Volatile.Write(ref Unsafe.AsRef<ushort>(_used + 2), Le(NextUsed));
    }

    /// <summary>
    /// Whether the driver wants an interrupt for the used entries added since the last check. With EVENT_IDX this is
    /// the §2.7.10 test <c>(u16)(new - used_event - 1) &lt; (u16)(new - old)</c>; without it, avail.flags
    /// NO_INTERRUPT. A full fence orders our used idx store before the read of the driver's field.
    /// </summary>
    // SAFETY: reads avail.flags or used_event (offset 4 + 2Q), inside the 6 + 2Q bytes translated for the ring.
    public unsafe bool NeedsNotification()
    {
        if (_avail == null)
        {
            return false;
        }
        Interlocked.MemoryBarrier();
        ushort newIdx = NextUsed;
        if (!EventIdx)
        {
            ushort flags = Le(Volatile.Read(ref Unsafe.AsRef<ushort>(_avail)));
            return (flags & VringFlags.AvailNoInterrupt) == 0;
        }
        ushort old = _signalledUsed;
        bool hadOld = _signalledValid;
        _signalledUsed = newIdx;
        _signalledValid = true;
        if (!hadOld)
        {
            return true;
        }
        ushort usedEvent = Le(Volatile.Read(ref Unsafe.AsRef<ushort>(_avail + 4 + 2 * Size)));
        return (ushort)(newIdx - usedEvent - 1) < (ushort)(newIdx - old);
    }

    /// <summary>Asks the driver not to kick (without EVENT_IDX: used.flags NO_NOTIFY; with it there is nothing to do,
    /// the avail_event we last wrote already lies behind).</summary>
    // SAFETY: writes used.flags, inside the used ring.
    public unsafe void DisableNotification()
    {
        if (_used == null || EventIdx)
        {
            return;
        }
        Volatile.Write(ref Unsafe.AsRef<ushort>(_used), Le(VringFlags.UsedNoNotify));
    }

    /// <summary>
    /// Asks the driver to kick again: write avail_event = next avail (EVENT_IDX) or clear NO_NOTIFY, full fence,
    /// re-read the avail idx. Returns true when buffers arrived meanwhile: the caller must process them, since the
    /// driver may have checked our field before we wrote it (§2.7.10).
    /// </summary>
    // SAFETY: writes avail_event (offset 4 + 8Q) or used.flags, inside the 6 + 8Q bytes of the used ring.
    public unsafe bool EnableNotification()
    {
        if (_used == null || _avail == null)
        {
            return false;
        }
        if (EventIdx)
        {
            Volatile.Write(ref Unsafe.AsRef<ushort>(_used + 4 + 8 * Size), Le(NextAvail));
        }
        else
        {
            Volatile.Write(ref Unsafe.AsRef<ushort>(_used), (ushort)0);
        }
        Interlocked.MemoryBarrier();
        return !IsBroken && LoadAvailIdx() != NextAvail;
    }

    // SAFETY: avail.idx at offset 2 of the translated, 2-aligned available ring.
    private unsafe ushort LoadAvailIdx() => Le(Volatile.Read(ref Unsafe.AsRef<ushort>(_avail + 2)));

    // SAFETY: used.idx at offset 2 of the translated, 4-aligned used ring.
    private unsafe ushort LoadUsedIdx() => Le(Volatile.Read(ref Unsafe.AsRef<ushort>(_used + 2)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ushort Le(ushort v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Le(uint v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
}
