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

public sealed class CodecTests
{
    [Fact]
    public void Native_and_managed_lz4_produce_identical_blocks()
    {
        // Reproducible images must not depend on whether the system liblz4 is present.
        Assert.True(Codec.NativeLz4, "system liblz4.so.1 not found; the fast path is not exercised");
        var rnd = new Random(3);
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 40000).Select(i => $"line {i % 97} of text {i % 13}\n")));
        foreach (var input in new[] { text, text.AsSpan(0, 100).ToArray(), Enumerable.Range(0, 70000).Select(_ => (byte)rnd.Next(4)).ToArray() })
        {
            var a = new byte[Codec.MaxCompressedSize(Compressor.Lz4Block, input.Length)];
            var b = new byte[a.Length];
            int na = Codec.Compress(Compressor.Lz4Block, input, a, null);
            int nb = Codec.ManagedLz4(input, b);
            Assert.Equal(nb, na);
            Assert.Equal(b.AsSpan(0, nb).ToArray(), a.AsSpan(0, na).ToArray());
            var back = new byte[input.Length];
            Assert.True(Codec.Decompress(Compressor.Lz4Block, a.AsSpan(0, na), back));
            Assert.Equal(input, back);
        }
    }

    [Theory]
    [InlineData(Compressor.Lz4Block)]
    [InlineData(Compressor.Zstd)]
    public void Corrupt_compressed_data_fails_cleanly(Compressor c)
    {
        var input = System.Text.Encoding.ASCII.GetBytes(new string('a', 5000) + "tail");
        var buf = new byte[Codec.MaxCompressedSize(c, input.Length)];
        using var z = new ZstdSharp.Compressor(3);
        int n = Codec.Compress(c, input, buf, z);
        Assert.True(n > 0);
        var dst = new byte[input.Length];
        Assert.False(Codec.Decompress(c, buf.AsSpan(0, n / 2), dst));
        Assert.False(Codec.Decompress(c, buf.AsSpan(0, n), new byte[input.Length + 1]));
    }
}
