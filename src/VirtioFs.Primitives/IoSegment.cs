using System.Runtime.InteropServices;

namespace VirtioFs.Primitives;

/// <summary>
/// One contiguous piece of request or reply memory: a virtqueue descriptor's mapping of guest memory, a /dev/fuse
/// buffer, or a chunk buffer. Laid out exactly like <c>struct iovec</c> on 64-bit Linux (pointer, then a size_t whose
/// upper half is kept zero), so a span of segments goes to preadv/pwritev as it is: the same type carries a buffer from
/// the ring to the syscall.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct IoSegment
{
    // SAFETY: iovec.iov_base. A segment is only a description; whoever makes one vouches that Length bytes at Pointer
    // stay mapped while it is in use (see the constructor and AsSpan).
    [FieldOffset(0)] public unsafe byte* Pointer;
    [FieldOffset(8)] public int Length;
    // Upper 32 bits of iovec.iov_len: always zero because Length is never negative.
    [FieldOffset(12)] private readonly int _zero;

    // SAFETY: stores the pointer only; the caller owns the memory and keeps it mapped for the segment's use.
    public unsafe IoSegment(byte* pointer, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Pointer = pointer;
        Length = length;
        _zero = 0;
    }

    /// <summary>The segment as a span; valid only while its owner keeps the memory mapped (for a guest buffer, while
    /// the chain is outstanding).</summary>
    // SAFETY: Length bytes at Pointer, by the contract of whoever made the segment.
    public readonly unsafe Span<byte> AsSpan() => new(Pointer, Length);
}

/// <summary>Where a <see cref="SegmentCursor"/> stands, kept apart from the segment list so a class that owns the list
/// (a per-worker request buffer) can keep the position between calls.</summary>
public struct SegmentPosition
{
    /// <summary>The segment the next byte is in.</summary>
    public int Index;
    /// <summary>Offset of the next byte inside that segment.</summary>
    public int Offset;
    /// <summary>Bytes passed since the start of the list.</summary>
    public long Consumed;
}
