using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>
/// A temp directory holding an image source tree (src/), the image built from it with out/vfs-image (bootstrap,
/// blobs/), a chunk cache directory and mount points; removed (after lazy unmounts) on dispose.
/// </summary>
internal sealed partial class ImageWorkspace : IDisposable
{
    private readonly List<string> _mounts = [];

    public ImageWorkspace()
    {
        Root = Directory.CreateTempSubdirectory("vfs-image-it-").FullName;
        Src = Directory.CreateDirectory(Path.Combine(Root, "src")).FullName;
        BlobDir = Directory.CreateDirectory(Path.Combine(Root, "blobs")).FullName;
        CacheDir = Path.Combine(Root, "cache");
        Bootstrap = Path.Combine(Root, "bootstrap");
    }

    public string Root { get; }
    public string Src { get; }
    public string BlobDir { get; }
    public string CacheDir { get; }
    public string Bootstrap { get; }
    public string RootDigest { get; private set; } = "";
    public string BlobId { get; private set; } = "";
    public string BlobPath => Path.Combine(BlobDir, BlobId);

    public string S(string relative) => Path.Combine(Src, relative);

    /// <summary>Runs <c>out/vfs-image create</c> over src/ and remembers the root digest and blob id it prints.</summary>
    public void Build(params string[] extra)
    {
        using var p = ProcessRunner.Start(Repo.VfsImage, ["create", "--bootstrap", Bootstrap, "--blob-dir", BlobDir, .. extra, Src]);
        int? code = p.WaitForExit(TimeSpan.FromMinutes(10));
        if (code != 0) throw new InvalidOperationException($"vfs-image create failed ({code}):\n{p.Output}");
        RootDigest = Regex.Match(p.Output, @"root digest\s+([0-9a-f]{64})").Groups[1].Value;
        BlobId = Regex.Match(p.Output, @"blob\s+([0-9a-f]{64})").Groups[1].Value;
    }

    public string NewMountPoint() => Directory.CreateDirectory(Path.Combine(Root, "mnt-" + Guid.NewGuid().ToString("N")[..8])).FullName;

    /// <summary>Starts <c>vfsd mount --bootstrap ... --blob-dir ... EXTRA MOUNTPOINT</c> and waits until the mount is visible.</summary>
    public VfsdMount Mount(params string[] extra) => MountWith(["--bootstrap", Bootstrap, "--blob-dir", BlobDir, .. extra]);

    /// <summary>Starts <c>vfsd mount ARGS MOUNTPOINT</c> (e.g. <c>--image REF ...</c>) and waits until the mount is visible.</summary>
    public VfsdMount MountWith(params string[] args) => MountWithEnvironment(null, args);

    /// <summary>As <see cref="MountWith"/>, with extra environment variables for vfsd (e.g. DOCKER_CONFIG).</summary>
    public VfsdMount MountWithEnvironment(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        string mnt = NewMountPoint();
        _mounts.Add(mnt);
        var p = ProcessRunner.Start(Repo.Vfsd, ["mount", .. args, mnt], environment: environment);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!IsMounted(mnt))
        {
            if (p.HasExited || DateTime.UtcNow > deadline)
            {
                string output = p.Output;
                p.Dispose();
                throw new InvalidOperationException($"vfsd mount did not mount {mnt}; output:\n{output}");
            }
            Thread.Sleep(20);
        }
        return new VfsdMount(p, mnt);
    }

    public static bool IsMounted(string mountPoint) =>
        File.ReadLines("/proc/self/mountinfo").Any(l => l.Split(' ') is { Length: > 4 } f && f[4] == mountPoint);

    /// <summary>Flips the first byte of the only occurrence of <paramref name="pattern"/> in <paramref name="file"/>.</summary>
    public static void FlipByteOf(string file, ReadOnlySpan<byte> pattern)
    {
        byte[] all = File.ReadAllBytes(file);
        int at = all.AsSpan().IndexOf(pattern);
        if (at < 0 || all.AsSpan(at + 1).IndexOf(pattern) >= 0) throw new InvalidOperationException($"pattern not found exactly once in {file}");
        using var f = new FileStream(file, FileMode.Open, FileAccess.Write);
        f.Position = at;
        f.WriteByte((byte)(all[at] ^ 0x5A));
    }

    public void Dispose()
    {
        foreach (string m in _mounts) umount2(m, 2);
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

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int umount2(string target, int flags);
}

/// <summary>A running <c>vfsd mount</c>. <see cref="Stop"/> sends SIGTERM and returns the daemon's log.</summary>
internal sealed partial class VfsdMount(ProcessRunner process, string mountPoint) : IDisposable
{
    public string MountPoint { get; } = mountPoint;
    public ProcessRunner Process { get; } = process;
    public string M(string relative) => Path.Combine(MountPoint, relative);

    /// <summary>SIGTERM, then the exit code and everything it logged.</summary>
    public (int? ExitCode, string Output) Stop()
    {
        kill(Process.Id, 15);
        int? code = Process.WaitForExit(TimeSpan.FromSeconds(30));
        return (code, Process.Output);
    }

    /// <summary>The counters vfsd logs at exit ("image metrics: ... backend reads N (B bytes) ...").</summary>
    public static Dictionary<string, long> Metrics(string log)
    {
        var m = Regex.Match(log, @"image metrics: reads (\d+) \(errors (\d+)\), cache hits (\d+), misses (\d+), chunks fetched (\d+), backend reads (\d+) \((\d+) bytes\), digest errors (\d+), cache repairs (\d+)");
        if (!m.Success) throw new InvalidOperationException("no metrics line in:\n" + log);
        string[] names = ["reads", "read_errors", "hits", "misses", "fetched", "backend_reads", "backend_bytes", "digest_errors", "repairs"];
        var d = new Dictionary<string, long>();
        for (int i = 0; i < names.Length; i++) d[names[i]] = long.Parse(m.Groups[i + 1].Value, System.Globalization.CultureInfo.InvariantCulture);
        return d;
    }

    public void Dispose()
    {
        if (!Process.HasExited) Stop();
        Process.Dispose();
        ImageWorkspace.umount2(MountPoint, 2);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}
