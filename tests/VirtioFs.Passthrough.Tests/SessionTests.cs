using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

public class SessionTests
{
    [Fact]
    public void External_unmount_ends_the_session()
    {
        using var m = new MountFixture(threads: 3);
        Assert.True(Directory.Exists(m.MountPoint));
        _ = Directory.GetFileSystemEntries(m.MountPoint);
        Assert.False(m.Session.WaitForExit(TimeSpan.FromMilliseconds(100)));
        Assert.Equal(0, umount2(m.MountPoint, 0));
        Assert.True(m.Session.WaitForExit(TimeSpan.FromSeconds(10)), "reader threads saw ENODEV and stopped");
    }

    [Fact]
    public void Dispose_with_a_busy_mount_still_stops()
    {
        var m = new MountFixture(threads: 2);
        File.WriteAllText(m.Src("f"), "x");
        var open = new FileStream(m.Mnt("f"), FileMode.Open, FileAccess.Read);
        try
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            m.Session.Dispose();
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
            Assert.DoesNotContain(File.ReadLines("/proc/self/mountinfo"), l => l.Contains(m.MountPoint, StringComparison.Ordinal));
        }
        finally
        {
            try
            {
                open.Dispose();
            }
            catch (IOException)
            {
                // The connection may have been aborted under the open file.
            }
            m.Dispose();
        }
    }
}
