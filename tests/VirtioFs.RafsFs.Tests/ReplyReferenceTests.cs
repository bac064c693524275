using VirtioFs.Fuse;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// READ by reference (the /dev/fuse transport): data out of a decoded-chunk slot is handed over as the slot's memory,
/// pinned until the reply is sent. A pinned slot must keep its bytes while other reads go on, and reads that need a
/// pinned slot for another chunk must still be served correctly without waiting.
/// </summary>
public sealed class ReplyReferenceTests
{
    private static readonly FuseContext Root = new(0, 0, 1, 1);

    /// <summary>Holds every reference it accepts (a transport that has not sent its replies yet).</summary>
    private sealed class HeldReferences : IReplyReferences
    {
        public readonly List<(long FileOffset, IoSegment Data, IReplyPin Pin, int Token)> Held = [];
        public long ReadOffset;

        public bool TryAdd(long dataOffset, IoSegment data, IReplyPin pin, int token)
        {
            Held.Add((ReadOffset + dataOffset, data, pin, token));
            return true;
        }

        public void ReleaseAll()
        {
            foreach (var h in Held) h.Pin.Unpin(h.Token);
            Held.Clear();
        }
    }

    [Fact]
    public unsafe void Pinned_slots_keep_their_bytes_while_other_reads_go_on_and_every_read_is_right()
    {
        using var fx = new ImageFixture();
        int cs = (int)ImageFixture.ChunkSize;
        byte[] data = ImageFixture.Random(new Random(5), 40 * cs + 333);
        fx.File("big.bin", data);
        fx.BuildImage();
        using var m = fx.Open(o => o.DecodeAhead = false); // read-through: decoded-chunk slots
        var fs = m.FileSystem;
        var recent = fs.Recent;
        Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, "big.bin"u8, out var e));
        Assert.Equal(0, fs.Open(Root, e.NodeId, 0, 0, out var o));
        var refs = new HeldReferences();
        var buf = new byte[24 * 1024];
        fixed (byte* p = buf)
        {
            IoSegment[] piece = [new IoSegment(p, 10 * 1024), new IoSegment(p + 10 * 1024, 14 * 1024)];
            // Front to back in 24 KiB pieces, holding every reference: the slots fill up with pinned chunks, and the
            // reads that then need a pinned slot go around it.
            for (int off = 0; off < data.Length; off += buf.Length)
            {
                buf.AsSpan().Fill(0xEE);
                int before = refs.Held.Count;
                refs.ReadOffset = off;
                Assert.Equal(0, fs.ReadOrReference(Root, e.NodeId, o.Handle, (ulong)off, piece, refs, 0, out int n));
                Assert.Equal(Math.Min(buf.Length, data.Length - off), n);
                // What the reply would carry: the buffer, with the referenced ranges taken from the slots.
                byte[] sent = buf[..n];
                for (int i = before; i < refs.Held.Count; i++)
                {
                    var (fileOffset, seg, _, _) = refs.Held[i];
                    seg.AsSpan().CopyTo(sent.AsSpan((int)(fileOffset - off)));
                }
                Assert.True(sent.AsSpan().SequenceEqual(data.AsSpan(off, n)), $"bytes at {off}");
            }
            Assert.True(recent.Referenced > 0);
            // No chunk was decoded into a slot twice, and none once all 16 slots were pinned: the 40 full chunks
            // beyond those were read around the slots (the 333-byte tail lies whole in one piece and skips them).
            Assert.True(recent.Decodes <= 16, $"{recent.Decodes} decodes");
            // The pinned memory still holds what it held when it was handed over.
            foreach (var (fileOffset, seg, _, _) in refs.Held)
            {
                Assert.True(seg.AsSpan().SequenceEqual(data.AsSpan((int)fileOffset, seg.Length)), $"pinned bytes at {fileOffset}");
            }
            // Sent: the slots can be refilled again. A piece of every chunk: those that went around the slots
            // (at least 40 - 16) now decode into one.
            refs.ReleaseAll();
            long decodes = recent.Decodes;
            for (int k = 0; k < 40; k++)
            {
                Assert.Equal(0, fs.Read(Root, e.NodeId, o.Handle, (ulong)(k * cs + 100), piece, 0, out int again));
                Assert.True(buf.AsSpan(0, again).SequenceEqual(data.AsSpan(k * cs + 100, again)), $"chunk {k}");
            }
            Assert.True(recent.Decodes - decodes >= 24, $"{recent.Decodes - decodes} decodes after the release");
        }
        fs.Release(Root, e.NodeId, o.Handle, 0, 0, 0);
    }

    /// <summary>
    /// With a chunk cache, a missing chunk is fetched into a slot and written to the cache file from there: the READ
    /// that fetched it and the READs of its other parts refer to the slot, with one fetch and one decode per chunk.
    /// A chunk found in the cache (the next mount) is read from the cache file straight into the reply: no slot, no
    /// reference, no decode, no backend read.
    /// </summary>
    [Fact]
    public unsafe void With_a_cache_directory_fetched_chunks_are_served_from_a_slot_and_cached_ones_from_the_cache_file()
    {
        using var fx = new ImageFixture();
        int cs = (int)ImageFixture.ChunkSize;
        byte[] data = ImageFixture.Random(new Random(6), 3 * cs);
        fx.File("c.bin", data);
        fx.BuildImage();
        var buf = new byte[cs / 4];
        // Front to back in quarter chunks, as a reader whose readahead windows do not line up with the chunks; returns
        // how many of the 12 READs referred to a slot.
        int ReadAll(RafsMount m)
        {
            var fs = m.FileSystem;
            var refs = new HeldReferences();
            int referred = 0;
            Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, "c.bin"u8, out var e));
            Assert.Equal(0, fs.Open(Root, e.NodeId, 0, 0, out var o));
            fixed (byte* p = buf)
            {
                IoSegment[] one = [new IoSegment(p, buf.Length)];
                for (int off = 0; off < data.Length; off += buf.Length)
                {
                    buf.AsSpan().Fill(0xEE);
                    refs.ReadOffset = off;
                    Assert.Equal(0, fs.ReadOrReference(Root, e.NodeId, o.Handle, (ulong)off, one, refs, 0, out int n));
                    Assert.Equal(buf.Length, n);
                    // What the reply would carry: the buffer, with the referenced ranges taken from the slots.
                    byte[] sent = buf[..n];
                    foreach (var (fileOffset, seg, _, _) in refs.Held) seg.AsSpan().CopyTo(sent.AsSpan((int)(fileOffset - off)));
                    Assert.True(sent.AsSpan().SequenceEqual(data.AsSpan(off, n)), $"bytes at {off}");
                    referred += refs.Held.Count;
                    refs.ReleaseAll(); // the reply is sent
                }
            }
            fs.Release(Root, e.NodeId, o.Handle, 0, 0, 0);
            return referred;
        }

        using (var cold = fx.Open(o => { o.CacheDir = fx.CacheDir; o.AmplificationBytes = 0; }))
        {
            Assert.Equal(12, ReadAll(cold));
            Assert.Equal(3, cold.FileSystem.Recent.Decodes);
            Assert.Equal(3, cold.Cache.Metrics.ChunksFetched);
            Assert.Equal(3, cold.Cache.Metrics.ReadyChunks);
        }
        using (var warm = fx.Open(o => o.CacheDir = fx.CacheDir))
        {
            Assert.Equal(0, ReadAll(warm));
            Assert.Equal(0, warm.FileSystem.Recent.Decodes);
            Assert.Equal(0, warm.Cache.Metrics.ChunksFetched);
            Assert.Equal(0, warm.Backend.Metrics.Requests);
        }
    }
}
