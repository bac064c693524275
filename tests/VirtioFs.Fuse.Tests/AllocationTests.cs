using static VirtioFs.Fuse.Tests.Harness;

namespace VirtioFs.Fuse.Tests;

/// <summary>The request path allocates nothing once a worker's buffers are warm.</summary>
public class AllocationTests
{
    private sealed class QuietFs : IFileSystem
    {
        public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
        {
            entry = new FuseEntry { NodeId = 2, Attr = new FuseAttr { ino = 2 } };
            return 0;
        }

        public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
        {
            attr = new FuseAttr { ino = nodeId };
            timeout = TimeSpan.FromSeconds(1);
            return 0;
        }

        public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
        {
            bytesRead = 0;
            foreach (IoSegment s in destination) bytesRead += s.Length;
            return 0;
        }

        public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
        {
            bytesWritten = 0;
            foreach (IoSegment s in source) bytesWritten += s.Length;
            return 0;
        }

        public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
        {
            for (ulong i = offset; i < 50 && writer.TryAdd(10 + i, i + 1, 8, "some-entry-name"u8); i++)
            {
            }
            return 0;
        }
    }

    [Fact]
    public unsafe void Hot_requests_do_not_allocate()
    {
        using var h = new Harness(new QuietFs());
        h.Init();
        byte[][] requests =
        [
            Request(FuseOpcode.Lookup, 1, Name("file")),
            Request(FuseOpcode.GetAttr, 2, new byte[16]),
            Request(FuseOpcode.Read, 2, Bytes(new FuseReadIn { fh = 1, size = 8192 })),
            Request(FuseOpcode.Write, 2, Concat(Bytes(new FuseWriteIn { fh = 1, size = 4096 }), new byte[4096])),
            Request(FuseOpcode.ReadDir, 2, Bytes(new FuseReadIn { fh = 1, size = 4096 })),
            Request(FuseOpcode.Forget, 2, Bytes(new FuseForgetIn { nlookup = 1 })),
        ];
        // Stage every request in native memory once, split in two segments, as a transport would.
        var staged = new List<(nint P, int Len)>();
        foreach (byte[] r in requests)
        {
            byte* p = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)r.Length);
            r.CopyTo(new Span<byte>(p, r.Length));
            staged.Add(((nint)p, r.Length));
        }
        byte* reply = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc(16384);
        try
        {
            void RunAll()
            {
                foreach (var (p, len) in staged)
                {
                    h.Buffers.Clear();
                    h.Buffers.AddReadable((byte*)p, 30);
                    h.Buffers.AddReadable((byte*)p + 30, len - 30);
                    h.Buffers.AddWritable(reply, 100);
                    h.Buffers.AddWritable(reply + 100, 16384 - 100);
                    h.Server.Handle(h.Buffers);
                }
            }
            RunAll(); // warm up (JIT, segment arrays)
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 200; i++)
            {
                RunAll();
            }
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        finally
        {
            foreach (var (p, _) in staged) System.Runtime.InteropServices.NativeMemory.Free((void*)p);
            System.Runtime.InteropServices.NativeMemory.Free(reply);
        }
    }
}
