using System.Security.Cryptography;
using VirtioFs.RafsFs;
using VirtioFs.Tests.Fixtures;
using VirtioFs.Tests.Shared;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// The image filesystem serving images nydus-image built (nydus tests/texture): mounted on the host through /dev/fuse
/// with a localfs backend and a chunk cache, as nydusd would serve them; every file read back matches what nydus says
/// it holds (its md5 list for the v5 tree, the chunk-verified content of the v6 image), symlinks and directories as in
/// nydus's expected tree.
/// </summary>
public sealed class NydusTextureMountTests : IDisposable
{
    private readonly NydusTexture _t = new();

    public void Dispose() => _t.Dispose();

    private ImageFixture.Mounted Mount(string bootstrap, string blobDir)
    {
        var image = RafsMount.Open(new RafsMountOptions { Bootstrap = bootstrap, BlobDir = blobDir, CacheDir = Path.Combine(_t.Root, "cache-" + Guid.NewGuid().ToString("N")[..8]) });
        try
        {
            return new ImageFixture.Mounted(image, Directory.CreateDirectory(Path.Combine(_t.Root, "mnt-" + Guid.NewGuid().ToString("N")[..8])).FullName);
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    [Fact]
    public void V6_from_nydus_image_2_2_reads_back_through_the_mount()
    {
        using var m = Mount(_t.V6Bootstrap, _t.V6BlobDir);
        Assert.Equal(NydusTexture.V6Files.Keys.Order(), Directory.GetFileSystemEntries(m.MountPoint).Select(Path.GetFileName).Order());
        foreach ((string name, string sha) in NydusTexture.V6Files)
            Assert.Equal(sha, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(m.M(name)))));
        Assert.Equal(0, m.Image.Cache.Metrics.DigestErrors);
    }

    [Theory]
    [InlineData("sha256-nocompress-repeatable")]
    [InlineData("blake3-lz4_block-non_repeatable")]
    public void V5_tree_and_every_file_match_nydus(string bootstrap)
    {
        using var m = Mount(Path.Combine(_t.Root, bootstrap), _t.V5BlobDir);
        foreach (NydusTexture.Entry e in _t.ExpectedTree())
        {
            var info = new FileInfo(m.M(e.Path));
            if (e.Type == "link") Assert.Equal(e.Target, info.LinkTarget);
            else if (e.Type == "directory") Assert.True(Directory.Exists(m.M(e.Path)) && info.LinkTarget is null, e.Path);
            else Assert.True(info.Exists && info.LinkTarget is null, e.Path);
        }
        foreach ((string path, string md5) in _t.ExpectedMd5())
            Assert.Equal(md5, Convert.ToHexStringLower(MD5.HashData(File.ReadAllBytes(m.M(path)))));
        // Hard links share an inode, as nydus's tree built them (hardlink-test/foo and test.sh).
        Assert.Equal(Inode(m.M("hardlink-test/foo")), Inode(m.M("hardlink-test/test.sh")));
        Assert.Equal(0, m.Image.Cache.Metrics.DigestErrors);
    }

    private static ulong Inode(string path) => HostSyscalls.Lstat(path).stx_ino;
}
