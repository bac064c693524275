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

    [Fact]
    public void Native_lz4_decoding_matches_managed_and_survives_mangled_blocks()
    {
        Assert.True(Codec.NativeLz4, "system liblz4.so.1 not found; the fast path is not exercised");
        var rnd = new Random(11);
        var words = Enumerable.Range(0, 500).Select(_ => new string((char)('a' + rnd.Next(26)), rnd.Next(1, 9))).ToArray();
        var text = System.Text.Encoding.ASCII.GetBytes(string.Join(' ', Enumerable.Range(0, 60000).Select(_ => words[rnd.Next(words.Length)])));
        var input = text.AsSpan(0, 256 * 1024).ToArray();
        var block = new byte[Codec.MaxCompressedSize(Compressor.Lz4Block, input.Length)];
        int n = Codec.Compress(Compressor.Lz4Block, input, block, null);
        Assert.True(n > 0);
        var viaCodec = new byte[input.Length];
        Assert.True(Codec.Decompress(Compressor.Lz4Block, block.AsSpan(0, n), viaCodec)); // native: NativeLz4 is on
        var managed = new byte[input.Length];
        Assert.Equal(input.Length, Codec.ManagedLz4Decode(block.AsSpan(0, n), managed));
        Assert.Equal(input, viaCodec);
        Assert.Equal(input, managed);
        // Hostile blobs: flipped bytes, truncations, a wrong plain size. Never a crash or a write past the buffer
        // (the guard bytes after the destination stay untouched).
        var dst = new byte[input.Length + 64];
        for (int i = 0; i < 3000; i++)
        {
            var bad = block.AsSpan(0, n).ToArray();
            int len = i % 5 == 0 ? rnd.Next(0, n) : n;
            for (int k = rnd.Next(1, 8); k > 0; k--) bad[rnd.Next(n)] ^= (byte)rnd.Next(1, 256);
            int want = i % 7 == 0 ? input.Length - rnd.Next(1, 1000) : input.Length;
            dst.AsSpan(want).Fill(0xA5);
            Codec.Decompress(Compressor.Lz4Block, bad.AsSpan(0, len), dst.AsSpan(0, want));
            Assert.True(dst.AsSpan(want).IndexOfAnyExcept((byte)0xA5) < 0, $"write past the destination (case {i})");
        }
        Assert.False(Codec.Decompress(Compressor.Lz4Block, block.AsSpan(0, n), new byte[input.Length + 1]));
        Assert.False(Codec.Decompress(Compressor.Lz4Block, block.AsSpan(0, n), new byte[input.Length - 1]));
        Assert.False(Codec.Decompress(Compressor.Lz4Block, ReadOnlySpan<byte>.Empty, new byte[10]));
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
