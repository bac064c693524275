using VirtioFs.Fuse;

namespace VirtioFs.Fuse.Tests;

/// <summary>/proc/self/mountinfo lines as proc(5) and fs/proc_namespace.c (show_mountinfo, mangle) write them.</summary>
public sealed class MountInfoTests
{
    [Fact]
    public void The_example_of_proc_5_parses_field_by_field()
    {
        Assert.True(MountInfo.TryParse("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue", out MountInfoEntry e));
        Assert.Equal(36, e.MountId);
        Assert.Equal(35, e.ParentId);
        Assert.Equal("98:0", e.Device);
        Assert.Equal("/mnt1", e.Root);
        Assert.Equal("/mnt2", e.MountPoint);
        Assert.Equal("rw,noatime", e.Options);
        Assert.Equal(["master:1"], e.OptionalFields);
        Assert.Equal("ext3", e.FsType);
        Assert.Equal("/dev/root", e.Source);
        Assert.Equal("rw,errors=continue", e.SuperOptions);
        Assert.False(e.IsFuse);
    }

    [Theory]
    [InlineData("100 29 0:52 / /run/vfs rw,nosuid,nodev,relatime - fuse.vfsd vfsd rw,user_id=0,group_id=0", 0)]
    [InlineData("100 29 0:52 / /run/vfs rw,relatime shared:7 master:3 propagate_from:2 - fuse vfsd rw,user_id=0", 3)]
    [InlineData("100 29 0:52 / /run/vfs rw,relatime unbindable - fuse.vfsd vfsd rw", 1)]
    public void Optional_fields_end_at_the_separator_however_many_there_are(string line, int optional)
    {
        Assert.True(MountInfo.TryParse(line, out MountInfoEntry e));
        Assert.Equal(optional, e.OptionalFields.Count);
        Assert.Equal("/run/vfs", e.MountPoint);
        Assert.Equal("vfsd", e.Source);
        Assert.True(e.IsFuse);
        Assert.Equal("0:52", e.Device);
    }

    [Fact]
    public void Escaped_spaces_tabs_newlines_and_backslashes_in_paths_come_back_as_they_are()
    {
        Assert.True(MountInfo.TryParse(@"41 29 0:60 /a\040b /mnt/my\040images\011x\012y\134z rw - fuse.vfsd my\040src rw", out MountInfoEntry e));
        Assert.Equal("/a b", e.Root);
        Assert.Equal("/mnt/my images\tx\ny\\z", e.MountPoint);
        Assert.Equal("my src", e.Source);
    }

    [Fact]
    public void A_dash_inside_a_path_or_an_option_is_not_the_separator()
    {
        Assert.True(MountInfo.TryParse("41 29 0:60 / /mnt/a-b rw,x-gvfs-show - tmpfs - rw", out MountInfoEntry e));
        Assert.Equal("/mnt/a-b", e.MountPoint);
        Assert.Empty(e.OptionalFields);
        Assert.Equal("tmpfs", e.FsType);
        Assert.Equal("-", e.Source); // tmpfs mounted with source "-": the first "-" after the options is the separator
    }

    [Theory]
    [InlineData("")]
    [InlineData("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw")] // no separator
    [InlineData("36 35 98:0 /mnt1 /mnt2 rw - ext3")] // nothing after the type
    [InlineData("x 35 98:0 / /mnt rw - ext3 /dev/root rw")] // not a mount id
    [InlineData("36 35 980 / /mnt rw - ext3 /dev/root rw")] // not major:minor
    public void Malformed_lines_are_refused_not_thrown_on(string line)
    {
        Assert.False(MountInfo.TryParse(line, out _));
    }

    [Fact]
    public void A_mount_point_named_dash_is_field_five_not_the_separator()
    {
        Assert.True(MountInfo.TryParse("36 35 98:0 / - rw - ext3 /dev/root rw", out MountInfoEntry e));
        Assert.Equal("-", e.MountPoint);
        Assert.Equal("ext3", e.FsType);
    }

    [Fact]
    public void Find_returns_the_last_mount_on_a_path_which_is_the_visible_one()
    {
        string table = Path.Combine(Path.GetTempPath(), $"mountinfo-{Guid.NewGuid():N}");
        File.WriteAllLines(table,
        [
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
            "not a mountinfo line",
            "90 22 0:50 / /mnt/img rw,relatime shared:40 - fuse.vfsd vfsd rw,user_id=0",
            "91 90 0:51 / /mnt/img rw,relatime shared:41 - tmpfs tmpfs rw",
        ]);
        try
        {
            Assert.Equal("0:51", MountInfo.Find("/mnt/img", table)?.Device);
            Assert.False(MountInfo.Find("/mnt/img", table)!.IsFuse);
            Assert.Equal("ext4", MountInfo.Find("/", table)?.FsType);
            Assert.Null(MountInfo.Find("/mnt", table));
            Assert.Null(MountInfo.Find("/mnt/img", table + ".missing"));
        }
        finally
        {
            File.Delete(table);
        }
    }

    [Fact]
    public void This_process_sees_its_root_mount()
    {
        MountInfoEntry? root = MountInfo.Find("/");
        Assert.NotNull(root);
        Assert.Contains(':', root.Device);
    }
}
