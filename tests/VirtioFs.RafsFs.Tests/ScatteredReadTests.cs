using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// A whole small file read by a guest arrives as one READ whose reply is a page per descriptor (virtio-fs): more
/// pieces than a chunk read used to be handed on in. It is read straight into the pieces (no per-READ array of the data), and a
/// chunk that fails its digest leaves none of its bytes in them.
/// </summary>
public sealed class ScatteredReadTests
{
    private static readonly FuseContext Root = new(0, 0, 1, 1);
    // The fixture's chunks are 64 KiB: in 2 KiB pieces one takes 32, as a guest's 128 KiB in 4 KiB pages does.
    private const int Page = 2048;

    [Fact]
    public unsafe void A_whole_chunk_read_into_many_pages_is_exact_and_allocates_no_copy_of_it()
    {
        using var fx = new ImageFixture();
        var data = ImageFixture.Random(new Random(5), (int)ImageFixture.ChunkSize - 1000); // one chunk: 31 pieces and a part
        fx.File("small.bin", data);
        fx.BuildImage();
        using var m = fx.Open(o => o.DecodeAhead = false);
        var fs = m.FileSystem;
        Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, "small.bin"u8, out var e));
        Assert.Equal(0, fs.Open(Root, e.NodeId, 0, 0, out var h));
        var buf = new byte[32 * Page];
        fixed (byte* p = buf)
        {
            // 32 pages in reverse order, as a guest's page cache pages lie in its memory: nothing contiguous.
            var pages = new IoSegment[32];
            for (int i = 0; i < pages.Length; i++) pages[i] = new IoSegment(p + (31 - i) * Page, Page);
            Assert.Equal(0, fs.Read(Root, e.NodeId, h.Handle, 0, pages, 0, out int n));
            Assert.Equal(data.Length, n);
            Assert.True(Gather(buf, n).SequenceEqual(data));
            long before = GC.GetAllocatedBytesForCurrentThread();
            Assert.Equal(0, fs.Read(Root, e.NodeId, h.Handle, 0, pages, 0, out n));
            // Nothing sized by the data (the fallback allocated the whole chunk per READ); the few hundred bytes the
            // whole-chunk path allocates into a single buffer as well are the same here.
            Assert.InRange(GC.GetAllocatedBytesForCurrentThread() - before, 0, 2048);
            Assert.True(Gather(buf, n).SequenceEqual(data));
            Assert.Equal(2, fs.Recent.Bypassed);
        }
        fs.Release(Root, e.NodeId, h.Handle, 0, 0, 0);
    }

    [Theory]
    [InlineData(Compressor.None)]
    [InlineData(Compressor.Lz4Block)]
    public unsafe void A_corrupt_chunk_read_into_many_pages_is_EIO_and_leaves_none_of_its_bytes(Compressor compressor)
    {
        using var fx = new ImageFixture();
        var text = new byte[(int)ImageFixture.ChunkSize - 1000];
        for (int i = 0; i < text.Length; i++) text[i] = (byte)"abcdefgh "[i % 8 + (i / 2048 % 2)]; // compressible
        fx.File("victim.bin", text);
        fx.BuildImage(compressor: compressor);
        using (var blob = new FileStream(fx.BlobPath, FileMode.Open, FileAccess.ReadWrite))
        {
            // A byte in the middle of the chunk's stored data.
            var c = OnlyChunk(fx, "victim.bin");
            blob.Position = (long)c.CompressedOffset + c.CompressedSize / 2;
            int b = blob.ReadByte();
            blob.Position--;
            blob.WriteByte((byte)(b ^ 0x01));
        }
        using var m = fx.Open();
        var fs = m.FileSystem;
        Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, "victim.bin"u8, out var e));
        Assert.Equal(0, fs.Open(Root, e.NodeId, 0, 0, out var h));
        var buf = new byte[32 * Page];
        buf.AsSpan().Fill(0xEE);
        fixed (byte* p = buf)
        {
            var pages = new IoSegment[32];
            for (int i = 0; i < pages.Length; i++) pages[i] = new IoSegment(p + (31 - i) * Page, Page);
            Assert.Equal(Errno.EIO, fs.Read(Root, e.NodeId, h.Handle, 0, pages, 0, out _));
        }
        Assert.True(buf.AsSpan().IndexOfAnyExcept((byte)0xEE) < 0, "bytes of a chunk that failed its digest reached the reply");
        Assert.True(m.Cache.Metrics.DigestErrors > 0);
        fs.Release(Root, e.NodeId, h.Handle, 0, 0, 0);
    }

    private static RafsChunk OnlyChunk(ImageFixture fx, string name)
    {
        using var img = RafsImage.Open(fx.Bootstrap);
        Assert.Equal(0, img.Lookup(img.RootIno, System.Text.Encoding.UTF8.GetBytes(name), out ulong ino));
        var chunks = new List<RafsChunk>();
        Assert.Equal(0, img.GetChunks(ino, chunks));
        return Assert.Single(chunks);
    }

    /// <summary>The reply bytes in order: page i of the reply is page 31 - i of the buffer.</summary>
    private static byte[] Gather(byte[] buf, int n)
    {
        var o = new byte[n];
        for (int off = 0; off < n; off += Page) buf.AsSpan((31 - off / Page) * Page, Math.Min(Page, n - off)).CopyTo(o.AsSpan(off));
        return o;
    }
}
