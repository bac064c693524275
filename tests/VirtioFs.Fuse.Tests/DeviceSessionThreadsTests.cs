using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;

namespace VirtioFs.Fuse.Tests;

/// <summary>
/// <see cref="FuseDeviceOptions.Threads"/> readers on the one /dev/fuse fd really serve requests side by side (what
/// <c>vfsd fuse --thread-num N</c> promises, nydusd's fuse-threads): two host readers whose READs block in a slow
/// filesystem are both inside it at once with 4 threads, and never with 1 (which shows the test can tell). Needs root
/// and /dev/fuse, as every host-mount test here does.
/// </summary>
public sealed partial class DeviceSessionThreadsTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("vfs-threads-");

    public void Dispose()
    {
        umount2(_root.FullName, 2);
        try
        {
            _root.Delete(true);
        }
        catch (IOException)
        {
        }
    }

    [Theory]
    [InlineData(4, 2)]
    [InlineData(1, 1)]
    public void Slow_reads_are_served_in_parallel_by_the_reader_threads(int threads, int expectedConcurrency)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(_root.FullName, "mnt")).FullName;
        var fs = new SlowFs(readersToWaitFor: 2, holdReadsFor: TimeSpan.FromSeconds(threads == 1 ? 1 : 20));
        using (FuseDeviceSession.Mount(mnt, new FuseServer(fs, new FuseServerOptions(), NullLogger.Instance),
            new FuseDeviceOptions { Threads = threads }, NullLogger.Instance))
        {
            byte[]? a = null, b = null;
            var ta = new Thread(() => a = File.ReadAllBytes(Path.Combine(mnt, "a")));
            var tb = new Thread(() => b = File.ReadAllBytes(Path.Combine(mnt, "b")));
            ta.Start();
            tb.Start();
            Assert.True(ta.Join(TimeSpan.FromSeconds(60)) && tb.Join(TimeSpan.FromSeconds(60)), "readers finished");
            Assert.Equal(SlowFs.Content, a);
            Assert.Equal(SlowFs.Content, b);
            Assert.Equal(expectedConcurrency, fs.MaxConcurrentReads);
        }
    }

    /// <summary>Two files, "a" and "b"; a READ waits (up to a limit) until the expected number of reads is inside.</summary>
    private sealed class SlowFs(int readersToWaitFor, TimeSpan holdReadsFor) : IFileSystem
    {
        public static readonly byte[] Content = Enumerable.Range(0, 4096).Select(i => (byte)(i * 7)).ToArray();
        private readonly object _gate = new();
        private int _inside;

        public int MaxConcurrentReads { get; private set; }

        private static FuseAttr Attr(ulong ino) => ino == FuseConstants.RootId
            ? new FuseAttr { ino = ino, mode = 0x41ED, nlink = 2 }
            : new FuseAttr { ino = ino, mode = 0x8124, nlink = 1, size = (ulong)Content.Length };

        public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
        {
            entry = default;
            ulong ino = name.SequenceEqual("a"u8) ? 2UL : name.SequenceEqual("b"u8) ? 3UL : 0;
            if (parent != FuseConstants.RootId || ino == 0) return Errno.ENOENT;
            entry = new FuseEntry { NodeId = ino, Attr = Attr(ino) };
            return 0;
        }

        public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
        {
            attr = Attr(nodeId);
            timeout = TimeSpan.Zero;
            return 0;
        }

        public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
        {
            // Direct I/O: every read(2) is one READ here, with no page cache or readahead in between.
            result = new FuseOpenResult { Handle = nodeId, OpenFlags = FuseConstants.FOPEN_DIRECT_IO };
            return 0;
        }

        public int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner) => 0;

        public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
        {
            bytesRead = 0;
            if (offset >= (ulong)Content.Length) return 0;
            lock (_gate)
            {
                _inside++;
                MaxConcurrentReads = Math.Max(MaxConcurrentReads, _inside);
                var deadline = DateTime.UtcNow + holdReadsFor;
                // A slow backend: the read stays here until the other reader has arrived too, or the limit passes.
                while (_inside < readersToWaitFor && DateTime.UtcNow < deadline)
                {
                    Monitor.Wait(_gate, deadline - DateTime.UtcNow);
                }
                Monitor.PulseAll(_gate);
            }
            ReadOnlySpan<byte> rest = Content.AsSpan((int)offset);
            foreach (IoSegment seg in destination)
            {
                int n = Math.Min(seg.Length, rest.Length);
                unsafe
                {
                    rest[..n].CopyTo(new Span<byte>(seg.Pointer, n));
                }
                rest = rest[n..];
                bytesRead += n;
            }
            lock (_gate)
            {
                _inside--;
            }
            return 0;
        }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int umount2(string target, int flags);
}
