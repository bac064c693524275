using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VirtioFs.Virtio;

/// <summary>
/// Reads the readable buffers of a chain as one byte stream (a request may be split anywhere between descriptors,
/// virtio spec 1.2 §2.6.4 "message framing" says devices must not assume any layout). Allocation-free.
/// </summary>
public unsafe ref struct SegmentReader
{
    private readonly ReadOnlySpan<BufferSegment> _segments;
    private int _index;
    private int _offset;

    public SegmentReader(ReadOnlySpan<BufferSegment> segments)
    {
        _segments = segments;
        long total = 0;
        foreach (BufferSegment s in segments)
        {
            total += s.Length;
        }
        Remaining = (int)Math.Min(total, int.MaxValue);
    }

    /// <summary>Bytes not read yet.</summary>
    public int Remaining { get; private set; }

    /// <summary>Copies exactly destination.Length bytes; false (nothing consumed) when fewer remain.</summary>
    public bool TryRead(scoped Span<byte> destination)
    {
        if (destination.Length > Remaining)
        {
            return false;
        }
        while (!destination.IsEmpty)
        {
            BufferSegment s = _segments[_index];
            int n = Math.Min(s.Length - _offset, destination.Length);
            new ReadOnlySpan<byte>(s.Pointer + _offset, n).CopyTo(destination);
            destination = destination[n..];
            Advance(n);
        }
        return true;
    }

    /// <summary>Reads a blittable wire struct (copied, so later guest writes cannot change it).</summary>
    public bool TryRead<T>(out T value) where T : unmanaged
    {
        value = default;
        return TryRead(MemoryMarshal.AsBytes(new Span<T>(ref value)));
    }

    /// <summary>
    /// Returns the next <paramref name="length"/> bytes in place when they sit in one segment (zero-copy), else false
    /// and consumes nothing; callers then fall back to <see cref="TryRead(Span{byte})"/>. The span aliases guest
    /// memory: the guest can change it concurrently, so validate after copying, not before.
    /// </summary>
    public bool TryReadContiguous(int length, out ReadOnlySpan<byte> bytes)
    {
        bytes = default;
        if (length > Remaining)
        {
            return false;
        }
        if (length == 0)
        {
            return true;
        }
        SkipEmpty();
        BufferSegment s = _segments[_index];
        if (s.Length - _offset < length)
        {
            return false;
        }
        bytes = new ReadOnlySpan<byte>(s.Pointer + _offset, length);
        Advance(length);
        return true;
    }

    /// <summary>Skips bytes; false (nothing consumed) when fewer remain.</summary>
    public bool TrySkip(int count)
    {
        if (count < 0 || count > Remaining)
        {
            return false;
        }
        while (count > 0)
        {
            int n = Math.Min(_segments[_index].Length - _offset, count);
            Advance(n);
            count -= n;
        }
        return true;
    }

    private void SkipEmpty()
    {
        while (_index < _segments.Length && _offset == _segments[_index].Length)
        {
            _index++;
            _offset = 0;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Advance(int n)
    {
        _offset += n;
        Remaining -= n;
        SkipEmpty();
    }
}

/// <summary>Writes a reply across the writable buffers of a chain as one byte stream. Allocation-free.</summary>
public unsafe ref struct SegmentWriter
{
    private readonly ReadOnlySpan<BufferSegment> _segments;
    private int _index;
    private int _offset;

    public SegmentWriter(ReadOnlySpan<BufferSegment> segments)
    {
        _segments = segments;
        long total = 0;
        foreach (BufferSegment s in segments)
        {
            total += s.Length;
        }
        Available = (int)Math.Min(total, int.MaxValue);
    }

    /// <summary>Space left.</summary>
    public int Available { get; private set; }

    /// <summary>Bytes written so far: the used length to report.</summary>
    public int Written { get; private set; }

    /// <summary>Writes all of <paramref name="source"/>; false (nothing written) when it does not fit.</summary>
    public bool TryWrite(scoped ReadOnlySpan<byte> source)
    {
        if (source.Length > Available)
        {
            return false;
        }
        while (!source.IsEmpty)
        {
            BufferSegment s = _segments[_index];
            int n = Math.Min(s.Length - _offset, source.Length);
            source[..n].CopyTo(new Span<byte>(s.Pointer + _offset, n));
            source = source[n..];
            _offset += n;
            Available -= n;
            Written += n;
            while (_index < _segments.Length && _offset == _segments[_index].Length)
            {
                _index++;
                _offset = 0;
            }
        }
        return true;
    }

    /// <summary>Writes a blittable wire struct.</summary>
    public bool TryWrite<T>(in T value) where T : unmanaged =>
        TryWrite(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)));
}
