using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// One image, built by out/vfs-image from a generated tree (every file type, hard links, xattrs, nanosecond times),
/// a 20,000-entry directory and a sparse 5 GiB file, served by vfsd: to a QEMU guest over virtio-fs
/// (<c>vfsd --bootstrap</c>) and on the host through /dev/fuse (<c>vfsd mount</c>). Both must show exactly the source.
/// </summary>
public sealed class ImageTreeFixture : IDisposable
{
    public const long HugeSize = 5L << 30;
    public const int ManyEntries = 20_000;

    internal ImageWorkspace Workspace { get; } = new();
    internal IReadOnlyList<string> Manifest { get; }
    internal IReadOnlyList<string[]> HardLinkGroups { get; }

    /// <summary>(offset, length, sha256) of 4 KiB-aligned windows around the sparse file's data extents.</summary>
    internal List<(long Offset, long Length, string Sha)> HugeWindows { get; } = [];

    public ImageTreeFixture()
    {
        using (var tree = TestTree.Generate())
        {
            Manifest = tree.ExpectedManifest;
            HardLinkGroups = tree.HardLinkGroups;
            Directory.Move(tree.Root, Workspace.S("tree"));
        }
        string t = Workspace.S("tree");
        TreeCompare.SetXattr(Path.Combine(t, "docs/size-1.bin"), "user.note", "an xattr value"u8.ToArray());
        TreeCompare.SetXattr(Path.Combine(t, "docs/size-1.bin"), "user.empty", []);
        TreeCompare.SetXattr(Path.Combine(t, "docs"), "user.on-dir", "directory xattr"u8.ToArray());
        TreeCompare.SetXattr(Path.Combine(t, "docs/link-relative"), "trusted.on-link", "symlink xattr"u8.ToArray());
        Directory.CreateDirectory(Workspace.S("many"));
        for (int i = 0; i < ManyEntries; i++) File.WriteAllText(Workspace.S($"many/e{i:D5}"), $"entry {i}\n");

        var rnd = new Random(11);
        using (var f = new FileStream(Workspace.S("huge.sparse"), FileMode.Create, FileAccess.ReadWrite))
        {
            f.SetLength(HugeSize);
            foreach (long off in new[] { 0L, (4L << 30) - 6000, HugeSize - 9000 })
            {
                var data = new byte[9000];
                rnd.NextBytes(data);
                f.Position = off;
                f.Write(data);
                long start = Math.Max(0, off / 4096 * 4096 - 4096);
                long len = Math.Min(HugeSize - start, 4 * 4096);
                var window = new byte[len];
                f.Position = start;
                f.ReadExactly(window);
                HugeWindows.Add((start, len, Convert.ToHexStringLower(SHA256.HashData(window))));
            }
        }
        Workspace.Build("--compressor", "lz4_block");
    }

    public void Dispose() => Workspace.Dispose();
}

[Collection(GuestCollection.Name)]
public sealed class ImageGuestTests(ImageTreeFixture image, ITestOutputHelper output) : IClassFixture<ImageTreeFixture>
{
    [Fact]
    public void Guest_sees_the_image_exactly_as_the_source_tree()
    {
        var ws = image.Workspace;
        // No chunk cache (the default): every read goes through to the blob; the host mount test covers the cache.
        using var vfsd = Vfsd.Start("--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--tag", "vfs", "--thread-pool-size", "2");
        var script = new StringBuilder();
        script.AppendLine(TestTree.GuestManifestScript("/mnt/vfs/tree"));
        script.AppendLine("xattrs /mnt/vfs/tree");
        script.AppendLine("echo \"@@MANY $(ls /mnt/vfs/many | wc -l)\"");
        foreach (int i in new[] { 0, 12_345, ImageTreeFixture.ManyEntries - 1 })
            script.AppendLine(CultureInfo.InvariantCulture, $"echo \"@@ENTRY {i} $(cat /mnt/vfs/many/e{i:D5})\"");
        script.AppendLine("echo \"@@HUGE $(stat -c %s /mnt/vfs/huge.sparse)\"");
        foreach (var (off, len, _) in image.HugeWindows)
            script.AppendLine(CultureInfo.InvariantCulture,
                $"echo \"@@WINDOW {off} $(dd if=/mnt/vfs/huge.sparse bs=4096 skip={off / 4096} count={len / 4096} 2>/dev/null | sha256sum | cut -d' ' -f1)\"");
        script.AppendLine("if touch /mnt/vfs/new-file 2>/tmp/err; then echo '@@WRITE allowed'; else echo \"@@WRITE $(cat /tmp/err)\"; fi");

        var result = Guest.Run(script.ToString(), [("vfs", vfsd.SocketPath)], output, timeoutSeconds: 900);

        Assert.Equal(0, result.ExitCode);
        PassthroughGuestTests.AssertSameManifest(image.Manifest, result.Lines("M"));
        var inodes = result.Lines("I").Select(l => l.Split(' ')).ToDictionary(p => p[0], p => p[1]);
        foreach (var group in image.HardLinkGroups)
            Assert.Single(group.Select(n => inodes.TryGetValue(n, out var ino) ? ino : "missing:" + n).Distinct());
        // xattrs over virtio-fs (GETXATTR/LISTXATTR from the guest kernel), as the guest's tool prints them.
        Assert.Equal(ExpectedXattrs(ws.S("tree")), result.Lines("X").Order(StringComparer.Ordinal));
        Assert.Equal(ImageTreeFixture.ManyEntries.ToString(CultureInfo.InvariantCulture), result.Single("MANY"));
        Assert.Equal(["0 entry 0", "12345 entry 12345", "19999 entry 19999"], result.Lines("ENTRY"));
        Assert.Equal(ImageTreeFixture.HugeSize.ToString(CultureInfo.InvariantCulture), result.Single("HUGE"));
        Assert.Equal(image.HugeWindows.Select(w => $"{w.Offset} {w.Sha}"), result.Lines("WINDOW"));
        Assert.Contains("Read-only file system", result.Single("WRITE"), StringComparison.Ordinal);
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
    }

    /// <summary>"relpath name=HEX;..." for every entry of the source tree with xattrs: the guest tool's format.</summary>
    private static List<string> ExpectedXattrs(string root)
    {
        var lines = new List<string>();
        var pending = new Stack<string>([root]);
        while (pending.TryPop(out var path))
        {
            string x = TreeCompare.Xattrs(path);
            if (x.Length > 0) lines.Add($"{(path == root ? "." : Path.GetRelativePath(root, path))} {x}");
            // Like nftw(FTW_PHYS): descend into real directories only, never through a symlink to one.
            if (new FileInfo(path) is { LinkTarget: null } && Directory.Exists(path))
                foreach (var child in Directory.EnumerateFileSystemEntries(path, "*", new EnumerationOptions { AttributesToSkip = 0 })) pending.Push(child);
        }
        Assert.Contains(lines, l => l.StartsWith("docs/link-relative trusted.on-link=", StringComparison.Ordinal)); // the fixture is what we think
        return lines.Order(StringComparer.Ordinal).ToList();
    }

    [Fact]
    public void Host_fuse_mount_shows_the_same_tree_with_xattrs()
    {
        var ws = image.Workspace;
        using var m = ws.Mount("--cache-dir", ws.CacheDir + "-host");
        var diffs = TreeCompare.Differences(ws.Src, m.MountPoint, rel => rel == "huge.sparse");
        Assert.True(diffs.Count == 0, string.Join("\n", diffs.Take(40)));
        Assert.Contains("user.note=", TreeCompare.Xattrs(m.M("tree/docs/size-1.bin")), StringComparison.Ordinal);
        Assert.Contains("trusted.on-link=", TreeCompare.Xattrs(m.M("tree/docs/link-relative")), StringComparison.Ordinal);
        using var h = File.OpenHandle(m.M("huge.sparse"));
        foreach (var (off, len, sha) in image.HugeWindows)
        {
            var buf = new byte[len];
            Assert.Equal((int)len, RandomAccess.Read(h, buf, off));
            Assert.Equal(sha, Convert.ToHexStringLower(SHA256.HashData(buf)));
        }
        var inodes = image.HardLinkGroups[0].Select(n => VirtioFs.Tests.Shared.HostSyscalls.Lstat(m.M("tree/" + n)).stx_ino).Distinct();
        Assert.Single(inodes);
        var (code, log) = m.Stop();
        Assert.Equal(0, code);
        Assert.Equal(0, VfsdMount.Metrics(log)["read_errors"]);
        Assert.False(ImageWorkspace.IsMounted(m.MountPoint), "vfsd unmounts on SIGTERM");
    }
}
