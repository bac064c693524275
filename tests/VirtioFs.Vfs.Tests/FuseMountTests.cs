using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;

namespace VirtioFs.Vfs.Tests;

internal static partial class TestInterop
{
    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    public const int MNT_DETACH = 2;
}

/// <summary>The real thing: a Vfs served to the kernel through /dev/fuse, passthroughs mounted in and out under load.</summary>
public sealed class FuseMountTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("vfs-mnt-");
    private readonly string _mnt;
    private readonly Vfs _vfs = new(new VfsOptions(), NullLogger.Instance);
    private readonly List<PassthroughFileSystem> _fss = [];
    private readonly FuseDeviceSession _session;

    public FuseMountTests()
    {
        _mnt = Directory.CreateDirectory(Path.Combine(_root.FullName, "mnt")).FullName;
        var server = new FuseServer(_vfs, new FuseServerOptions(), NullLogger.Instance);
        _session = FuseDeviceSession.Mount(_mnt, server, new FuseDeviceOptions { Threads = 2 }, NullLogger.Instance);
    }

    private PassthroughFileSystem Passthrough(string name)
    {
        string dir = Directory.CreateDirectory(Path.Combine(_root.FullName, name)).FullName;
        var fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = dir, Cache = CachePolicy.Never }, NullLogger.Instance);
        _fss.Add(fs);
        return fs;
    }

    private string Src(string name, string rel) => Path.Combine(_root.FullName, name, rel);
    private string Mnt(string rel) => Path.Combine(_mnt, rel);

    public void Dispose()
    {
        try
        {
            _session.Dispose();
        }
        finally
        {
            TestInterop.umount2(_mnt, TestInterop.MNT_DETACH);
            _vfs.Dispose();
            foreach (var fs in _fss) fs.Dispose();
            try
            {
                _root.Delete(true);
            }
            catch (IOException)
            {
            }
        }
    }

    [Fact]
    public void A_passthrough_mount_behaves_like_the_passthrough()
    {
        _vfs.Mount("/containers", Passthrough("shared"));
        Assert.Equal(["containers"], Directory.GetFileSystemEntries(_mnt).Select(Path.GetFileName));

        string sub = Mnt("containers/sandbox/rootfs");
        Directory.CreateDirectory(sub);
        File.WriteAllText(Path.Combine(sub, "hello.txt"), "hello");
        File.Move(Path.Combine(sub, "hello.txt"), Path.Combine(sub, "greeting.txt"));
        File.CreateSymbolicLink(Path.Combine(sub, "link"), "greeting.txt");
        Assert.Equal("hello", File.ReadAllText(Src("shared", "sandbox/rootfs/greeting.txt")));
        Assert.Equal("greeting.txt", new FileInfo(Path.Combine(sub, "link")).LinkTarget);
        Assert.Equal("hello", File.ReadAllText(Path.Combine(sub, "link")));
        Assert.Equal(["greeting.txt", "link"], Directory.GetFileSystemEntries(sub).Select(Path.GetFileName).Order());
        // Pseudo directories refuse changes.
        Assert.ThrowsAny<IOException>(() => File.WriteAllText(Mnt("new.txt"), "x"));
        Assert.ThrowsAny<IOException>(() => Directory.CreateDirectory(Mnt("rafs")));
        // Across filesystems a rename is EXDEV, which File.Move turns into copy + delete.
        _vfs.Mount("/other", Passthrough("other"));
        File.Move(Path.Combine(sub, "greeting.txt"), Mnt("other/moved.txt"));
        Assert.Equal("hello", File.ReadAllText(Src("other", "moved.txt")));
    }

    [Fact]
    public void Mounts_come_and_go_while_a_reader_keeps_reading_another()
    {
        var containers = Passthrough("shared");
        byte[] data = new byte[256 * 1024];
        new Random(7).NextBytes(data);
        File.WriteAllBytes(Src("shared", "data.bin"), data);
        _vfs.Mount("/containers", containers);

        using var stop = new CancellationTokenSource();
        long reads = 0;
        Exception? readerError = null;
        var reader = new Thread(() =>
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    byte[] got = File.ReadAllBytes(Mnt("containers/data.bin"));
                    if (!got.AsSpan().SequenceEqual(data)) throw new InvalidDataException("content differs");
                    Interlocked.Increment(ref reads);
                }
            }
            catch (Exception ex)
            {
                readerError = ex;
            }
        });
        reader.Start();

        for (int i = 0; i < 5; i++)
        {
            string name = $"image{i}";
            var image = Passthrough(name);
            for (int f = 0; f < 300; f++) File.WriteAllText(Src(name, $"f{f:D3}"), $"{name}/{f}");
            string mp = $"/rafs/c{i}/lowerdir";
            _vfs.Mount(mp, image);

            // A listing with attributes: READDIRPLUS relayed through the Vfs, in several rounds.
            var entries = new DirectoryInfo(Mnt($"rafs/c{i}/lowerdir")).GetFiles();
            Assert.Equal(300, entries.Length);
            Assert.All(entries, e => Assert.True(e.Length > 0));
            Assert.Equal($"{name}/123", File.ReadAllText(Mnt($"rafs/c{i}/lowerdir/f123")));

            Assert.Same(image, _vfs.Umount(mp));
            // Destroy dropped everything the kernel still held in it: only the root fd remains.
            Assert.Equal(1, image.InodeCount);
            Assert.Equal(0, image.HandleCount);
            Assert.ThrowsAny<IOException>(() => File.ReadAllText(Mnt($"rafs/c{i}/lowerdir/f123")));
        }

        Assert.Contains(_vfs.Metrics.Snapshot(), s => s.Opcode == FuseOpcode.ReadDirPlus && s.Count > 0);
        Thread.Sleep(200);
        stop.Cancel();
        reader.Join();
        Assert.Null(readerError);
        Assert.True(Interlocked.Read(ref reads) > 0);
        Assert.Equal(["/containers"], _vfs.Mounts.Select(m => m.Path));
        Assert.True(SpinWait.SpinUntil(() => !Directory.Exists(Mnt("rafs")), TimeSpan.FromSeconds(5)), "pruned dirs disappear once their entry expires");
    }
}
