using System.Runtime.InteropServices;
using static VirtioFs.Fuse.Tests.Harness;

namespace VirtioFs.Fuse.Tests;

/// <summary>
/// READ data by reference (/dev/fuse): the filesystem leaves part of the data in its own memory, the transport sends
/// the reply with writev from the gathered segments, and the memory is unpinned exactly once, after the send.
/// </summary>
public sealed unsafe class ReplyReferencesTests : IDisposable
{
    private const int Kept = 5000;
    private readonly byte* _kept = (byte*)NativeMemory.Alloc(Kept);

    public ReplyReferencesTests() => new Span<byte>(_kept, Kept).Fill((byte)'B');

    public void Dispose() => NativeMemory.Free(_kept);

    /// <summary>Writes 100 'A's, refers to its 5000 'B's, writes 50 'C's; or misbehaves as told.</summary>
    private sealed class ReferringFs(ReplyReferencesTests owner) : IFileSystem, IReplyPin
    {
        public int Pins;
        public int PlainReads;
        public int Fail;
        public int ClaimedLength = -1;
        public bool Accepted;

        public void Unpin(int token)
        {
            Assert.Equal(42, token);
            Pins--;
        }

        public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
        {
            PlainReads++;
            var c = new SegmentCursor(destination);
            Assert.True(c.TryWrite(new byte[150]));
            bytesRead = 150;
            return 0;
        }

        public int ReadOrReference(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination,
            IReplyReferences references, uint flags, out int bytesRead)
        {
            var c = new SegmentCursor(destination);
            Assert.True(c.TryWrite(Enumerable.Repeat((byte)'A', 100).ToArray()));
            Accepted = references.TryAdd(c.Consumed, new IoSegment(owner._kept, Kept), this, 42);
            if (Accepted)
            {
                Pins++;
                Assert.True(c.TrySkip(Kept));
            }
            // Out of order or overlapping: refused, nothing taken.
            Assert.False(references.TryAdd(0, new IoSegment(owner._kept, 10), this, 42));
            Assert.True(c.TryWrite(Enumerable.Repeat((byte)'C', 50).ToArray()));
            bytesRead = ClaimedLength >= 0 ? ClaimedLength : (int)c.Consumed;
            return Fail;
        }
    }

    private static byte[] ReadRequest() => Request(FuseOpcode.Read, 5, Bytes(new FuseReadIn { fh = 1, size = 8192 }));

    private static byte[] Gather(FuseRequestBuffers buffers, int length)
    {
        Span<IoSegment> iov = stackalloc IoSegment[FuseRequestBuffers.MaxGatherSegments];
        int n = buffers.GatherReply(length, iov);
        Assert.True(n > 0);
        var bytes = new List<byte>();
        foreach (IoSegment s in iov[..n]) bytes.AddRange(s.AsSpan().ToArray());
        return [.. bytes];
    }

    [Fact]
    public void A_referenced_READ_gathers_to_the_same_bytes_and_is_unpinned_once_after_the_send()
    {
        var fs = new ReferringFs(this);
        using var h = new Harness(fs);
        h.Init();
        h.Buffers.ReplyByReference = true;
        // Reply space in two pieces, cut inside the referenced range: the gather must skip across the cut.
        FuseReply reply = h.Send(ReadRequest(), replySegments: [64, 64 * 1024]);
        Assert.True(fs.Accepted);
        Assert.Equal(16 + 100 + Kept + 50, reply.Length);
        Assert.True(h.Buffers.HasReferences);
        Assert.Equal(1, fs.Pins);
        byte[] sent = Gather(h.Buffers, reply.Length);
        var header = MemoryMarshal.Read<FuseOutHeader>(sent);
        Assert.Equal((uint)reply.Length, header.len);
        Assert.Equal(0, header.error);
        byte[] expected = [.. Enumerable.Repeat((byte)'A', 100), .. Enumerable.Repeat((byte)'B', Kept), .. Enumerable.Repeat((byte)'C', 50)];
        Assert.Equal(expected, sent[16..]);
        h.Buffers.ReleaseReferences();
        Assert.Equal(0, fs.Pins);
        Assert.False(h.Buffers.HasReferences);
        h.Buffers.ReleaseReferences(); // once only
        Assert.Equal(0, fs.Pins);
        Assert.Equal(0, fs.PlainReads);
    }

    [Fact]
    public void A_failed_or_inconsistent_READ_sends_no_reference_and_unpins_at_once()
    {
        var fs = new ReferringFs(this) { Fail = Errno.EIO };
        using var h = new Harness(fs);
        h.Init();
        h.Buffers.ReplyByReference = true;
        FuseReply reply = h.Send(ReadRequest());
        Assert.Equal(16, reply.Length);
        Assert.Equal(-Errno.EIO, h.ReplyHeader.error);
        Assert.False(h.Buffers.HasReferences);
        Assert.Equal(0, fs.Pins);

        // A byte count that ends inside the referenced range would send memory the reply does not claim: EIO.
        fs.Fail = 0;
        fs.ClaimedLength = 300;
        reply = h.Send(ReadRequest());
        Assert.Equal(16, reply.Length);
        Assert.Equal(-Errno.EIO, h.ReplyHeader.error);
        Assert.Equal(0, fs.Pins);
    }

    [Fact]
    public void Without_a_gathering_transport_READ_copies_and_references_stay_off()
    {
        var fs = new ReferringFs(this);
        using var h = new Harness(fs);
        h.Init();
        FuseReply reply = h.Send(ReadRequest());
        Assert.Equal(16 + 150, reply.Length);
        Assert.Equal(1, fs.PlainReads);
        Assert.False(h.Buffers.HasReferences);
        Assert.Equal(0, fs.Pins);
    }

    /// <summary>Tries more references than allowed, and one past the reply space, recording what was accepted.</summary>
    private sealed class GreedyFs(ReplyReferencesTests owner) : IFileSystem
    {
        public readonly CountingPin Pin = new();
        public readonly List<bool> Accepted = [];

        public int ReadOrReference(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination,
            IReplyReferences references, uint flags, out int bytesRead)
        {
            Accepted.Add(references.TryAdd(1 << 20, new IoSegment(owner._kept, 10), Pin, 0)); // past the reply space
            var c = new SegmentCursor(destination);
            for (int i = 0; i <= FuseRequestBuffers.MaxReferences; i++)
            {
                bool ok = references.TryAdd(c.Consumed, new IoSegment(owner._kept, 10), Pin, i);
                Accepted.Add(ok);
                Assert.True(ok ? c.TrySkip(10) : c.TryWrite(new byte[10]));
            }
            bytesRead = (int)c.Consumed;
            return 0;
        }
    }

    [Fact]
    public void References_are_refused_past_the_reply_space_and_the_limit_and_a_new_request_releases_the_last_ones()
    {
        var fs = new GreedyFs(this);
        using var h = new Harness(fs);
        h.Init();
        h.Buffers.ReplyByReference = true;
        FuseReply reply = h.Send(ReadRequest());
        Assert.Equal(16 + 10 * (FuseRequestBuffers.MaxReferences + 1), reply.Length);
        Assert.Equal([false, .. Enumerable.Repeat(true, FuseRequestBuffers.MaxReferences), false], fs.Accepted);
        // The out header, the references back to back, and the last piece copied into the buffer.
        Assert.Equal(1 + FuseRequestBuffers.MaxReferences + 1, h.Buffers.GatherReply(reply.Length, stackalloc IoSegment[FuseRequestBuffers.MaxGatherSegments]));
        Assert.Equal(-1, h.Buffers.GatherReply(20, stackalloc IoSegment[FuseRequestBuffers.MaxGatherSegments])); // shorter than the references
        Assert.Equal(0, fs.Pin.Unpinned);
        h.Buffers.Clear(); // a transport that forgot to release: the next request does
        Assert.Equal(FuseRequestBuffers.MaxReferences, fs.Pin.Unpinned);
    }

    private sealed class CountingPin : IReplyPin
    {
        public int Unpinned;
        public void Unpin(int token) => Unpinned++;
    }
}
