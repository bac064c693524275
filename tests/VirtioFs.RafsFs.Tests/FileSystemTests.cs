using System.Runtime.InteropServices;
using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>The image filesystem called directly through its <see cref="IFileSystem"/> methods, as FuseServer calls it.</summary>
public sealed class FileSystemTests : IClassFixture<FileSystemTests.Built>
{
    private static readonly FuseContext Root = new(0, 0, 1, 1);
    private static readonly FuseContext User = new(2000, 2000, 1, 1);
    private readonly Built _b;

    public FileSystemTests(Built b) => _b = b;

    public sealed class Built : IDisposable
    {
        public ImageFixture Fx { get; } = new();
        public RafsMount Mount { get; }

        public Built()
        {
            Fx.PopulateStandard();
            Fx.BuildImage();
            Mount = Fx.Open(o => o.CacheDir = Fx.CacheDir);
        }

        public void Dispose()
        {
            Mount.Dispose();
            Fx.Dispose();
        }
    }

    private RafsFileSystem Fs => _b.Mount.FileSystem;

    private FuseEntry Look(string path)
    {
        ulong node = FuseConstants.RootId;
        FuseEntry e = default;
        foreach (var part in path.Split('/'))
        {
            Assert.Equal(0, Fs.Lookup(Root, node, System.Text.Encoding.UTF8.GetBytes(part), out e));
            node = e.NodeId;
        }
        return e;
    }

    [Fact]
    public void Root_is_node_1_and_entries_carry_day_long_timeouts()
    {
        Assert.Equal(0, Fs.GetAttr(Root, FuseConstants.RootId, null, out var attr, out var timeout));
        Assert.Equal(0x4000u, attr.mode & 0xF000);
        Assert.Equal(TimeSpan.FromSeconds(86400), timeout);
        var e = Look("a/b/c/deep.txt");
        Assert.NotEqual(FuseConstants.RootId, e.NodeId);
        Assert.Equal(TimeSpan.FromSeconds(86400), e.EntryTimeout);
        Assert.Equal(TimeSpan.FromSeconds(86400), e.AttrTimeout);
        Assert.Equal(14ul, e.Attr.size);
        Assert.Equal(Errno.ENOENT, Fs.Lookup(Root, FuseConstants.RootId, "no-such"u8, out _));
        Assert.Equal(Errno.ENOTDIR, Fs.Lookup(Root, e.NodeId, "x"u8, out _));
    }

    [Fact]
    public void Opens_keep_the_page_cache_and_refuse_writing()
    {
        var f = Look("a/size-4097.bin");
        Assert.Equal(0, Fs.Open(Root, f.NodeId, 0, 0, out var r));
        Assert.Equal(FuseConstants.FOPEN_KEEP_CACHE, r.OpenFlags);
        Assert.Equal(0, Fs.Release(Root, f.NodeId, r.Handle, 0, 0, 0));
        Assert.Equal(Errno.EROFS, Fs.Open(Root, f.NodeId, 1, 0, out _));      // O_WRONLY
        Assert.Equal(Errno.EROFS, Fs.Open(Root, f.NodeId, 2, 0, out _));      // O_RDWR
        Assert.Equal(Errno.EROFS, Fs.Open(Root, f.NodeId, 0x200, 0, out _));  // O_TRUNC
        Assert.Equal(Errno.EISDIR, Fs.Open(Root, Look("a").NodeId, 0, 0, out _));
        Assert.Equal(0, Fs.OpenDir(Root, Look("a").NodeId, 0, out var d));
        Assert.Equal(FuseConstants.FOPEN_KEEP_CACHE | FuseConstants.FOPEN_CACHE_DIR, d.OpenFlags);
        Assert.Equal(0, Fs.OpenFiles);
    }

    [Fact]
    public unsafe void Reads_fill_the_reply_segments_and_allocate_nothing()
    {
        var f = Look("a/size-" + (3 * ImageFixture.ChunkSize + 5) + ".bin");
        byte[] expected = File.ReadAllBytes(_b.Fx.S("a/size-" + (3 * ImageFixture.ChunkSize + 5) + ".bin"));
        Assert.Equal(0, Fs.Open(Root, f.NodeId, 0, 0, out var h));
        var buf = new byte[100_000];
        fixed (byte* p = buf)
        {
            // Two segments, the way a virtio chain or /dev/fuse reply splits a READ.
            IoSegment[] segs = [new IoSegment(p, 30_000), new IoSegment(p + 30_000, 70_000)];
            Assert.Equal(0, Fs.Read(Root, f.NodeId, h.Handle, 100_000, segs, 0, out int n));
            Assert.Equal(expected.Length - 100_000, n);
            Assert.Equal(expected.AsSpan(100_000).ToArray(), buf.AsSpan(0, n).ToArray());
            for (int i = 0; i < 3; i++) Fs.Read(Root, f.NodeId, h.Handle, 0, segs, 0, out _);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100; i++) Fs.Read(Root, f.NodeId, h.Handle, (ulong)(i * 1000), segs, 0, out _);
            Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
            Assert.Equal(0, Fs.Read(Root, f.NodeId, h.Handle, (ulong)expected.Length, segs, 0, out n));
            Assert.Equal(0, n);
            Assert.Equal(Errno.EBADF, Fs.Read(Root, f.NodeId, h.Handle + 1000, 0, segs, 0, out _));
            Assert.Equal(Errno.EBADF, Fs.Read(Root, Look("a/size-1.bin").NodeId, h.Handle, 0, segs, 0, out _));
        }
        Fs.Release(Root, f.NodeId, h.Handle, 0, 0, 0);
    }

    [Fact]
    public void Xattrs_follow_the_size_then_value_protocol()
    {
        var f = Look("a/size-1.bin");
        Assert.Equal(0, Fs.GetXattr(Root, f.NodeId, "user.note"u8, default, out int len));
        Assert.Equal(11, len);
        var small = new byte[5];
        Assert.Equal(Errno.ERANGE, Fs.GetXattr(Root, f.NodeId, "user.note"u8, small, out _));
        var value = new byte[64];
        Assert.Equal(0, Fs.GetXattr(Root, f.NodeId, "user.note"u8, value, out len));
        Assert.Equal("hello xattr"u8.ToArray(), value.AsSpan(0, len).ToArray());
        Assert.Equal(Errno.ENODATA, Fs.GetXattr(Root, f.NodeId, "user.none"u8, value, out _));
        Assert.Equal(0, Fs.ListXattr(Root, f.NodeId, default, out len));
        var list = new byte[len];
        Assert.Equal(0, Fs.ListXattr(Root, f.NodeId, list, out _));
        Assert.Equal(["user.empty", "user.note"], System.Text.Encoding.ASCII.GetString(list).Split('\0', StringSplitOptions.RemoveEmptyEntries).Order());
        Assert.Equal(Errno.ERANGE, Fs.ListXattr(Root, f.NodeId, new byte[len - 1], out _));
    }

    [Fact]
    public void Access_checks_mode_bits_and_refuses_writes()
    {
        var owned = Look("owned"); // 0640 1000:1001
        Assert.Equal(Errno.EROFS, Fs.Access(Root, owned.NodeId, 2));
        Assert.Equal(0, Fs.Access(Root, owned.NodeId, 4));
        Assert.Equal(0, Fs.Access(new FuseContext(1000, 5, 1, 1), owned.NodeId, 4));
        Assert.Equal(0, Fs.Access(new FuseContext(7, 1001, 1, 1), owned.NodeId, 4));
        Assert.Equal(Errno.EACCES, Fs.Access(User, owned.NodeId, 4));
        Assert.Equal(Errno.EACCES, Fs.Access(Root, owned.NodeId, 1)); // no x bit anywhere
        Assert.Equal(0, Fs.Access(User, owned.NodeId, 0));
    }

    [Fact]
    public void Statfs_counts_the_image()
    {
        Assert.Equal(0, Fs.StatFs(Root, FuseConstants.RootId, out var st));
        Assert.Equal(_b.Mount.Image.InodeCount, st.files);
        Assert.Equal(0ul, st.bfree);
        Assert.Equal(255u, st.namelen);
        Assert.True(st.blocks > 0);
    }

    [Fact]
    public unsafe void Hostile_node_ids_handles_and_offsets_give_errors_not_exceptions()
    {
        var rnd = new Random(9);
        var buf = new byte[4096];
        var list = new byte[256];
        fixed (byte* p = buf)
        {
            IoSegment[] segs = [new IoSegment(p, buf.Length)];
            for (int i = 0; i < 5000; i++)
            {
                ulong node = i % 3 == 0 ? (ulong)rnd.NextInt64() : (ulong)rnd.Next(0, 4096);
                ulong off = (ulong)rnd.NextInt64();
                Fs.GetAttr(Root, node, null, out _, out _);
                Fs.Lookup(Root, node, "a"u8, out _);
                Fs.ReadLink(Root, node, buf, out _);
                Fs.ListXattr(Root, node, list, out _);
                Fs.Read(Root, node, (ulong)rnd.Next(0, 4), off, segs, 0, out _);
                Fs.Lseek(Root, node, (ulong)rnd.Next(0, 4), off, (uint)rnd.Next(0, 6), out _);
                if (Fs.Open(Root, node, 0, 0, out var h) == 0)
                {
                    Fs.Read(Root, node, h.Handle, off % (1UL << 33), segs, 0, out _);
                    Fs.Release(Root, node, h.Handle, 0, 0, 0);
                }
            }
        }
        Assert.Equal(0, Fs.OpenFiles);
    }

    [Fact]
    public async Task Prefetch_of_listed_files_fills_the_cache_with_their_chunks_only()
    {
        using var m = _b.Fx.Open(o =>
        {
            o.CacheDir = Path.Combine(_b.Fx.Root, "cache-prefetch");
            o.Prefetch = PrefetchSource.Files;
            o.PrefetchFiles = ["/a/size-" + (3 * ImageFixture.ChunkSize + 5) + ".bin"];
        });
        await m.Prefetch.WaitAsync(TimeSpan.FromSeconds(30));
        bool Cached(string path)
        {
            Assert.Equal(0, m.Image.Lookup(m.Image.RootIno, "a"u8, out ulong a));
            Assert.Equal(0, m.Image.Lookup(a, System.Text.Encoding.UTF8.GetBytes(path), out ulong ino));
            var chunks = new List<RafsChunk>();
            Assert.Equal(0, m.Image.GetChunks(ino, chunks));
            return chunks.All(c => m.Cache.IsCached(c));
        }
        Assert.True(Cached("size-" + (3 * ImageFixture.ChunkSize + 5) + ".bin"));
        Assert.False(Cached("size-" + ((1 << 20) + 7) + ".bin"));
    }

    [Fact]
    public unsafe void Read_through_decodes_each_chunk_once_for_small_sequential_reads_and_reads_right_anywhere()
    {
        using var m = _b.Fx.Open(); // no cache directory
        var fs = m.FileSystem;
        string name = "a/size-" + ((1 << 20) + 7) + ".bin";
        byte[] expected = File.ReadAllBytes(_b.Fx.S(name));
        Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, "a"u8, out var a));
        Assert.Equal(0, fs.Lookup(Root, a.NodeId, System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(name)), out var f));
        Assert.Equal(0, fs.Open(Root, f.NodeId, 0, 0, out var h));
        var buf = new byte[3 * ImageFixture.ChunkSize];
        fixed (byte* p = buf)
        {
            // 4 KiB reads front to back: each 64 KiB chunk comes from the blob once.
            IoSegment[] page = [new IoSegment(p, 4096)];
            for (int off = 0; off < expected.Length; off += 4096)
            {
                Assert.Equal(0, fs.Read(Root, f.NodeId, h.Handle, (ulong)off, page, 0, out int n));
                Assert.Equal(Math.Min(4096, expected.Length - off), n);
                Assert.True(buf.AsSpan(0, n).SequenceEqual(expected.AsSpan(off, n)), $"bytes at {off}");
            }
            long chunks = (expected.Length + ImageFixture.ChunkSize - 1) / ImageFixture.ChunkSize;
            Assert.Equal(chunks, m.Backend.Metrics.Requests);
            // Random ranges across chunk and segment boundaries.
            var rnd = new Random(4);
            for (int i = 0; i < 200; i++)
            {
                int off = rnd.Next(0, expected.Length);
                int first = rnd.Next(1, 100_000), second = rnd.Next(1, 100_000);
                IoSegment[] two = [new IoSegment(p, first), new IoSegment(p + first, second)];
                Assert.Equal(0, fs.Read(Root, f.NodeId, h.Handle, (ulong)off, two, 0, out int n));
                Assert.Equal(Math.Min(first + second, expected.Length - off), n);
                Assert.True(buf.AsSpan(0, n).SequenceEqual(expected.AsSpan(off, n)), $"{n} bytes at {off}");
            }
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 50; i++) fs.Read(Root, f.NodeId, h.Handle, (ulong)(i * 9000), page, 0, out _);
            Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
        }
        fs.Release(Root, f.NodeId, h.Handle, 0, 0, 0);
    }

    [Fact]
    public unsafe void Read_through_keeps_two_interleaved_files_decoded_and_sends_whole_chunks_straight_to_the_reply()
    {
        using var fx = new ImageFixture();
        var rnd = new Random(21);
        int cs = (int)ImageFixture.ChunkSize;
        var files = new Dictionary<string, byte[]> { ["x.bin"] = ImageFixture.Random(rnd, 48 * cs), ["y.bin"] = ImageFixture.Random(rnd, 48 * cs + 900), ["s.txt"] = ImageFixture.Random(rnd, 5000) };
        foreach (var (n, d) in files) fx.File(n, d);
        fx.BuildImage();
        // No cache directory: read-through with decoded-chunk slots. Without decode-ahead, so the counts below are
        // exact (background decodes would race the reader for the slots).
        using var m = fx.Open(o => o.DecodeAhead = false);
        var fs = m.FileSystem;
        var recent = fs.Recent;
        var h = new Dictionary<string, (ulong Node, ulong Handle)>();
        foreach (var n in files.Keys)
        {
            Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, System.Text.Encoding.UTF8.GetBytes(n), out var e));
            Assert.Equal(0, fs.Open(Root, e.NodeId, 0, 0, out var o));
            h[n] = (e.NodeId, o.Handle);
        }
        var buf = new byte[3 * cs];
        fixed (byte* p = buf)
        {
            // Two files read side by side in 24 KiB pieces that straddle chunks: every chunk is fetched and decoded
            // once, whichever slots the two streams hash to (x has 48 chunks, so chunk i of x and chunk i of y lie a
            // multiple of 8 apart in the blob: a direct-mapped table of 8 would evict one for the other every time).
            IoSegment[] piece = [new IoSegment(p, 24 * 1024)];
            for (int off = 0; off < 48 * cs + 900; off += 24 * 1024)
            {
                foreach (var n in new[] { "x.bin", "y.bin" })
                {
                    Assert.Equal(0, fs.Read(Root, h[n].Node, h[n].Handle, (ulong)off, piece, 0, out int got));
                    int want = Math.Max(0, Math.Min(24 * 1024, files[n].Length - off));
                    Assert.Equal(want, got);
                    if (got > 0) Assert.True(buf.AsSpan(0, got).SequenceEqual(files[n].AsSpan(off, got)), $"{n} at {off}");
                }
            }
            // 96 full chunks through the slots; y's short last chunk lies whole inside one piece and goes straight
            // to the reply.
            Assert.Equal(96, recent.Decodes);
            Assert.Equal(1, recent.Bypassed);
            Assert.Equal(97, m.Backend.Metrics.Requests);
            // A READ of exactly a chunk, and a small file read whole, skip the slots.
            IoSegment[] chunk = [new IoSegment(p, cs)];
            Assert.Equal(0, fs.Read(Root, h["x.bin"].Node, h["x.bin"].Handle, 7UL * (ulong)cs, chunk, 0, out int n1));
            Assert.True(buf.AsSpan(0, n1).SequenceEqual(files["x.bin"].AsSpan(7 * cs, cs)));
            IoSegment[] two = [new IoSegment(p, 1000), new IoSegment(p + 1000, 3 * cs - 1000)];
            Assert.Equal(0, fs.Read(Root, h["s.txt"].Node, h["s.txt"].Handle, 0, two, 0, out int n2));
            Assert.Equal(5000, n2);
            Assert.True(buf.AsSpan(0, n2).SequenceEqual(files["s.txt"]));
            Assert.Equal(3, recent.Bypassed);
            Assert.Equal(96, recent.Decodes);
        }
        foreach (var (n, (node, handle)) in h) fs.Release(Root, node, handle, 0, 0, 0);
    }

    [Fact]
    public unsafe void Read_through_decodes_the_next_chunk_ahead_of_a_sequential_reader()
    {
        using var fx = new ImageFixture();
        int cs = (int)ImageFixture.ChunkSize;
        var data = ImageFixture.Random(new Random(77), 6 * cs);
        fx.File("seq.bin", data);
        fx.BuildImage();
        using var m = fx.Open(); // read-through, decode-ahead on (the default)
        var fs = m.FileSystem;
        var recent = fs.Recent;
        Assert.Equal(0, fs.Lookup(Root, FuseConstants.RootId, "seq.bin"u8, out var e));
        Assert.Equal(0, fs.Open(Root, e.NodeId, 0, 0, out var o));
        var buf = new byte[cs / 4];
        fixed (byte* p = buf)
        {
            IoSegment[] quarter = [new IoSegment(p, buf.Length)];
            for (int chunk = 0; chunk < 6; chunk++)
            {
                for (int q = 0; q < 4; q++)
                {
                    int off = chunk * cs + q * buf.Length;
                    Assert.Equal(0, fs.Read(Root, e.NodeId, o.Handle, (ulong)off, quarter, 0, out int n));
                    Assert.Equal(buf.Length, n);
                    Assert.True(buf.AsSpan().SequenceEqual(data.AsSpan(off, n)), $"at {off}");
                }
                // Entering chunk k queued chunk k + 1: wait for it, so the reader's next chunk is already decoded.
                if (chunk < 5)
                {
                    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
                    while (recent.DecodedAhead < chunk + 1 && DateTime.UtcNow < deadline) Thread.Sleep(5);
                }
            }
        }
        // Chunk 0 by the reader, chunks 1..5 ahead of it; none decoded twice.
        Assert.Equal(5, recent.DecodedAhead);
        Assert.Equal(6, recent.Decodes);
        Assert.Equal(6, m.Backend.Metrics.Requests);
        fs.Release(Root, e.NodeId, o.Handle, 0, 0, 0);
    }

    [Fact]
    public async Task The_image_prefetch_table_is_pulled_by_default_when_there_is_a_cache()
    {
        using var fx = new ImageFixture();
        var rnd = new Random(8);
        fx.File("boot/early.bin", ImageFixture.Random(rnd, 200_000));
        fx.File("late/later.bin", ImageFixture.Random(rnd, 200_000));
        fx.BuildImage(prefetch: ["/boot"]);
        using var m = RafsMount.Open(new RafsMountOptions { Bootstrap = fx.Bootstrap, BlobDir = fx.BlobDir, CacheDir = fx.CacheDir });
        Assert.NotEmpty(m.Image.PrefetchInodes);
        await m.Prefetch.WaitAsync(TimeSpan.FromSeconds(30));
        bool Cached(string dir, string file)
        {
            Assert.Equal(0, m.Image.Lookup(m.Image.RootIno, System.Text.Encoding.UTF8.GetBytes(dir), out ulong d));
            Assert.Equal(0, m.Image.Lookup(d, System.Text.Encoding.UTF8.GetBytes(file), out ulong ino));
            var chunks = new List<RafsChunk>();
            Assert.Equal(0, m.Image.GetChunks(ino, chunks));
            return chunks.All(c => m.Cache.IsCached(c));
        }
        Assert.True(Cached("boot", "early.bin"));
        Assert.False(Cached("late", "later.bin"));
    }
}
