using System.Security.Cryptography;
using System.Text;
using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

/// <summary>The passthrough mounted on the host through /dev/fuse, exercised with ordinary file APIs and syscalls.</summary>
public class MountTests
{
    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void Generated_tree_reads_back_identical()
    {
        using var m = new MountFixture();
        Directory.CreateDirectory(m.Src("a/b/c"));
        File.SetUnixFileMode(m.Src("a/b"), (UnixFileMode)Convert.ToInt32("750", 8));
        int[] sizes = [0, 1, 4095, 4096, 200_000, 1_500_000, 3_000_001];
        for (int i = 0; i < sizes.Length; i++)
        {
            string p = m.Src($"a/b/file{i}");
            File.WriteAllBytes(p, RandomBytes(sizes[i], i));
            File.SetUnixFileMode(p, (UnixFileMode)Convert.ToInt32(i % 2 == 0 ? "644" : "4755", 8));
            Assert.Equal(0, chown(p, (uint)(1000 + i), (uint)(2000 + i)));
            File.SetLastWriteTimeUtc(p, new DateTime(2001, 2, 3, 4, 5, 6, DateTimeKind.Utc).AddTicks(1234567 + i));
        }
        File.WriteAllText(m.Src("a/top.txt"), "top");
        File.CreateSymbolicLink(m.Src("a/rel-link"), "b/file1");
        File.CreateSymbolicLink(m.Src("a/abs-dangling"), "/nonexistent/target/x");
        Assert.Equal(0, lchown(m.Src("a/rel-link"), 77, 88));
        Assert.Equal(0, link(m.Src("a/b/file2"), m.Src("a/hard2")));
        Assert.Equal(0, link(m.Src("a/b/file2"), m.Src("a/b/c/hard2b")));

        string[] srcEntries = Directory.EnumerateFileSystemEntries(m.Source, "*", SearchOption.AllDirectories)
            .Select(p => Path.GetRelativePath(m.Source, p)).Order(StringComparer.Ordinal).ToArray();
        string[] mntEntries = Directory.EnumerateFileSystemEntries(m.MountPoint, "*", SearchOption.AllDirectories)
            .Select(p => Path.GetRelativePath(m.MountPoint, p)).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(srcEntries, mntEntries);
        Assert.Equal(15, srcEntries.Length);

        foreach (string rel in srcEntries)
        {
            Statx s = Lstat(m.Src(rel));
            Statx t = Lstat(m.Mnt(rel));
            Assert.True(s.stx_mode == t.stx_mode, $"mode of {rel}");
            Assert.True(s.stx_uid == t.stx_uid && s.stx_gid == t.stx_gid, $"owner of {rel}");
            Assert.True(s.stx_size == t.stx_size, $"size of {rel}");
            Assert.True(s.stx_nlink == t.stx_nlink, $"nlink of {rel}");
            Assert.True(s.stx_ino == t.stx_ino, $"ino of {rel}");
            Assert.True(s.stx_mtime.tv_sec == t.stx_mtime.tv_sec && s.stx_mtime.tv_nsec == t.stx_mtime.tv_nsec, $"mtime of {rel}");
            switch (s.stx_mode & 0xF000)
            {
                case 0x8000:
                    Assert.True(File.ReadAllBytes(m.Src(rel)).AsSpan().SequenceEqual(File.ReadAllBytes(m.Mnt(rel))), $"content of {rel}");
                    break;
                case 0xA000:
                    Assert.Equal(new FileInfo(m.Src(rel)).LinkTarget, new FileInfo(m.Mnt(rel)).LinkTarget);
                    break;
            }
        }
        // Hard links share one inode through the mount too.
        Assert.Equal(Lstat(m.Mnt("a/hard2")).stx_ino, Lstat(m.Mnt("a/b/c/hard2b")).stx_ino);
        Assert.Equal(3u, Lstat(m.Mnt("a/hard2")).stx_nlink);
    }

    [Fact]
    public void Mutations_through_the_mount_reflect_on_the_host()
    {
        using var m = new MountFixture();
        File.WriteAllText(m.Mnt("new.txt"), "created through fuse");
        Assert.Equal("created through fuse", File.ReadAllText(m.Src("new.txt")));

        Directory.CreateDirectory(m.Mnt("dir/sub"));
        Assert.True(Directory.Exists(m.Src("dir/sub")));

        File.Move(m.Mnt("new.txt"), m.Mnt("dir/moved.txt"));
        Assert.False(File.Exists(m.Src("new.txt")));
        Assert.Equal("created through fuse", File.ReadAllText(m.Src("dir/moved.txt")));

        using (var fs = new FileStream(m.Mnt("dir/moved.txt"), FileMode.Open, FileAccess.ReadWrite))
        {
            fs.SetLength(7);
        }
        Assert.Equal("created", File.ReadAllText(m.Src("dir/moved.txt")));
        Assert.Equal(0, truncate(m.Mnt("dir/moved.txt"), 3));
        Assert.Equal(3, new FileInfo(m.Src("dir/moved.txt")).Length);

        File.SetUnixFileMode(m.Mnt("dir/moved.txt"), UnixFileMode.UserRead | UnixFileMode.GroupRead);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.GroupRead, File.GetUnixFileMode(m.Src("dir/moved.txt")));
        Assert.True(chown(m.Mnt("dir/moved.txt"), 4321, 8765) == 0, $"chown errno {LastErrno}");
        Assert.Equal(4321u, Lstat(m.Src("dir/moved.txt")).stx_uid);
        Assert.Equal(8765u, Lstat(m.Src("dir/moved.txt")).stx_gid);

        var when = new DateTime(2010, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(m.Mnt("dir/moved.txt"), when);
        Assert.Equal(when, File.GetLastWriteTimeUtc(m.Src("dir/moved.txt")));

        File.CreateSymbolicLink(m.Mnt("dir/link"), "moved.txt");
        Assert.Equal("moved.txt", new FileInfo(m.Src("dir/link")).LinkTarget);
        Assert.Equal(0, link(m.Mnt("dir/moved.txt"), m.Mnt("hard")));
        Assert.Equal(Lstat(m.Src("dir/moved.txt")).stx_ino, Lstat(m.Src("hard")).stx_ino);

        File.Delete(m.Mnt("dir/moved.txt"));
        Assert.False(File.Exists(m.Src("dir/moved.txt")));
        Directory.Delete(m.Mnt("dir"), true);
        Assert.False(Directory.Exists(m.Src("dir")));
        Assert.True(File.Exists(m.Src("hard")));
    }

    [Fact]
    public void Rename_noreplace_refuses_an_existing_target()
    {
        using var m = new MountFixture();
        File.WriteAllText(m.Src("x"), "x");
        File.WriteAllText(m.Src("y"), "y");
        Assert.Throws<IOException>(() => File.Move(m.Mnt("x"), m.Mnt("y"), overwrite: false));
        Assert.Equal("y", File.ReadAllText(m.Src("y")));
        Assert.Equal(0, rename(m.Mnt("x"), m.Mnt("y")));
        Assert.Equal("x", File.ReadAllText(m.Src("y")));
    }

    [Fact]
    public void Large_file_written_through_the_mount_is_identical_on_the_host()
    {
        using var m = new MountFixture(cache: CachePolicy.Auto);
        byte[] data = RandomBytes(5 * 1024 * 1024 + 123, 42);
        File.WriteAllBytes(m.Mnt("big.bin"), data);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(File.ReadAllBytes(m.Src("big.bin"))));
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(File.ReadAllBytes(m.Mnt("big.bin"))));
        using (var fs = new FileStream(m.Mnt("big.bin"), FileMode.Open, FileAccess.ReadWrite))
        {
            fs.Position = 1000;
            fs.Write("patched"u8);
            fs.Flush(flushToDisk: true);
        }
        Assert.Equal("patched", Encoding.ASCII.GetString(File.ReadAllBytes(m.Src("big.bin")), 1000, 7));
        Assert.True(new DriveInfo(m.MountPoint).TotalSize > 0);
    }

    [Fact]
    public void Two_concurrent_writers_lose_nothing()
    {
        using var m = new MountFixture(threads: 2);
        const int Block = 64 * 1024;
        const int Blocks = 64;
        string path = m.Mnt("shared.bin");
        File.WriteAllBytes(path, []);
        void Writer(int parity)
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
            byte[] buf = new byte[Block];
            for (int i = parity; i < Blocks; i += 2)
            {
                Array.Fill(buf, (byte)(i + 1));
                fs.Position = (long)i * Block;
                fs.Write(buf);
            }
        }
        var a = new Thread(() => Writer(0));
        var b = new Thread(() => Writer(1));
        a.Start();
        b.Start();
        a.Join();
        b.Join();
        byte[] result = File.ReadAllBytes(m.Src("shared.bin"));
        Assert.Equal(Block * Blocks, result.Length);
        for (int i = 0; i < Blocks; i++)
        {
            Assert.True(result.AsSpan(i * Block, Block).IndexOfAnyExcept((byte)(i + 1)) < 0, $"block {i}");
        }
    }

    [Fact]
    public void Large_directory_lists_every_entry_across_readdir_calls()
    {
        using var m = new MountFixture();
        var names = new HashSet<string>();
        for (int i = 0; i < 600; i++)
        {
            string name = $"entry-{i:D4}-" + new string('n', i % 200);
            names.Add(name);
            File.WriteAllText(m.Src(name), "");
        }
        var listed = Directory.GetFileSystemEntries(m.MountPoint).Select(p => Path.GetFileName(p)!).ToHashSet();
        Assert.Equal(names.Count, listed.Count);
        Assert.True(names.SetEquals(listed));
    }

    [Fact]
    public void Xattrs_round_trip_when_enabled()
    {
        using var m = new MountFixture(xattr: true);
        File.WriteAllText(m.Src("f"), "");
        byte[] value = Encoding.ASCII.GetBytes("some value");
        Assert.Equal(0, setxattr(m.Mnt("f"), "user.test", value, (nuint)value.Length, 0));
        byte[] back = new byte[64];
        nint n = getxattr(m.Src("f"), "user.test", back, (nuint)back.Length);
        Assert.Equal(value, back[..(int)n]);
        n = getxattr(m.Mnt("f"), "user.test", back, (nuint)back.Length);
        Assert.Equal(value, back[..(int)n]);
        Assert.Equal(value.Length, (int)getxattr(m.Mnt("f"), "user.test", [], 0));
        byte[] list = new byte[256];
        n = listxattr(m.Mnt("f"), list, (nuint)list.Length);
        Assert.Contains("user.test", Encoding.ASCII.GetString(list, 0, (int)n).Split('\0'));
        Assert.Equal(0, removexattr(m.Mnt("f"), "user.test"));
        Assert.True(getxattr(m.Src("f"), "user.test", back, (nuint)back.Length) < 0);
        Assert.Equal(61 /* ENODATA */, LastErrno);
    }

    [Fact]
    public void Xattrs_are_unsupported_when_disabled()
    {
        using var m = new MountFixture(xattr: false);
        File.WriteAllText(m.Src("f"), "");
        byte[] value = [1, 2, 3];
        Assert.True(setxattr(m.Mnt("f"), "user.test", value, 3, 0) < 0);
        Assert.Equal(95 /* EOPNOTSUPP */, LastErrno);
        Assert.True(getxattr(m.Src("f"), "user.test", value, 3) < 0);
    }

    [Fact]
    public void Read_only_refuses_every_mutation_with_erofs()
    {
        using var m = new MountFixture(readOnly: true);
        File.WriteAllText(m.Src("f"), "content");
        Directory.CreateDirectory(m.Src("d"));
        Assert.Equal("content", File.ReadAllText(m.Mnt("f")));

        Assert.Equal(-1, mkdir(m.Mnt("newdir"), 0x1ED));
        Assert.Equal(30, LastErrno);
        Assert.Equal(-1, open(m.Mnt("f"), O_WRONLY, 0));
        Assert.Equal(30, LastErrno);
        Assert.Equal(-1, open(m.Mnt("created"), O_WRONLY | O_CREAT, 0x1A4));
        Assert.Equal(30, LastErrno);
        Assert.Equal(-1, unlink(m.Mnt("f")));
        Assert.Equal(30, LastErrno);
        Assert.Equal(-1, chmod(m.Mnt("f"), 0x1FF));
        Assert.Equal(30, LastErrno);
        Assert.Equal(-1, rename(m.Mnt("f"), m.Mnt("g")));
        Assert.Equal(30, LastErrno);
        Assert.Equal(-1, truncate(m.Mnt("f"), 0));
        Assert.Equal(30, LastErrno);
        Assert.Equal("content", File.ReadAllText(m.Src("f")));
        Assert.False(Directory.Exists(m.Src("newdir")));
    }

    private static int OpenFdCount() => Directory.GetFileSystemEntries("/proc/self/fd").Length;

    [Fact]
    public void Forget_drops_inodes_and_their_fds()
    {
        using var m = new MountFixture(cache: CachePolicy.Always);
        Directory.CreateDirectory(m.Src("many"));
        for (int i = 0; i < 150; i++)
        {
            File.WriteAllText(m.Src($"many/f{i}"), "x");
        }
        _ = Directory.Exists(m.MountPoint); // INIT done
        int baselineInodes = m.FileSystem.InodeCount;
        int baselineFds = OpenFdCount();
        for (int i = 0; i < 150; i++)
        {
            Assert.True(File.Exists(m.Mnt($"many/f{i}")));
        }
        Assert.True(m.FileSystem.InodeCount >= baselineInodes + 151);
        Assert.True(OpenFdCount() >= baselineFds + 151);

        // Make the kernel evict its dentries and inodes: each eviction sends FORGET.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (m.FileSystem.InodeCount > baselineInodes && DateTime.UtcNow < deadline)
        {
            File.WriteAllText("/proc/sys/vm/drop_caches", "2");
            Thread.Sleep(100);
        }
        Assert.Equal(baselineInodes, m.FileSystem.InodeCount);
        Assert.Equal(0, m.FileSystem.HandleCount);
        Assert.True(OpenFdCount() <= baselineFds + 2, "inode fds closed"); // +2: directory enumeration fds of this test
    }
}
