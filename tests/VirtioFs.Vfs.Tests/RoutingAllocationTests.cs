using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs.Tests;

/// <summary>READ and WRITE are the hot path through the Vfs: its routing (metrics, the mount pin, the handle check) must
/// not allocate per request, or a busy guest feeds the garbage collector from every read.</summary>
public sealed class RoutingAllocationTests
{
    /// <summary>A filesystem whose reads and writes allocate nothing themselves, so any allocation is the Vfs's.</summary>
    private sealed class QuietFs : IFileSystem
    {
        public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
        {
            attr = new FuseAttr { ino = nodeId, mode = 0x41ED, nlink = 2 };
            timeout = TimeSpan.FromSeconds(1);
            return 0;
        }

        public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
        {
            result = new FuseOpenResult { Handle = 7 };
            return 0;
        }

        public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
        {
            bytesRead = handle == 7 ? 512 : 0;
            return handle == 7 ? 0 : Errno.EBADF;
        }

        public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags,
            out int bytesWritten)
        {
            bytesWritten = handle == 7 ? 512 : 0;
            return handle == 7 ? 0 : Errno.EBADF;
        }
    }

    [Fact]
    public void Read_and_write_through_a_mount_allocate_nothing()
    {
        using var vfs = new Vfs(new VfsOptions(), NullLogger.Instance);
        vfs.Mount("/images", new QuietFs());
        vfs.Init(default);
        var ctx = new FuseContext(0, 0, 1, 1);
        Assert.Equal(0, vfs.Lookup(ctx, FuseConstants.RootId, "images"u8, out FuseEntry root));
        Assert.Equal(0, vfs.Open(ctx, root.NodeId, 0, 0, out FuseOpenResult open));
        ReadOnlySpan<IoSegment> none = [];

        long total = 0;
        for (int i = 0; i < 100; i++) // warm up: the handlers' delegates are created once, on first use
        {
            total += RoundTrip(vfs, ctx, root.NodeId, open.Handle, none);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            total += RoundTrip(vfs, ctx, root.NodeId, open.Handle, none);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(10_100L * 1024, total); // every call reached the filesystem and came back
        Assert.Equal(0, allocated);
    }

    /// <summary>The bytes read and written, or -1 on an error (no Assert inside the measured loop: xunit's comparers allocate).</summary>
    private static long RoundTrip(Vfs vfs, in FuseContext ctx, ulong node, ulong handle, ReadOnlySpan<IoSegment> buffers)
    {
        if (vfs.Read(ctx, node, handle, 0, buffers, 0, out int read) != 0) return -1;
        if (vfs.Write(ctx, node, handle, 0, buffers, 0, 0, out int written) != 0) return -1;
        return read + written;
    }
}
