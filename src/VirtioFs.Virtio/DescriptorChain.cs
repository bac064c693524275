using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace VirtioFs.Virtio;

/// <summary>Why a descriptor chain was refused. Every refused chain is still returned to the used ring with length 0.</summary>
public enum ChainError
{
    None = 0,
    /// <summary>The head index from the available ring is not below the queue size.</summary>
    HeadOutOfRange,
    /// <summary>A <c>next</c> field points outside the (direct or indirect) table.</summary>
    NextOutOfRange,
    /// <summary>More descriptors than the table holds: a loop (virtio spec 1.2 §2.7.5.3.2 forbids them).</summary>
    ChainTooLong,
    /// <summary>An indirect table whose length is 0, not a multiple of 16 or longer than 32768 entries.</summary>
    BadIndirectLength,
    /// <summary>An INDIRECT descriptor inside an indirect table (§2.7.5.3.1: the driver must not do this).</summary>
    NestedIndirect,
    /// <summary>INDIRECT and NEXT both set (§2.7.5.3.1).</summary>
    IndirectWithNext,
    /// <summary>A device-readable descriptor after a device-writable one (§2.7.4.2).</summary>
    ReadableAfterWritable,
    /// <summary>A buffer or indirect table that is not wholly inside one guest memory region.</summary>
    AddressOutOfRange,
    /// <summary>A buffer longer than <see cref="int.MaxValue"/> or a chain totalling more than that in one direction.</summary>
    TooLarge,
    /// <summary>More segments than the caller's span can hold.</summary>
    TooManySegments,
}

/// <summary>One descriptor as the enumerator yields it: its buffer, translated to host memory, and its direction.</summary>
public readonly struct ChainDescriptor
{
    // SAFETY: stores the pointer only; MoveNext passes a buffer GuestMemory translated for its full length.
    internal unsafe ChainDescriptor(byte* pointer, int length, bool isWritable)
    {
        Segment = new IoSegment(pointer, length);
        IsWritable = isWritable;
    }

    /// <summary>The buffer as the segment every layer above passes on (FUSE request buffers, preadv destinations).</summary>
    public IoSegment Segment { get; }
    // SAFETY: only reads the segment's pointer; dereferencing it is the caller's, valid while the chain is outstanding.
    public unsafe byte* Pointer => Segment.Pointer;
    public int Length => Segment.Length;
    public bool IsWritable { get; }
}

/// <summary>
/// A descriptor chain popped from a split queue (virtio spec 1.2 §2.7.5). It is a small value (head + table pointer)
/// so it may be stored and completed later from another thread; the chain is parsed lazily by
/// <see cref="GetEnumerator"/> or <see cref="TryCollect"/>, which walk it with a time-to-live and translate every
/// buffer through <see cref="GuestMemory"/>. Whatever the outcome, the owner completes it with
/// <c>AddUsed(Head, len)</c> (len 0 on error) so the queue never stalls (propolis #1188).
/// </summary>
public readonly struct DescriptorChain
{
    private readonly GuestMemory? _memory;
    // SAFETY: the queue's descriptor table, translated by SplitQueue.TryActivate and mapped while the chain is in use
    // (GuestMemory.EnterUse/ExitUse); it is only read, through the checked walk of ChainEnumerator.
    private readonly unsafe byte* _table;
    private readonly ushort _queueSize;

    // SAFETY: stores the pointer only; table holds queueSize 16-byte descriptors (SplitQueue translated 16 * Q bytes).
    internal unsafe DescriptorChain(GuestMemory memory, byte* table, ushort queueSize, ushort head)
    {
        _memory = memory;
        _table = table;
        _queueSize = queueSize;
        Head = head;
    }

    /// <summary>Index of the head descriptor: the id written to the used ring.</summary>
    public ushort Head { get; }

    /// <summary>Walks the chain; check <see cref="ChainEnumerator.Error"/> when MoveNext returns false.</summary>
    // SAFETY: hands over the table pointer and its size unchanged; the enumerator bounds every access by them.
    public unsafe ChainEnumerator GetEnumerator() => new(_memory, _table, _queueSize, Head);

    /// <summary>
    /// Collect the chain into caller-provided segment lists without allocating: readable (driver -> device) then
    /// writable (device -> driver) buffers. Returns <see cref="ChainError.None"/> on success.
    /// </summary>
    // SAFETY: copies translated pointers into segments; nothing is dereferenced here.
    public unsafe ChainError TryCollect(Span<IoSegment> readable, Span<IoSegment> writable,
        out int readableCount, out int writableCount)
    {
        readableCount = 0;
        writableCount = 0;
        ChainEnumerator e = GetEnumerator();
        while (e.MoveNext())
        {
            ChainDescriptor d = e.Current;
            if (d.IsWritable)
            {
                if (writableCount == writable.Length)
                {
                    return ChainError.TooManySegments;
                }
                writable[writableCount++] = new IoSegment(d.Pointer, d.Length);
            }
            else
            {
                if (readableCount == readable.Length)
                {
                    return ChainError.TooManySegments;
                }
                readable[readableCount++] = new IoSegment(d.Pointer, d.Length);
            }
        }
        return e.Error;
    }
}

/// <summary>Allocation-free walk over a descriptor chain with all the checks of virtio spec 1.2 §2.7.5.</summary>
public ref struct ChainEnumerator
{
    /// <summary>Largest indirect table: the spec bounds queues (and so chains) at 32768 descriptors.</summary>
    public const int MaxIndirectEntries = 32768;

    private readonly GuestMemory? _memory;
    // SAFETY: the direct table (queue size entries) or an indirect table GuestMemory translated whole (_tableSize
    // entries); MoveNext reads only entries below _tableSize.
    private unsafe byte* _table;
    private uint _tableSize;
    private uint _next;
    private uint _ttl;
    private bool _inIndirect;
    private bool _seenWritable;
    private bool _done;
    private long _readableTotal;
    private long _writableTotal;

    // SAFETY: stores the pointer only; see _table.
    internal unsafe ChainEnumerator(GuestMemory? memory, byte* table, ushort queueSize, ushort head)
    {
        _memory = memory;
        _table = table;
        _tableSize = queueSize;
        _next = head;
        _ttl = queueSize;
        Current = default;
        Error = ChainError.None;
        if (memory is null || table is null)
        {
            // default(DescriptorChain): nothing to walk.
            _done = true;
        }
        else if (head >= queueSize)
        {
            Fail(ChainError.HeadOutOfRange);
        }
    }

    public ChainDescriptor Current { get; private set; }

    /// <summary>Set when the walk stopped because the chain is malformed.</summary>
    public ChainError Error { get; private set; }

    private bool Fail(ChainError error)
    {
        Error = error;
        _done = true;
        return false;
    }

    // SAFETY: the one read through _table is of entry _next, checked below _tableSize first, copied out unaligned;
    // every buffer and indirect table address is translated by GuestMemory.TryTranslate with its full length.
    public unsafe bool MoveNext()
    {
        while (!_done)
        {
            if (_next >= _tableSize)
            {
                return Fail(ChainError.NextOutOfRange);
            }
            if (_ttl == 0)
            {
                return Fail(ChainError.ChainTooLong);
            }
            _ttl--;
            // Copy the descriptor out once: the guest may rewrite it under us, and every check below must see the
            // same values we then act on.
            VringDesc raw = Unsafe.ReadUnaligned<VringDesc>(_table + (nuint)_next * 16);
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(&raw.addr, 8));
            uint len = LittleEndian(raw.len);
            ushort flags = LittleEndian(raw.flags);
            ushort next = LittleEndian(raw.next);

            if ((flags & VirtqDescFlags.Indirect) != 0)
            {
                if (_inIndirect)
                {
                    return Fail(ChainError.NestedIndirect);
                }
                if ((flags & VirtqDescFlags.Next) != 0)
                {
                    return Fail(ChainError.IndirectWithNext);
                }
                if (len == 0 || len % 16 != 0 || len / 16 > MaxIndirectEntries)
                {
                    return Fail(ChainError.BadIndirectLength);
                }
                if (!_memory!.TryTranslate(addr, len, out byte* indirect))
                {
                    return Fail(ChainError.AddressOutOfRange);
                }
                // §2.7.5.3: the table is walked like a chain starting at entry 0; its TTL is its own length.
                _table = indirect;
                _tableSize = len / 16;
                _ttl = _tableSize;
                _next = 0;
                _inIndirect = true;
                continue;
            }

            bool writable = (flags & VirtqDescFlags.Write) != 0;
            if (writable)
            {
                _seenWritable = true;
            }
            else if (_seenWritable)
            {
                return Fail(ChainError.ReadableAfterWritable);
            }
            if (len > int.MaxValue)
            {
                return Fail(ChainError.TooLarge);
            }
            ref long total = ref writable ? ref _writableTotal : ref _readableTotal;
            total += len;
            if (total > int.MaxValue)
            {
                return Fail(ChainError.TooLarge);
            }
            if (!_memory!.TryTranslate(addr, len, out byte* host))
            {
                return Fail(ChainError.AddressOutOfRange);
            }
            Current = new ChainDescriptor(host, (int)len, writable);
            if ((flags & VirtqDescFlags.Next) != 0)
            {
                _next = next;
            }
            else
            {
                _done = true;
            }
            return true;
        }
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint LittleEndian(uint v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ushort LittleEndian(ushort v) => BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
}
