namespace VirtioFs.Passthrough.Tests;

public class SmokeTests
{
    [Fact]
    public void Mounted_file_reads_back()
    {
        using var m = new MountFixture();
        File.WriteAllText(m.Src("hello.txt"), "hello world");
        Assert.Equal("hello world", File.ReadAllText(m.Mnt("hello.txt")));
        Assert.Contains("hello.txt", Directory.GetFileSystemEntries(m.MountPoint).Select(Path.GetFileName));
    }
}
