using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;

namespace VirtioFs.Fuzz;

/// <summary>A small image built in-process with the project's builder, as the RafsFs tests build theirs: a
/// two-chunk file in a directory, a small file with an xattr, a symlink, a hard link and an empty directory.</summary>
public sealed partial class TestImage
{
    private TestImage(string bootstrap, string blobDir)
    {
        Bootstrap = bootstrap;
        BlobDir = blobDir;
    }

    public string Bootstrap { get; }
    public string BlobDir { get; }

    public static TestImage Build(string root, int fsVersion, Compressor compressor = Compressor.Lz4Block)
    {
        string src = Path.Combine(root, "src");
        string blobs = Path.Combine(root, "blobs");
        Directory.CreateDirectory(Path.Combine(src, "dir"));
        Directory.CreateDirectory(Path.Combine(src, "empty"));
        Directory.CreateDirectory(blobs);
        var content = new byte[70_000];
        new Random(9).NextBytes(content);
        File.WriteAllBytes(Path.Combine(src, "dir", "big.bin"), content);
        File.WriteAllText(Path.Combine(src, "small.txt"), "small\n");
        File.CreateSymbolicLink(Path.Combine(src, "link"), "dir/big.bin");
        HardLink(Path.Combine(src, "small.txt"), Path.Combine(src, "dir", "hard"));
        SetXattr(Path.Combine(src, "small.txt"), "user.fuzz", "value");
        string bootstrap = Path.Combine(root, $"v{fsVersion}.boot");
        ImageBuilder.Build(DirectorySource.Load(src), new BuildOptions
        {
            BlobDir = blobs, Bootstrap = bootstrap, Compressor = compressor, Digester = Digester.Blake3, ChunkSize = 64 * 1024,
            FsVersion = fsVersion, BuildTime = 1_700_000_000,
        });
        return new TestImage(bootstrap, blobs);
    }

    private static unsafe void HardLink(string existing, string newPath)
    {
        fixed (byte* a = Encoding.UTF8.GetBytes(existing + "\0"), b = Encoding.UTF8.GetBytes(newPath + "\0"))
        {
            if (LibC.link(a, b) != 0)
            {
                throw new IOException($"link {newPath}: errno {LibC.errno}");
            }
        }
    }

    // Tmds.LibC has no xattr calls; the RAFS builder reads xattrs with the same libc function.
    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int lsetxattr(byte* path, byte* name, byte* value, nuint size, int flags);

    private static unsafe void SetXattr(string path, string name, string value)
    {
        byte[] v = Encoding.UTF8.GetBytes(value);
        fixed (byte* p = Encoding.UTF8.GetBytes(path + "\0"), n = Encoding.UTF8.GetBytes(name + "\0"), pv = v)
        {
            if (lsetxattr(p, n, pv, (nuint)v.Length, 0) != 0)
            {
                throw new IOException($"lsetxattr {path}: errno {Marshal.GetLastPInvokeError()}");
            }
        }
    }
}
