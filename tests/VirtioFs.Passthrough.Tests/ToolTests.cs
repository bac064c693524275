namespace VirtioFs.Passthrough.Tests;

/// <summary>Ordinary command-line tools (separate processes, real-world syscall mixes) against the mount.</summary>
public class ToolTests
{
    [Fact]
    public void Cp_tar_and_diff_agree_through_the_mount()
    {
        using var m = new MountFixture(cache: CachePolicy.Auto, threads: 2);
        var (code, output) = Shell.Run($"""
            set -e
            cp -a /usr/include/linux '{m.MountPoint}/linux'
            diff -r /usr/include/linux '{m.Source}/linux'
            diff -r /usr/include/linux '{m.MountPoint}/linux'
            tar -C '{m.MountPoint}' -cf - linux | tar -tf - | wc -l
            echo one > '{m.MountPoint}/append'
            echo two >> '{m.MountPoint}/append'
            cat '{m.Source}/append'
            ln -s linux/fuse.h '{m.MountPoint}/fuse-link'
            cmp '{m.MountPoint}/fuse-link' /usr/include/linux/fuse.h
            mv '{m.MountPoint}/linux' '{m.MountPoint}/renamed'
            rm -r '{m.MountPoint}/renamed'
            ls -A '{m.Source}'
            """);
        Assert.True(code == 0, output);
        Assert.Contains("one\ntwo\n", output, StringComparison.Ordinal);
        Assert.False(Directory.Exists(m.Src("renamed")));
        Assert.EndsWith("append\nfuse-link\n", output, StringComparison.Ordinal);
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Fio_random_read_write_verifies(bool writeback)
    {
        Skip.IfNot(File.Exists("/usr/bin/fio"), "fio is not installed (tests/setup.sh installs it)");
        using var m = new MountFixture(cache: CachePolicy.Auto, threads: 2,
            serverOptions: new VirtioFs.Fuse.FuseServerOptions { WritebackCache = writeback });
        var (code, output) = Shell.Run($"""
            fio --name=rwjob --directory='{m.MountPoint}' --rw=randrw --bs=4k --bsrange=512-128k --size=8m --numjobs=2 \
                --ioengine=psync --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting 2>&1
            echo one > '{m.MountPoint}/append'
            echo two >> '{m.MountPoint}/append'
            cat '{m.Source}/append'
            """);
        Assert.True(code == 0, output);
        Assert.Contains("err= 0", output, StringComparison.Ordinal);
        Assert.DoesNotContain("verify:", output, StringComparison.Ordinal); // fio's "verify: bad header/crc" lines
        Assert.EndsWith("one\ntwo\n", output, StringComparison.Ordinal);
    }
}
