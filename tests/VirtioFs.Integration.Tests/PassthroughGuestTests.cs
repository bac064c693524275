using System.Text;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// A real Linux 6.1 guest under QEMU mounts vfsd's virtio-fs and is checked from inside: what it reads must be what the
/// host directory holds, and what it writes must reach the host. These are the drop-in checks: what a virtiofsd user relies on.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class PassthroughGuestTests(ITestOutputHelper output)
{
    private static readonly TimeSpan DaemonExit = TimeSpan.FromSeconds(30);

    [Fact]
    public void Guest_sees_every_file_of_the_shared_tree_byte_identical_with_metadata()
    {
        using var tree = TestTree.Generate();
        using var vfsd = Vfsd.Start("--shared-dir", tree.Root, "--cache", "auto", "--tag", "vfs");

        var result = Guest.Run(TestTree.GuestManifestScript("/mnt/vfs"), [("vfs", vfsd.SocketPath)], output);

        Assert.Equal(0, result.ExitCode);
        AssertSameManifest(tree.ExpectedManifest, result.Lines("M"));
        AssertHardLinksShared(tree, result);
        Assert.Equal(0, vfsd.WaitForExit(DaemonExit));
    }

    [Fact]
    public void Guest_changes_reach_the_host_directory()
    {
        using var tree = new TestTree();
        Directory.CreateDirectory(Path.Combine(tree.Root, "existing"));
        File.WriteAllText(Path.Combine(tree.Root, "existing", "to-truncate"), new string('x', 10000));
        File.WriteAllText(Path.Combine(tree.Root, "existing", "to-delete"), "bye");
        File.WriteAllText(Path.Combine(tree.Root, "existing", "to-rename"), "moving");
        Directory.CreateDirectory(Path.Combine(tree.Root, "dir-to-remove"));
        Directory.CreateDirectory(Path.Combine(tree.Root, "shared"));
        File.SetUnixFileMode(tree.Root, (UnixFileMode)Convert.ToInt32("755", 8));
        File.SetUnixFileMode(Path.Combine(tree.Root, "shared"), (UnixFileMode)Convert.ToInt32("777", 8));
        using var vfsd = Vfsd.Start("--shared-dir", tree.Root, "--cache", "auto", "--tag", "vfs");

        const string script = $$"""
            set -ex
            cd /mnt/vfs
            mkdir -p made/sub
            printf 'written by the guest\n' > made/sub/new.txt
            dd if=/dev/zero of=made/zeros bs=65536 count=33 2>/dev/null
            printf 'appended\n' >> made/sub/new.txt
            mv existing/to-rename made/renamed
            truncate -s 1234 existing/to-truncate
            chmod 0604 made/sub/new.txt
            rm existing/to-delete
            rmdir dir-to-remove
            ln -s sub/new.txt made/symlink
            ln made/sub/new.txt made/hardlink
            mkfifo made/fifo
            {{Guest.AddUser1000}}
            su u1000 -c 'echo mine > shared/by-user-1000; mkdir shared/dir-1000'
            sync
            echo "@@DONE ok"
            """;
        var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output).AssertDone();
        string root = tree.Root;
        Assert.Equal("written by the guest\nappended\n", File.ReadAllText(Path.Combine(root, "made/sub/new.txt")));
        Assert.Equal(33 * 65536, new FileInfo(Path.Combine(root, "made/zeros")).Length);
        Assert.All(File.ReadAllBytes(Path.Combine(root, "made/zeros")), b => Assert.Equal(0, b));
        Assert.Equal("moving", File.ReadAllText(Path.Combine(root, "made/renamed")));
        Assert.False(File.Exists(Path.Combine(root, "existing/to-rename")));
        Assert.Equal(1234, new FileInfo(Path.Combine(root, "existing/to-truncate")).Length);
        Assert.Equal((UnixFileMode)Convert.ToInt32("604", 8), File.GetUnixFileMode(Path.Combine(root, "made/sub/new.txt")));
        Assert.False(File.Exists(Path.Combine(root, "existing/to-delete")));
        Assert.False(Directory.Exists(Path.Combine(root, "dir-to-remove")));
        Assert.Equal("sub/new.txt", new FileInfo(Path.Combine(root, "made/symlink")).LinkTarget);
        Assert.Equal("written by the guest\nappended\n", File.ReadAllText(Path.Combine(root, "made/hardlink")));
        Assert.Equal(2, HostStat.LinkCount(Path.Combine(root, "made/hardlink")));
        Assert.True(HostStat.IsFifo(Path.Combine(root, "made/fifo")));
        Assert.Equal((1000, 1000), HostStat.Owner(Path.Combine(root, "shared/by-user-1000")));
        Assert.Equal((1000, 1000), HostStat.Owner(Path.Combine(root, "shared/dir-1000")));
        Assert.Equal(0, vfsd.WaitForExit(DaemonExit));
    }

    [Fact]
    public void Two_guest_processes_reading_and_writing_at_once_lose_nothing()
    {
        using var tree = new TestTree();
        var seed = new byte[4 << 20];
        new Random(7).NextBytes(seed);
        File.WriteAllBytes(Path.Combine(tree.Root, "input.bin"), seed);
        using var vfsd = Vfsd.Start("--shared-dir", tree.Root, "--cache", "auto", "--tag", "vfs", "--thread-pool-size", "2");

        // Writer A appends numbered lines; writer B fills its own half of a shared file with dd at fixed offsets while
        // re-reading the 4 MiB input; both run at once.
        const string script = """
            cd /mnt/vfs
            dd if=/dev/zero of=shared.bin bs=4096 count=512 2>/dev/null
            ( i=0; while [ $i -lt 3000 ]; do echo "line $i" >> a.log; i=$((i+1)); done;
              dd if=/dev/urandom of=/tmp/a-half bs=4096 count=256 2>/dev/null
              dd if=/tmp/a-half of=shared.bin bs=4096 seek=0 conv=notrunc 2>/dev/null
              sha256sum /tmp/a-half | cut -d' ' -f1 > a-half.sha ) &
            ( for r in 1 2 3 4 5; do sha256sum input.bin | cut -d' ' -f1 >> b.reads; done
              dd if=/dev/urandom of=/tmp/b-half bs=4096 count=256 2>/dev/null
              dd if=/tmp/b-half of=shared.bin bs=4096 seek=256 conv=notrunc 2>/dev/null
              sha256sum /tmp/b-half | cut -d' ' -f1 > b-half.sha ) &
            wait
            sync
            echo "@@DONE ok"
            """;
        var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output);

        Assert.Equal(0, result.ExitCode);
        string root = tree.Root;
        var lines = File.ReadAllLines(Path.Combine(root, "a.log"));
        Assert.Equal(Enumerable.Range(0, 3000).Select(i => $"line {i}"), lines);
        string inputSha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(seed));
        Assert.Equal(Enumerable.Repeat(inputSha, 5), File.ReadAllLines(Path.Combine(root, "b.reads")));
        byte[] shared = File.ReadAllBytes(Path.Combine(root, "shared.bin"));
        Assert.Equal(2 << 20, shared.Length);
        Assert.Equal(File.ReadAllText(Path.Combine(root, "a-half.sha")).Trim(), Sha(shared.AsSpan(0, 1 << 20)));
        Assert.Equal(File.ReadAllText(Path.Combine(root, "b-half.sha")).Trim(), Sha(shared.AsSpan(1 << 20, 1 << 20)));
        Assert.Equal(0, vfsd.WaitForExit(DaemonExit));
    }

    private static string Sha(ReadOnlySpan<byte> data) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(data));

    /// <summary>Names every line that differs, in full, rather than xunit's truncated collection diff.</summary>
    internal static void AssertSameManifest(IReadOnlyList<string> expected, IReadOnlyList<string> actual)
    {
        var missing = expected.Except(actual).ToList();
        var unexpected = actual.Except(expected).ToList();
        Assert.True(missing.Count == 0 && unexpected.Count == 0 && expected.Count == actual.Count,
            $"guest view differs from the source ({expected.Count} expected, {actual.Count} seen)\n" +
            $"expected but not seen:\n  {string.Join("\n  ", missing.Take(20))}\nseen but not expected:\n  {string.Join("\n  ", unexpected.Take(20))}");
    }

    private static void AssertHardLinksShared(TestTree tree, GuestResult result)
    {
        var inodes = result.Lines("I").Select(l => l.Split(' ')).ToDictionary(p => p[0], p => p[1]);
        foreach (string[] group in tree.HardLinkGroups)
        {
            var seen = group.Select(name => inodes.TryGetValue(name, out var ino) ? ino : "missing:" + name).Distinct().ToList();
            Assert.Single(seen);
        }
        Assert.Equal(tree.HardLinkGroups.Sum(g => g.Length), inodes.Count);
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GuestCollection
{
    public const string Name = "QEMU guests";
}
