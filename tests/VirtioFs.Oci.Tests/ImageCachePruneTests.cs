using VirtioFs.Oci;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>The bootstrap cache of <c>vfsd --image</c> does not grow without bound: a bootstrap no reference record
/// points at any more, and temp files of interrupted resolutions, are removed once old; everything in use stays.</summary>
public sealed class ImageCachePruneTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-prune-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string File_(string name, string content = "x", bool old = true)
    {
        string p = Path.Combine(_dir, name);
        File.WriteAllText(p, content);
        if (old) File.SetLastWriteTimeUtc(p, DateTime.UtcNow - TimeSpan.FromDays(2));
        return p;
    }

    [Fact]
    public void Only_old_unreferenced_bootstraps_and_temp_files_are_removed()
    {
        string a = new('a', 64), b = new('b', 64), c = new('c', 64), d = new('d', 64);
        var live = File_(a + ".boot");
        File_("k1.ref", "sha256:" + a + "\n");
        var orphanOld = File_(b + ".boot");
        var orphanNew = File_(c + ".boot", old: false);                 // maybe another daemon's, record not yet written
        var sharedByTwoRefs = File_(d + ".boot");
        File_("k2.ref", "sha256:" + d + "\n");
        File_("k3.ref", "sha256:" + d + "\n");
        var badRecord = File_("k4.ref", "not a digest");                 // kept: only its bootstrap would be pruned
        var tempLayer = File_(".layer.123.abc");
        var tempBoot = File_(".boot.123.abc");
        var tempRecord = File_("k5.ref.123.abc.tmp");
        var freshTemp = File_(".layer.999.def", old: false);             // a download in progress
        var other = File_("notes.txt");

        Assert.Equal(4, NydusImageResolver.Prune(_dir, NydusImageResolver.PruneAge));

        Assert.True(File.Exists(live));
        Assert.True(File.Exists(sharedByTwoRefs));
        Assert.True(File.Exists(orphanNew));
        Assert.True(File.Exists(freshTemp));
        Assert.True(File.Exists(badRecord));
        Assert.True(File.Exists(other));
        Assert.False(File.Exists(orphanOld));
        Assert.False(File.Exists(tempLayer));
        Assert.False(File.Exists(tempBoot));
        Assert.False(File.Exists(tempRecord));
    }

    [Fact]
    public void A_missing_directory_is_nothing_to_prune() =>
        Assert.Equal(0, NydusImageResolver.Prune(Path.Combine(_dir, "absent"), TimeSpan.Zero));
}
