using System.Runtime.CompilerServices;

namespace VirtioFs.Primitives;

/// <summary>
/// The one cursor over a list of <see cref="IoSegment"/>s: reads, writes, zeroes or skips bytes as if the segments were
/// one buffer, and slices the next bytes into segments of their own (a READ destination handed to preadv). A request may
/// be split anywhere between descriptors (virtio 1.2 §2.6.4, message framing), so nothing here assumes a layout.
/// Every operation is exact: it does all of its bytes, or returns false and moves nothing. Allocation-free.
/// </summary>
/// <remarks>
/// The segments are memory the caller keeps mapped for the cursor's lifetime (the guest buffers of an outstanding
/// request). Guest memory can change under us at any time: read a value once into our own memory, then validate it.
/// </remarks>
public ref struct SegmentCursor
{
    private readonly ReadOnlySpan<IoSegment> _segments;
    private readonly long _total;
    private SegmentPosition _at;

    public SegmentCursor(ReadOnlySpan<IoSegment> segments)
        : this(segments, default, TotalLength(segments))
    {
    }

    /// <summary>Resumes at <paramref name="at"/> in <paramref name="segments"/>, whose byte count the caller already
    /// knows as <paramref name="totalLength"/>.</summary>
    public SegmentCursor(ReadOnlySpan<IoSegment> segments, SegmentPosition at, long totalLength)
    {
        _segments = segments;
        _total = totalLength;
        _at = at;
        // Stand on a byte, never on the end of a segment (or on an empty one): the operations rely on it.
        while (_at.Index < segments.Length && _at.Offset == segments[_at.Index].Length)
        {
            _at.Index++;
            _at.Offset = 0;
        }
    }

    public static long TotalLength(ReadOnlySpan<IoSegment> segments)
    {
        long total = 0;
        foreach (ref readonly IoSegment s in segments)
        {
            total += s.Length;
        }
        return total;
    }

    public readonly SegmentPosition Position => _at;

    /// <summary>Bytes passed so far.</summary>
    public readonly long Consumed => _at.Consumed;

    /// <summary>Bytes not passed yet.</summary>
    public readonly long Remaining => _total - _at.Consumed;

    /// <summary>Copies exactly <paramref name="destination"/>.Length bytes out of the segments.</summary>
    public unsafe bool TryRead(scoped Span<byte> destination)
    {
        if (destination.Length > Remaining)
        {
            return false;
        }
        while (!destination.IsEmpty)
        {
            int n = Math.Min(CurrentRoom(), destination.Length);
            // SAFETY: the current segment maps Length readable bytes for the cursor's lifetime and
            // [Offset, Offset + n) lies inside it (n is bounded by the room left in it).
            new ReadOnlySpan<byte>(CurrentPointer(), n).CopyTo(destination);
            destination = destination[n..];
            Move(n);
        }
        return true;
    }

    /// <summary>Reads a blittable wire struct (copied, so later guest writes cannot change it).</summary>
    public unsafe bool TryRead<T>(out T value) where T : unmanaged
    {
        Unsafe.SkipInit(out value);
        // SAFETY: value is a local of exactly sizeof(T) bytes; TryRead fills all of it or returns false, and then the
        // caller must not use value (it is zeroed below so it is never uninitialised either way).
        if (TryRead(new Span<byte>(Unsafe.AsPointer(ref value), sizeof(T))))
        {
            return true;
        }
        value = default;
        return false;
    }

    /// <summary>Copies all of <paramref name="source"/> into the segments.</summary>
    public unsafe bool TryWrite(scoped ReadOnlySpan<byte> source)
    {
        if (source.Length > Remaining)
        {
            return false;
        }
        while (!source.IsEmpty)
        {
            int n = Math.Min(CurrentRoom(), source.Length);
            // SAFETY: as in TryRead, for writable segments.
            source[..n].CopyTo(new Span<byte>(CurrentPointer(), n));
            source = source[n..];
            Move(n);
        }
        return true;
    }

    /// <summary>Writes <paramref name="length"/> zero bytes (a hole in a sparse file).</summary>
    public unsafe bool TryZero(long length)
    {
        if (length < 0 || length > Remaining)
        {
            return false;
        }
        while (length > 0)
        {
            int n = (int)Math.Min(CurrentRoom(), length);
            // SAFETY: as in TryWrite.
            new Span<byte>(CurrentPointer(), n).Clear();
            length -= n;
            Move(n);
        }
        return true;
    }

    /// <summary>Passes <paramref name="length"/> bytes without touching them.</summary>
    public bool TrySkip(long length)
    {
        if (length < 0 || length > Remaining)
        {
            return false;
        }
        while (length > 0)
        {
            int n = (int)Math.Min(CurrentRoom(), length);
            length -= n;
            Move(n);
        }
        return true;
    }

    /// <summary>
    /// Describes the next <paramref name="length"/> bytes (at most what remains) as segments in <paramref name="into"/>,
    /// pointing into the same memory; the cursor does not move. Returns the count, or -1 when <paramref name="into"/>
    /// is too small.
    /// </summary>
    // SAFETY: pointer arithmetic only: each slice starts at Pointer + offset with offset + n <= the segment's Length.
    public readonly unsafe int Slice(long length, Span<IoSegment> into)
    {
        length = Math.Min(length, Remaining);
        int index = _at.Index, offset = _at.Offset, count = 0;
        while (length > 0)
        {
            IoSegment s = _segments[index];
            int n = (int)Math.Min(s.Length - offset, length);
            if (n > 0)
            {
                if (count == into.Length)
                {
                    return -1;
                }
                into[count++] = new IoSegment(s.Pointer + offset, n);
            }
            length -= n;
            index++;
            offset = 0;
        }
        return count;
    }

    /// <summary>The next <paramref name="length"/> bytes in place when they lie in one segment (the cursor does not
    /// move), else an empty span. It aliases the segment's memory.</summary>
    public readonly unsafe Span<byte> Contiguous(int length)
    {
        if (length <= 0 || length > Remaining)
        {
            return default;
        }
        IoSegment s = _segments[_at.Index];
        // SAFETY: Remaining > 0 puts Index on a segment with Offset < Length; the span stays inside it.
        return s.Length - _at.Offset >= length ? new Span<byte>(s.Pointer + _at.Offset, length) : default;
    }

    // Remaining > 0 guarantees the current segment is non-empty past Offset: Move never stops on a segment's end.
    private readonly int CurrentRoom() => _segments[_at.Index].Length - _at.Offset;

    // SAFETY: Offset < Length of the current segment whenever Remaining > 0 (the callers' precondition).
    private readonly unsafe byte* CurrentPointer() => _segments[_at.Index].Pointer + _at.Offset;

    private void Move(int n)
    {
        _at.Offset += n;
        _at.Consumed += n;
        while (_at.Index < _segments.Length && _at.Offset == _segments[_at.Index].Length)
        {
            _at.Index++;
            _at.Offset = 0;
        }
    }
}
