namespace VirtioFs.Storage.Cache;

/// <summary>
/// A position inside a list of destination segments. The segments are memory the caller owns for the duration of the
/// call (guest buffers of an outstanding FUSE request); the cursor never reads them, only writes.
/// </summary>
internal unsafe ref struct IovecCursor
{
    private readonly ReadOnlySpan<Iovec> _segs;
    private int _seg;
    private int _off;

    public IovecCursor(ReadOnlySpan<Iovec> segments)
    {
        _segs = segments;
        _seg = 0;
        _off = 0;
        SkipEmpty();
    }

    private void SkipEmpty()
    {
        while (_seg < _segs.Length && (int)_segs[_seg].iov_len - _off == 0) { _seg++; _off = 0; }
    }

    private Span<byte> Current()
    {
        var s = _segs[_seg];
        // SAFETY: the caller guarantees each segment maps iov_len writable bytes for the whole call; lengths were
        // checked to fit an int by the caller, and _off < iov_len.
        return new Span<byte>(s.iov_base + _off, (int)s.iov_len - _off);
    }

    /// <summary>The next <paramref name="length"/> bytes when they lie in one segment (the cursor does not move), or
    /// an empty span when they span several.</summary>
    public Span<byte> Contiguous(int length)
    {
        if (length <= 0 || _seg >= _segs.Length) return default;
        var d = Current();
        return d.Length >= length ? d[..length] : default;
    }

    public void Write(ReadOnlySpan<byte> src)
    {
        while (!src.IsEmpty)
        {
            var d = Current();
            int n = Math.Min(d.Length, src.Length);
            src[..n].CopyTo(d);
            src = src[n..];
            Advance(n);
        }
    }

    public void Zero(int length)
    {
        while (length > 0)
        {
            var d = Current();
            int n = Math.Min(d.Length, length);
            d[..n].Clear();
            length -= n;
            Advance(n);
        }
    }

    public void Advance(int length)
    {
        while (length > 0)
        {
            int room = (int)_segs[_seg].iov_len - _off;
            int n = Math.Min(room, length);
            _off += n;
            length -= n;
            if (_off == (int)_segs[_seg].iov_len) { _seg++; _off = 0; }
        }
        SkipEmpty();
    }

    /// <summary>Describes the next <paramref name="length"/> bytes as iovecs in <paramref name="into"/>; returns the
    /// count, or -1 when more segments than <paramref name="into"/> holds would be needed.</summary>
    public readonly int Describe(int length, Span<Iovec> into)
    {
        int seg = _seg, off = _off, n = 0;
        while (length > 0)
        {
            if (n == into.Length) return -1;
            var s = _segs[seg];
            int take = Math.Min((int)s.iov_len - off, length);
            if (take > 0) into[n++] = new Iovec(s.iov_base + off, take);
            length -= take;
            seg++;
            off = 0;
        }
        return n;
    }
}
