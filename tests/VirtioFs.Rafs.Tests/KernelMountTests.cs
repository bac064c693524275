using Xunit;

namespace VirtioFs.Rafs.Tests;

/// <summary>The Linux EROFS driver mounts an uncompressed v6 image (bootstrap + blob as its extra device) and shows
/// exactly the source tree. Needs root, loop devices and erofs in /proc/filesystems (all present on the build host).</summary>
public sealed class KernelMountTests
{
    [SkippableFact]
    public void Linux_erofs_mounts_the_v6_image_and_shows_the_source_tree()
    {
        // Without the driver or privileges the fsck.erofs test is the external check; this one says it did not run.
        Skip.IfNot(File.ReadAllText("/proc/filesystems").Contains("erofs", StringComparison.Ordinal), "no erofs in /proc/filesystems");
        Skip.IfNot(Environment.UserName == "root", "mounting needs root");
        var src = TreeFixture.CreateFullTree();
        var outDir = TreeFixture.TempDir("kmount");
        var r = RoundTripTests.Build(src, outDir, Compressor.None, chunk: 64 * 1024);
        var mnt = TreeFixture.TempDir("mnt");
        var (c1, metaDev) = TreeFixture.RunTool("losetup", "-f", "--show", "-r", r.Bootstrap);
        Assert.True(c1 == 0, metaDev);
        metaDev = metaDev.Split('\n')[0].Trim();   // losetup may add a warning line on stderr
        string? blobDev = null;
        bool mounted = false;
        try
        {
            var (c2, bd) = TreeFixture.RunTool("losetup", "-f", "--show", "-r", r.Blob!.Path);
            Assert.True(c2 == 0, bd);
            // The blob's length is not a multiple of 512 (metadata header tail); losetup warns, the data is covered.
            blobDev = bd.Split('\n')[0].Trim();
            var (c3, m) = TreeFixture.RunTool("mount", "-t", "erofs", "-o", $"ro,device={blobDev}", metaDev, mnt);
            Assert.True(c3 == 0, m);
            mounted = true;
            TreeFixture.AssertSameTree(src, mnt, compareRootTimes: true);
        }
        finally
        {
            if (mounted) TreeFixture.RunTool("umount", mnt);
            if (blobDev is not null) TreeFixture.RunTool("losetup", "-d", blobDev);
            TreeFixture.RunTool("losetup", "-d", metaDev);
        }
    }
}
