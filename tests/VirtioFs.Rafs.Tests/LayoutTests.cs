using System.Runtime.CompilerServices;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Layout;
using Xunit;

namespace VirtioFs.Rafs.Tests;

public sealed class LayoutTests
{
    [Fact]
    public void Wire_struct_sizes_match_the_published_layouts()
    {
        Assert.Equal(128, Unsafe.SizeOf<RafsV6SuperBlock>());
        Assert.Equal(256, Unsafe.SizeOf<RafsV6SuperBlockExt>());
        Assert.Equal(32, Unsafe.SizeOf<RafsV6InodeCompact>());
        Assert.Equal(64, Unsafe.SizeOf<RafsV6InodeExtended>());
        Assert.Equal(12, Unsafe.SizeOf<RafsV6Dirent>());
        Assert.Equal(8, Unsafe.SizeOf<RafsV6InodeChunkAddr>());
        Assert.Equal(128, Unsafe.SizeOf<RafsV6Device>());
        Assert.Equal(256, Unsafe.SizeOf<RafsV6Blob>());
        Assert.Equal(80, Unsafe.SizeOf<RafsV5ChunkInfo>());
        Assert.Equal(12, Unsafe.SizeOf<ErofsXattrIbodyHeader>());
        Assert.Equal(4, Unsafe.SizeOf<ErofsXattrEntry>());
        Assert.True(MerkleExtension.Offset + MerkleExtension.Size <= V6.ExtSuperOffset + RafsV6SuperBlockExt.Size);
    }

    [Theory]
    [InlineData(1UL, 3UL)]
    [InlineData(8UL, 1UL)]
    [InlineData(259UL, 70000UL)]
    [InlineData(4095UL, 1048575UL)]
    public void Device_numbers_survive_the_erofs_encoding(ulong major, ulong minor)
    {
        ulong dev = TreeFixture.MakeDev(major, minor);
        Assert.Equal(dev, V6Writer.DecodeDev(V6Writer.EncodeDev(dev)));
    }

    [Theory]
    [InlineData("user.x", 1, 5)]
    [InlineData("trusted.overlay.opaque", 4, 8)]
    [InlineData("security.selinux", 6, 9)]
    [InlineData("system.posix_acl_access", 2, 23)]
    [InlineData("system.posix_acl_default", 3, 24)]
    public void Xattr_names_map_to_erofs_name_indexes(string name, int index, int prefixLen)
    {
        var (i, p) = V6Writer.MatchXattr(System.Text.Encoding.ASCII.GetBytes(name));
        Assert.Equal(index, i);
        Assert.Equal(prefixLen, p);
    }

    [Fact]
    public void Xattr_outside_the_erofs_namespaces_is_a_named_error()
    {
        var e = Assert.Throws<RafsFormatException>(() => V6Writer.MatchXattr("os2.foo"u8));
        Assert.Contains("os2.foo", e.Message);
    }
}
