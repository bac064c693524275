using System.Text;
using VirtioFs.Rafs;
using VirtioFs.Tests.Shared;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// The image filesystem as the host kernel sees it through /dev/fuse: every entry of the source tree must come back
/// with the same content, type, mode, owner, size, nanosecond mtime, link count, symlink target, device number and
/// xattrs; hard links share an inode; mutations fail with EROFS.
/// </summary>
public sealed class MountTests
{
    [Theory]
    [InlineData(6, Compressor.Lz4Block)]
    [InlineData(6, Compressor.Zstd)]
    [InlineData(5, Compressor.None)]
    public void Mounted_image_matches_its_source_tree(int fsVersion, Compressor compressor)
    {
        using var fx = new ImageFixture();
        fx.PopulateStandard(manyEntries: 300);
        fx.BuildImage(fsVersion, compressor);
        using var m = fx.Mount(o => o.CacheDir = fx.CacheDir);
        AssertSameTree(fx.Src, m.MountPoint);
    }

    [Fact]
    public void The_mount_readahead_window_is_raised_after_init_and_big_files_still_read_back()
    {
        using var fx = new ImageFixture();
        var rnd = new Random(3);
        byte[] big = new byte[5 * (1 << 20) + 123];
        rnd.NextBytes(big.AsSpan(0, big.Length / 2));
        fx.File("big.bin", big);
        fx.BuildImage();
        using var m = fx.Mount();
        Assert.NotNull(m.Session.Device);
        // Any request waits for INIT, and the worker raises the window right after answering it.
        Assert.Equal(big, File.ReadAllBytes(m.M("big.bin")));
        string kb = File.ReadAllText($"/sys/class/bdi/{m.Session.Device}/read_ahead_kb").Trim();
        Assert.Equal("1024", kb);
    }

    [Fact]
    public void Hard_links_share_one_inode_and_count_their_names()
    {
        using var fx = new ImageFixture();
        fx.PopulateStandard();
        fx.BuildImage();
        using var m = fx.Mount();
        var inodes = new[] { "hard-1", "a/hard-2", "a/b/hard-3" }.Select(p => HostSyscalls.Lstat(m.M(p))).ToList();
        Assert.Single(inodes.Select(s => s.stx_ino).Distinct());
        Assert.All(inodes, s => Assert.Equal(3u, s.stx_nlink));
        Assert.NotEqual(inodes[0].stx_ino, HostSyscalls.Lstat(m.M("owned")).stx_ino);
    }

    [Fact]
    public void A_20000_entry_directory_lists_and_looks_up_completely()
    {
        using var fx = new ImageFixture();
        fx.Dir("big");
        for (int i = 0; i < 20_000; i++) File.WriteAllBytes(fx.S($"big/f{i:D5}"), Encoding.ASCII.GetBytes($"{i}\n"));
        fx.BuildImage();
        using var m = fx.Mount();
        var names = Directory.EnumerateFileSystemEntries(m.M("big")).Select(Path.GetFileName).ToList();
        Assert.Equal(20_000, names.Count);
        Assert.Equal(Enumerable.Range(0, 20_000).Select(i => $"f{i:D5}"), names.Order(StringComparer.Ordinal));
        foreach (int i in new[] { 0, 1, 9_999, 12_345, 19_999 })
            Assert.Equal($"{i}\n", File.ReadAllText(m.M($"big/f{i:D5}")));
        Assert.False(File.Exists(m.M("big/f20000")));
    }

    [Fact]
    public void A_sparse_5GiB_file_reads_right_across_the_4GiB_boundary_and_at_its_end()
    {
        using var fx = new ImageFixture();
        fx.WriteSparse5G("huge");
        fx.BuildImage();
        using var m = fx.Mount(o => o.CacheDir = fx.CacheDir);
        Assert.Equal((ulong)ImageFixture.FiveGiB, HostSyscalls.Lstat(m.M("huge")).stx_size);
        using var f = File.OpenHandle(m.M("huge"));
        foreach (var (off, data) in ImageFixture.SparseExtents())
        {
            var got = new byte[data.Length + 8192];
            long start = Math.Max(0, off - 4096);
            int before = (int)(off - start);
            int n = RandomAccess.Read(f, got, start);
            Assert.Equal((int)Math.Min(got.Length, ImageFixture.FiveGiB - start), n);
            Assert.True(got.AsSpan(0, before).IndexOfAnyExcept((byte)0) < 0, "zeros before an extent");
            Assert.True(got.AsSpan(before, data.Length).SequenceEqual(data), $"extent at {off}");
            Assert.True(got.AsSpan(before + data.Length, n - before - data.Length).IndexOfAnyExcept((byte)0) < 0, "zeros after an extent");
        }
        // A hole in the middle reads as zeros; reading at the end returns nothing.
        var hole = new byte[1 << 20];
        Assert.Equal(hole.Length, RandomAccess.Read(f, hole, 3L << 30));
        Assert.True(hole.AsSpan().IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(0, RandomAccess.Read(f, hole, ImageFixture.FiveGiB));
    }

    [Fact]
    public void Seek_data_and_hole_follow_the_file_size()
    {
        using var fx = new ImageFixture();
        fx.File("f", ImageFixture.Random(new Random(1), 3 * (int)ImageFixture.ChunkSize + 10));
        fx.BuildImage();
        using var m = fx.Mount();
        using var h = File.OpenHandle(m.M("f"));
        long size = 3 * ImageFixture.ChunkSize + 10;
        Assert.Equal(100, Interop.Seek(h, 100, Interop.SEEK_DATA, out _));
        Assert.Equal(size, Interop.Seek(h, 100, Interop.SEEK_HOLE, out _));
        Assert.Equal(-1, Interop.Seek(h, size, Interop.SEEK_DATA, out int e1));
        Assert.Equal(6, e1); // ENXIO
        Assert.Equal(-1, Interop.Seek(h, size + 5, Interop.SEEK_HOLE, out int e2));
        Assert.Equal(6, e2);
    }

    [Fact]
    public void Every_mutation_fails_with_EROFS()
    {
        using var fx = new ImageFixture();
        fx.PopulateStandard();
        fx.BuildImage();
        using var m = fx.Mount();
        AssertErofs(() => File.WriteAllText(m.M("new-file"), "x"));
        AssertErofs(() => File.OpenHandle(m.M("owned"), FileMode.Open, FileAccess.Write));
        AssertErofs(() => Directory.CreateDirectory(m.M("new-dir")));
        AssertErofs(() => File.Delete(m.M("owned")));
        AssertErofs(() => File.Move(m.M("owned"), m.M("moved")));
        AssertErofs(() => File.CreateSymbolicLink(m.M("new-link"), "x"));
        AssertErofs(() => File.SetUnixFileMode(m.M("owned"), UnixFileMode.UserRead));
        Assert.Equal(30, HostSyscalls.TrySetXattr(m.M("owned"), "user.x", [1]));
        Assert.Equal("by 1000\n", File.ReadAllText(m.M("owned")));
    }

    private static void AssertErofs(Action a)
    {
        var e = Assert.ThrowsAny<IOException>(a);
        Assert.Contains("Read-only file system", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Statfs_reports_a_read_only_filesystem_with_the_image_inode_count()
    {
        using var fx = new ImageFixture();
        fx.PopulateStandard();
        fx.BuildImage();
        using var m = fx.Mount();
        var d = new DriveInfo(m.MountPoint);
        Assert.True(d.TotalSize > 0);
        Assert.Equal(0, d.AvailableFreeSpace);
    }

    /// <summary>Walks both trees; every difference is collected and reported at once.</summary>
    internal static void AssertSameTree(string src, string mnt)
    {
        var errors = new List<string>();
        var srcEntries = Directory.EnumerateFileSystemEntries(src, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Select(p => Path.GetRelativePath(src, p)).Order(StringComparer.Ordinal).ToList();
        var mntEntries = Directory.EnumerateFileSystemEntries(mnt, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Select(p => Path.GetRelativePath(mnt, p)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(srcEntries, mntEntries);
        foreach (var rel in srcEntries.Prepend("."))
        {
            string a = Path.Combine(src, rel), b = Path.Combine(mnt, rel);
            var sa = HostSyscalls.Lstat(a);
            var sb = HostSyscalls.Lstat(b);
            void Same<T>(string what, T x, T y)
            {
                if (!EqualityComparer<T>.Default.Equals(x, y)) errors.Add($"{rel}: {what} {x} != {y}");
            }
            Same("mode", sa.stx_mode, sb.stx_mode);
            Same("uid", sa.stx_uid, sb.stx_uid);
            Same("gid", sa.stx_gid, sb.stx_gid);
            Same("mtime", (sa.stx_mtime.tv_sec, sa.stx_mtime.tv_nsec), (sb.stx_mtime.tv_sec, sb.stx_mtime.tv_nsec));
            Same("nlink", sa.stx_nlink, sb.stx_nlink);
            int type = sa.stx_mode & 0xF000;
            if (type != 0x4000) Same("size", sa.stx_size, sb.stx_size);
            if (type is 0x2000 or 0x6000) Same("rdev", (sa.stx_rdev_major, sa.stx_rdev_minor), (sb.stx_rdev_major, sb.stx_rdev_minor));
            if (type == 0x8000 && sa.stx_size < (64 << 20)) Same("content", ImageFixture.Sha(a), ImageFixture.Sha(b));
            if (type == 0xA000) Same("target", new FileInfo(a).LinkTarget, new FileInfo(b).LinkTarget);
            if (type is 0x8000 or 0x4000 or 0xA000)
            {
                var xa = HostSyscalls.Xattrs(a);
                var xb = HostSyscalls.Xattrs(b);
                Same("xattr names", string.Join(",", xa.Keys), string.Join(",", xb.Keys));
                foreach (var (k, v) in xa)
                    if (xb.TryGetValue(k, out var w)) Same($"xattr {k}", Convert.ToHexString(v), Convert.ToHexString(w));
            }
        }
        Assert.True(errors.Count == 0, string.Join("\n", errors.Take(40)));
    }
}
