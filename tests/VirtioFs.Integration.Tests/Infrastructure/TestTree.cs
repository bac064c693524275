using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>
/// Generates a directory tree with every kind of entry a guest meets (files of awkward sizes, modes, owners,
/// nanosecond times, symlinks, hard links, nested and empty directories, a fifo) and knows what a guest must
/// see for each: the manifest a busybox script prints inside the guest (<see cref="GuestManifestScript"/>) is
/// compared line by line with <see cref="ExpectedManifest"/>.
/// </summary>
internal sealed partial class TestTree : IDisposable
{
    private readonly List<string> _manifest = [];
    private readonly List<string[]> _linkGroups = [];
    private readonly List<(string Path, long Seconds, long Nanos)> _directoryTimes = [];

    public TestTree(string? root = null)
    {
        Root = root ?? Directory.CreateTempSubdirectory("vfs-tree-").FullName;
    }

    public string Root { get; }

    public IReadOnlyList<string[]> HardLinkGroups => _linkGroups;

    /// <summary>Lines "path|type|mode|uid|gid|size|mtime|extra" sorted by path (bytewise, as busybox sort), as the guest script prints them.</summary>
    public IReadOnlyList<string> ExpectedManifest => _manifest.OrderBy(l => l[..l.IndexOf('|', StringComparison.Ordinal)], StringComparer.Ordinal).ToList();

    public static TestTree Generate(int seed = 1)
    {
        var tree = new TestTree();
        var random = new Random(seed);
        tree.Dir("docs", Oct("755"), 0, 0);
        tree.Dir("docs/empty", Oct("700"), 1000, 1000);
        tree.Dir("deep", Oct("755"), 0, 0);
        string deep = "deep";
        for (int i = 0; i < 6; i++)
        {
            deep += "/level" + i;
            tree.Dir(deep, Oct("755"), 0, 0);
        }
        tree.File(deep + "/bottom.txt", Encoding.UTF8.GetBytes("at the bottom\n"), Oct("644"), 0, 0);
        int[] sizes = [0, 1, 4095, 4096, 4097, 65537, 131072, 1048576 + 3, 3 * 1048576 + 17];
        foreach (int size in sizes)
        {
            var data = new byte[size];
            random.NextBytes(data);
            tree.File($"docs/size-{size}.bin", data, Oct("644"), 0, 0);
        }
        tree.File("docs/script.sh", Encoding.UTF8.GetBytes("#!/bin/sh\necho hi\n"), Oct("755"), 0, 0);
        tree.File("docs/secret", Encoding.UTF8.GetBytes("owned by 1000\n"), Oct("600"), 1000, 1000);
        tree.File("docs/setgid-file", Encoding.UTF8.GetBytes("g+s\n"), Oct("2755"), 0, 100);
        tree.File("docs/name with spaces & ünïcode", Encoding.UTF8.GetBytes("odd name\n"), Oct("644"), 0, 0);
        tree.Symlink("docs/link-relative", "size-4096.bin");
        tree.Symlink("docs/link-absolute", "/etc/passwd");
        tree.Symlink("docs/link-dangling", "../nowhere/at/all");
        tree.Symlink("link-to-dir", "docs");
        tree.HardLinks(["docs/hard-a", "deep/hard-b", "hard-c"], Encoding.UTF8.GetBytes("one inode, three names\n"));
        tree.Fifo("docs/pipe", Oct("644"));
        for (int i = 0; i < 200; i++)
        {
            tree.File($"docs/many-{i:D3}", Encoding.UTF8.GetBytes($"file {i}\n"), Oct("644"), 0, 0);
        }
        tree.Seal();
        return tree;
    }

    /// <summary>C# has no octal literals; modes are written the way chmod takes them.</summary>
    public static int Oct(string digits) => Convert.ToInt32(digits, 8);

    public void Dir(string relative, int mode, int uid, int gid)
    {
        string path = Full(relative);
        Directory.CreateDirectory(path);
        Finish(relative, path, mode, uid, gid, "directory", 0, "");
    }

    public void File(string relative, byte[] content, int mode, int uid, int gid)
    {
        string path = Full(relative);
        System.IO.File.WriteAllBytes(path, content);
        Finish(relative, path, mode, uid, gid, "regular", content.Length, Sha256(content));
    }

    public void Symlink(string relative, string target)
    {
        string path = Full(relative);
        System.IO.File.CreateSymbolicLink(path, target);
        // Symlink mode is always 0777 on Linux; times are set without following the link.
        Finish(relative, path, Oct("777"), 0, 0, "symlink", Encoding.UTF8.GetByteCount(target), target, setMode: false);
    }

    public void HardLinks(string[] names, byte[] content)
    {
        File(names[0], content, Oct("640"), 0, 0);
        string manifestLine = _manifest[^1];
        for (int i = 1; i < names.Length; i++)
        {
            Check(link(Full(names[0]), Full(names[i])), "link");
            _manifest.Add(names[i] + manifestLine[names[0].Length..]);
        }
        _linkGroups.Add(names);
    }

    public void Fifo(string relative, int mode)
    {
        string path = Full(relative);
        Check(mkfifo(path, mode), "mkfifo");
        Finish(relative, path, mode, 0, 0, "fifo", 0, "");
    }

    private unsafe void Finish(string relative, string path, int mode, int uid, int gid, string type, long size, string extra, bool setMode = true)
    {
        byte[] p = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* pp = p)
        {
            Check(lchown(pp, uid, gid), "lchown");
            if (setMode)
            {
                // After chown: chown clears set-id bits.
                Check(chmod(pp, mode), "chmod");
            }
            // Deterministic nanosecond times, distinct per entry, so a guest seeing a truncated or rounded time fails.
            long seconds = 1_600_000_000 + (_manifest.Count * 7919L);
            long nanos = (_manifest.Count * 123_456_789L + 987_654_321L) % 1_000_000_000L;
            if (type == "directory")
            {
                // Adding children changes a directory's mtime: set it in Seal(), after the last child.
                _directoryTimes.Add((path, seconds, nanos));
            }
            else
            {
                SetTimes(pp, seconds, nanos);
            }
            string mtime = DateTimeOffset.FromUnixTimeSeconds(seconds).UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)
                + "." + nanos.ToString("D9", CultureInfo.InvariantCulture) + " +0000";
            string sizeField = type == "directory" ? "-" : size.ToString(CultureInfo.InvariantCulture);
            _manifest.Add(string.Join('|', relative, type, Convert.ToString(mode, 8), uid, gid, sizeField, mtime, extra));
        }
    }

    /// <summary>Sets the directories' times, deepest first; call after the last entry was added.</summary>
    public unsafe void Seal()
    {
        foreach (var (path, seconds, nanos) in _directoryTimes.OrderByDescending(d => d.Path.Length))
        {
            byte[] p = Encoding.UTF8.GetBytes(path + "\0");
            fixed (byte* pp = p)
            {
                SetTimes(pp, seconds, nanos);
            }
        }
        _directoryTimes.Clear();
    }

    private static unsafe void SetTimes(byte* path, long seconds, long nanos)
    {
        const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
        var times = stackalloc long[4] { seconds - 5, nanos, seconds, nanos }; // struct timespec[2]: atime, mtime
        Check(utimensat(AtFdCwd, path, times, AtSymlinkNoFollow), "utimensat");
    }

    /// <summary>
    /// A busybox shell fragment printing "@@M path|type|mode|uid|gid|size|mtime|extra" for every entry below DIR
    /// (extra: sha256 of a regular file, target of a symlink), and "@@I path inode" for files with several links.
    /// </summary>
    public static string GuestManifestScript(string dir) => $$"""
        cd {{dir}} || exit 1
        find . -mindepth 1 | sed 's|^\./||' | sort | while IFS= read -r f; do
          set -- $(stat -c '%f %u %g %s %h %i' "$f")
          raw=$1; uid=$2; gid=$3; size=$4; nlink=$5; ino=$6
          mtime=$(stat -c '%y' "$f")
          mode=$(printf '%o' $((0x$raw & 0xfff)))
          case $((0x$raw & 0xf000)) in
            $((0x8000))) type=regular; extra=$(sha256sum "$f" | cut -d' ' -f1); [ "$nlink" -gt 1 ] && echo "@@I $f $ino";;
            $((0x4000))) type=directory; extra=""; size=-;;
            $((0xa000))) type=symlink; extra=$(readlink "$f");;
            $((0x1000))) type=fifo; extra="";;
            *) type=other; extra="";;
          esac
          echo "@@M $f|$type|$mode|$uid|$gid|$size|$mtime|$extra"
        done
        """;

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private string Full(string relative) => Path.Combine(Root, relative);

    private static string Sha256(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            throw new IOException($"{what} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int link(string oldpath, string newpath);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int mkfifo(string path, int mode);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int lchown(byte* path, int uid, int gid);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int chmod(byte* path, int mode);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int utimensat(int dirfd, byte* path, long* times, int flags);
}
