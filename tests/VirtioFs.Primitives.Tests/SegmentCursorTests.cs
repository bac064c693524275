using System.Runtime.InteropServices;

namespace VirtioFs.Primitives.Tests;

/// <summary>The one cursor every layer uses over request and reply segments: byte-level cases, including the empty
/// segments and splits a guest may send anywhere (virtio 1.2 §2.6.4).</summary>
public sealed unsafe class SegmentCursorTests : IDisposable
{
    private readonly List<nint> _memory = [];

    private IoSegment[] Segments(params byte[][] contents)
    {
        var segments = new IoSegment[contents.Length];
        for (int i = 0; i < contents.Length; i++)
        {
            byte* p = (byte*)NativeMemory.Alloc((nuint)Math.Max(1, contents[i].Length));
            _memory.Add((nint)p);
            contents[i].CopyTo(new Span<byte>(p, contents[i].Length));
            segments[i] = new IoSegment(p, contents[i].Length);
        }
        return segments;
    }

    private static byte[] Contents(IoSegment[] segments) => segments.SelectMany(s => s.AsSpan().ToArray()).ToArray();

    [Fact]
    public void IoSegment_has_the_struct_iovec_layout()
    {
        // preadv/pwritev take a span of segments as struct iovec[]: { void *iov_base; size_t iov_len; } on 64-bit Linux.
        Assert.Equal(16, Marshal.SizeOf<IoSegment>());
        Assert.Equal(0, (int)Marshal.OffsetOf<IoSegment>(nameof(IoSegment.Pointer)));
        Assert.Equal(8, (int)Marshal.OffsetOf<IoSegment>(nameof(IoSegment.Length)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new IoSegment(null, -1));
    }

    [Fact]
    public void Reads_cross_segment_boundaries_and_skip_empty_segments()
    {
        var segs = Segments([], [1, 2, 3], [], [4, 5, 6, 7, 8]);
        var c = new SegmentCursor(segs);
        Assert.Equal(8, c.Remaining);
        Assert.True(c.TryRead(out ushort first));
        Assert.Equal(0x0201, first);
        Assert.True(c.Contiguous(3).IsEmpty); // 3, then 4 5: two segments
        Span<byte> two = stackalloc byte[2];
        Assert.True(c.TryRead(two));
        Assert.Equal([3, 4], two.ToArray());
        Assert.Equal([5, 6], c.Contiguous(2).ToArray());
        Assert.Equal(4, c.Consumed);
    }

    [Fact]
    public void An_operation_that_does_not_fit_moves_nothing()
    {
        var segs = Segments([1, 2], [3]);
        var c = new SegmentCursor(segs);
        Assert.True(c.TrySkip(1));
        Assert.False(c.TryRead(out uint _));
        Assert.False(c.TryWrite([9, 9, 9]));
        Assert.False(c.TryZero(3));
        Assert.False(c.TrySkip(3));
        Assert.False(c.TrySkip(-1));
        Assert.Equal(2, c.Remaining);
        Assert.Equal([1, 2, 3], Contents(segs));
        Assert.True(c.TryRead(out ushort rest));
        Assert.Equal(0x0302, rest);
        Assert.Equal(0, c.Remaining);
        Assert.True(c.Contiguous(1).IsEmpty);
    }

    [Fact]
    public void Writes_and_zeroes_fill_the_segments_in_order()
    {
        var segs = Segments([0xEE, 0xEE], [0xEE, 0xEE, 0xEE], [0xEE]);
        var c = new SegmentCursor(segs);
        Assert.True(c.TryWrite([1, 2, 3]));
        Assert.True(c.TryZero(2));
        Assert.True(c.TryWrite([6]));
        Assert.Equal([1, 2, 3, 0, 0, 6], Contents(segs));
        Assert.Equal(0, c.Remaining);
    }

    [Fact]
    public void Slice_describes_the_next_bytes_in_place_without_moving()
    {
        var segs = Segments([1, 2, 3], [4, 5], [], [6, 7, 8]);
        var c = new SegmentCursor(segs);
        Assert.True(c.TrySkip(2));
        Span<IoSegment> into = stackalloc IoSegment[4];
        int n = c.Slice(4, into);
        Assert.Equal(3, n);
        Assert.Equal([3, 4, 5, 6], into[..n].ToArray().SelectMany(s => s.AsSpan().ToArray()).ToArray());
        Assert.Equal(2, c.Consumed); // unmoved
        Assert.Equal(-1, c.Slice(6, into[..2])); // needs three segments
        Assert.Equal(3, c.Slice(100, into)); // at most what remains
        // A slice points into the same memory: writing through it is writing the request's buffer.
        into[0].AsSpan()[0] = 33;
        Assert.Equal(33, Contents(segs)[2]);
    }

    [Fact]
    public void A_saved_position_resumes_where_the_cursor_stopped()
    {
        var segs = Segments([1, 2, 3], [4, 5]);
        var c = new SegmentCursor(segs);
        Assert.True(c.TrySkip(3)); // ends exactly on a segment boundary
        SegmentPosition at = c.Position;
        var resumed = new SegmentCursor(segs, at, SegmentCursor.TotalLength(segs));
        Assert.Equal(2, resumed.Remaining);
        Assert.True(resumed.TryRead(out ushort v));
        Assert.Equal(0x0504, v);
    }

    [Fact]
    public void Random_splits_read_back_what_was_written()
    {
        var rng = new Random(7);
        for (int round = 0; round < 200; round++)
        {
            byte[] data = new byte[rng.Next(0, 200)];
            rng.NextBytes(data);
            var pieces = new List<byte[]>();
            int left = data.Length + rng.Next(0, 5);
            while (left > 0 || rng.Next(3) == 0)
            {
                int n = Math.Min(left, rng.Next(0, 17));
                pieces.Add(new byte[n]);
                left -= n;
                if (pieces.Count > 64) break;
            }
            var segs = Segments([.. pieces]);
            var w = new SegmentCursor(segs);
            bool fits = data.Length <= w.Remaining;
            Assert.Equal(fits, w.TryWrite(data));
            if (!fits)
            {
                continue;
            }
            var r = new SegmentCursor(segs);
            byte[] back = new byte[data.Length];
            Assert.True(r.TryRead(back));
            Assert.Equal(data, back);
        }
    }

    public void Dispose()
    {
        foreach (nint p in _memory)
        {
            NativeMemory.Free((void*)p);
        }
    }
}
