using VirtioFs.Virtio;

namespace VirtioFs.Virtio.Tests;

public unsafe class SegmentCursorTests
{
    [Fact]
    public void Reader_crosses_segment_boundaries_and_refuses_overreads()
    {
        byte[] a = [1, 2, 3], b = [], c = [4, 5, 6, 7, 8];
        fixed (byte* pa = a)
        fixed (byte* pb = b)
        fixed (byte* pc = c)
        {
            BufferSegment[] segments = [new(pa, 3), new(pb, 0), new(pc, 5)];
            var reader = new SegmentReader(segments);
            Assert.Equal(8, reader.Remaining);
            Assert.True(reader.TryRead(out ushort first));
            Assert.Equal(0x0201, first);
            Assert.False(reader.TryReadContiguous(3, out _)); // 3, then 4 5 live in two segments
            Span<byte> two = stackalloc byte[2];
            Assert.True(reader.TryRead(two));
            Assert.Equal([3, 4], two.ToArray());
            Assert.True(reader.TryReadContiguous(2, out ReadOnlySpan<byte> inPlace));
            Assert.Equal([5, 6], inPlace.ToArray());
            Assert.False(reader.TryRead(out uint _)); // only 2 bytes left: nothing consumed
            Assert.Equal(2, reader.Remaining);
            Assert.True(reader.TrySkip(2));
            Assert.Equal(0, reader.Remaining);
        }
    }

    [Fact]
    public void Writer_fills_segments_in_order_and_counts_the_used_length()
    {
        byte[] a = new byte[2], c = new byte[4];
        fixed (byte* pa = a)
        fixed (byte* pc = c)
        {
            BufferSegment[] segments = [new(pa, 2), new(pc, 4)];
            var writer = new SegmentWriter(segments);
            Assert.True(writer.TryWrite(0x04030201u));
            Assert.False(writer.TryWrite(0x0807060504030201UL)); // does not fit: nothing written
            Assert.True(writer.TryWrite([9, 9]));
            Assert.Equal(6, writer.Written);
            Assert.Equal(0, writer.Available);
            Assert.Equal([1, 2], a);
            Assert.Equal([3, 4, 9, 9], c);
        }
    }
}
