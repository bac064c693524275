using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Cache;
using VirtioFs.Tests.Shared;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// A source tree built by the test, the RAFS image of it (built in-process with the project's builder) and, on
/// demand, the image served through <see cref="RafsMount"/> and mounted through /dev/fuse. Everything lives in one
/// temp directory removed on dispose.
/// </summary>
public sealed class ImageFixture : IDisposable
{
    public const uint ChunkSize = 64 * 1024;
    public const long FiveGiB = 5L << 30;

    public string Root { get; }
    public string Src { get; }
    public string BlobDir { get; }
    public string Bootstrap { get; }
    public string CacheDir { get; }
    public BuildResult Build { get; private set; } = null!;

    public ImageFixture()
    {
        Root = Directory.CreateTempSubdirectory("vfs-rafsfs-").FullName;
        Src = Directory.CreateDirectory(Path.Combine(Root, "src")).FullName;
        BlobDir = Directory.CreateDirectory(Path.Combine(Root, "blobs")).FullName;
        CacheDir = Path.Combine(Root, "cache");
        Bootstrap = Path.Combine(Root, "bootstrap");
    }

    public string S(string relative) => Path.Combine(Src, relative);

    public void BuildImage(int fsVersion = 6, Compressor compressor = Compressor.Lz4Block, byte[]? signingKey = null, IReadOnlyList<string>? prefetch = null)
    {
        var root = DirectorySource.Load(Src);
        Build = ImageBuilder.Build(root, new BuildOptions
        {
            BlobDir = BlobDir, Bootstrap = Bootstrap, Compressor = compressor, Digester = Digester.Blake3, ChunkSize = ChunkSize,
            FsVersion = fsVersion, SigningKey = signingKey, PrefetchFiles = prefetch ?? [], BuildTime = 1_700_000_000,
        });
    }

    public string BlobPath => Path.Combine(BlobDir, Build.Blob!.BlobId);

    public RafsMountOptions Options(Action<RafsMountOptions>? tweak = null)
    {
        var o = new RafsMountOptions { Bootstrap = Bootstrap, BlobDir = BlobDir, Prefetch = PrefetchSource.None };
        tweak?.Invoke(o);
        return o;
    }

    public RafsMount Open(Action<RafsMountOptions>? tweak = null) => RafsMount.Open(Options(tweak));

    public Mounted Mount(Action<RafsMountOptions>? tweak = null)
    {
        var image = Open(tweak);
        try
        {
            return new Mounted(image, Directory.CreateDirectory(Path.Combine(Root, "mnt-" + Guid.NewGuid().ToString("N")[..8])).FullName);
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    /// <summary>An image served on the host through /dev/fuse; lazily unmounted on dispose.</summary>
    public sealed class Mounted : IDisposable
    {
        public Mounted(RafsMount image, string mountPoint)
        {
            Image = image;
            MountPoint = mountPoint;
            var server = new FuseServer(image.FileSystem, new FuseServerOptions(), NullLogger.Instance);
            Session = FuseDeviceSession.Mount(mountPoint, server, new FuseDeviceOptions { Threads = 2, Subtype = "vfsd-test" }, NullLogger.Instance);
        }

        public RafsMount Image { get; }
        public string MountPoint { get; }
        public FuseDeviceSession Session { get; }
        public string M(string relative) => Path.Combine(MountPoint, relative);

        public void Dispose()
        {
            try
            {
                Session.Dispose();
            }
            finally
            {
                Interop.umount2(MountPoint, Interop.MNT_DETACH);
                Image.Dispose();
            }
        }
    }

    // ---- source trees ---------------------------------------------------------------------------------------------

    /// <summary>Every kind of entry: files of awkward sizes, modes and owners, symlinks, hard links, xattrs, a fifo, a
    /// character device, empty and nested directories, a UTF-8 name, nanosecond times.</summary>
    public void PopulateStandard(int manyEntries = 0, bool sparse5G = false)
    {
        var rnd = new Random(42);
        Dir("a/b/c");
        Dir("empty");
        foreach (int size in new[] { 0, 1, 4095, 4096, 4097, 3 * (int)ChunkSize + 5, (1 << 20) + 7 })
            File($"a/size-{size}.bin", Random(rnd, size));
        File("a/b/c/deep.txt", "at the bottom\n"u8.ToArray());
        File("owned", "by 1000\n"u8.ToArray());
        Interop.Check(Interop.lchown(S("owned"), 1000, 1001), "lchown");
        Interop.Check(Interop.chmod(S("owned"), Convert.ToInt32("640", 8)), "chmod");
        File("setuid", "s\n"u8.ToArray());
        Interop.Check(Interop.chmod(S("setuid"), Convert.ToInt32("4755", 8)), "chmod");
        Interop.Check(Interop.lchown(S("empty"), 1000, 1000), "lchown");
        Interop.Check(Interop.chmod(S("empty"), Convert.ToInt32("700", 8)), "chmod");
        File("naïve ünïcode & spaces", "odd\n"u8.ToArray());
        System.IO.File.CreateSymbolicLink(S("link-rel"), "a/size-4096.bin");
        System.IO.File.CreateSymbolicLink(S("a/link-abs"), "/etc/passwd");
        System.IO.File.CreateSymbolicLink(S("a/b/link-dangling"), "../../nowhere");
        System.IO.File.CreateSymbolicLink(S("link-dir"), "a");
        File("hard-1", "one inode, three names\n"u8.ToArray());
        Interop.Check(Interop.link(S("hard-1"), S("a/hard-2")), "link");
        Interop.Check(Interop.link(S("hard-1"), S("a/b/hard-3")), "link");
        Interop.Check(Interop.mkfifo(S("a/fifo"), Convert.ToInt32("644", 8)), "mkfifo");
        Interop.Check(Interop.mknod(S("a/null-dev"), 0x2000 | Convert.ToInt32("666", 8), (1UL << 8) | 3), "mknod");
        Interop.Check(HostSyscalls.lsetxattr(S("a/size-1.bin"), "user.note", "hello xattr"u8.ToArray(), 11, 0), "setxattr");
        Interop.Check(HostSyscalls.lsetxattr(S("a/size-1.bin"), "user.empty", [], 0, 0), "setxattr");
        Interop.Check(HostSyscalls.lsetxattr(S("a"), "user.dir", "on a directory"u8.ToArray(), 14, 0), "setxattr");
        Interop.Check(HostSyscalls.lsetxattr(S("link-rel"), "trusted.sym", "on a symlink"u8.ToArray(), 12, 0), "setxattr");
        if (manyEntries > 0)
        {
            Dir("many");
            for (int i = 0; i < manyEntries; i++) System.IO.File.WriteAllBytes(S($"many/entry-{i:D6}"), Encoding.ASCII.GetBytes($"{i}\n"));
        }
        if (sparse5G) WriteSparse5G("huge.sparse");
        SetTimes();
    }

    /// <summary>A 5 GiB file: data at the start, a hole, data across the 4 GiB boundary, a hole, data at the end.</summary>
    public void WriteSparse5G(string relative)
    {
        using var f = new FileStream(S(relative), FileMode.Create, FileAccess.Write);
        f.SetLength(FiveGiB);
        foreach (var (off, data) in SparseExtents())
        {
            f.Position = off;
            f.Write(data);
        }
    }

    public static IEnumerable<(long Offset, byte[] Data)> SparseExtents()
    {
        var rnd = new Random(5);
        yield return (0, Random(rnd, 100_000));
        yield return ((4L << 30) - 50_000, Random(rnd, 100_000));
        yield return (FiveGiB - 12_345, Random(rnd, 12_345));
    }

    /// <summary>Distinct nanosecond mtimes for every entry; directories last, deepest first.</summary>
    public void SetTimes()
    {
        int i = 0;
        var all = Directory.EnumerateFileSystemEntries(Src, "*", SearchOption.AllDirectories).OrderByDescending(p => p.Length).ToList();
        foreach (var p in all.Where(p => !Directory.Exists(p) || System.IO.File.GetAttributes(p).HasFlag(FileAttributes.ReparsePoint)))
            Interop.SetTimes(p, 1_600_000_000 + i * 7919L, (i++ * 123_456_789L + 987_654_321L) % 1_000_000_000L);
        foreach (var p in all.Where(p => Directory.Exists(p) && !System.IO.File.GetAttributes(p).HasFlag(FileAttributes.ReparsePoint)))
            Interop.SetTimes(p, 1_600_000_000 + i * 7919L, (i++ * 123_456_789L + 987_654_321L) % 1_000_000_000L);
        Interop.SetTimes(Src, 1_650_000_000, 5);
    }

    public void Dir(string relative) => Directory.CreateDirectory(S(relative));

    public void File(string relative, byte[] data)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(S(relative))!);
        System.IO.File.WriteAllBytes(S(relative), data);
    }

    public static byte[] Random(Random rnd, int size)
    {
        var b = new byte[size];
        rnd.NextBytes(b);
        return b;
    }

    public static string Sha(string path)
    {
        using var f = System.IO.File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
