using System.Security.Cryptography;
using K4os.Compression.LZ4;

// VirtioFs.Rafs: nydus-compatible RAFS images (v6 = EROFS-based, v5), as dragonflyoss/nydus lays them out:
// Layout (on-disk structs), Builder (source tree -> parallel chunking with dedup -> blob + bootstrap, merkle tree,
// signatures), Reader (mmap reader, checker, unpacker). This file holds the chunk codecs and digesters.
namespace VirtioFs.Rafs;

/// <summary>Chunk compressors with nydus's numeric ids (nydus utils/src/compress: none=0, lz4_block=1, gzip=2, zstd=3).</summary>
public enum Compressor : uint
{
    None = 0,
    Lz4Block = 1,
    Gzip = 2,
    Zstd = 3,
}

/// <summary>Chunk digesters with nydus's numeric ids (blake3=0, sha256=1).</summary>
public enum Digester : uint
{
    Blake3 = 0,
    Sha256 = 1,
}

/// <summary>RAFS superblock flags (nydus rafs/src/metadata/mod.rs RafsSuperFlags).</summary>
[Flags]
public enum RafsSuperFlags : ulong
{
    None = 0,
    CompressionNone = 0x1,
    CompressionLz4 = 0x2,
    HashBlake3 = 0x4,
    HashSha256 = 0x8,
    ExplicitUidGid = 0x10,
    HasXattr = 0x20,
    CompressionGzip = 0x40,
    CompressionZstd = 0x80,
    InlinedChunkDigest = 0x100,
    TarfsMode = 0x200,
    EncryptionNone = 0x0100_0000,
    EncryptionAes128Xts = 0x0200_0000,
}

/// <summary>Blob feature bits (nydus storage/src/device.rs BlobFeatures).</summary>
[Flags]
public enum BlobFeatures : uint
{
    None = 0,
    Aligned = 0x1,
    InlinedFsMeta = 0x2,
    ChunkInfoV2 = 0x4,
    Zran = 0x8,
    Separate = 0x10,
    InlinedChunkDigest = 0x20,
    Tarfs = 0x40,
    Batch = 0x80,
    Encrypted = 0x100,
    IsChunkdictGenerated = 0x200,
    HasTarHeader = 0x1000_0000,
    HasToc = 0x2000_0000,
    CapTarToc = 0x4000_0000,
}

/// <summary>Chunk flags (nydus BlobChunkFlags).</summary>
[Flags]
public enum ChunkFlags : uint
{
    None = 0,
    Compressed = 0x1,
    Hole = 0x2,
    Encrypted = 0x4,
    Batch = 0x8,
}

/// <summary>Digest, compression and decompression of chunk data, as nydus does them.</summary>
public static class Codec
{
    public const int DigestSize = 32;

    public static Compressor ParseCompressor(string s) => s switch
    {
        "none" => Compressor.None,
        "lz4_block" => Compressor.Lz4Block,
        "zstd" => Compressor.Zstd,
        _ => throw new RafsFormatException($"unknown compressor '{s}' (none, lz4_block, zstd)"),
    };

    public static string Name(Compressor c) => c switch
    {
        Compressor.None => "none",
        Compressor.Lz4Block => "lz4_block",
        Compressor.Gzip => "gzip",
        Compressor.Zstd => "zstd",
        _ => $"unknown({(uint)c})",
    };

    public static Digester ParseDigester(string s) => s switch
    {
        "blake3" => Digester.Blake3,
        "sha256" => Digester.Sha256,
        _ => throw new RafsFormatException($"unknown digester '{s}' (blake3, sha256)"),
    };

    public static string Name(Digester d) => d switch
    {
        Digester.Blake3 => "blake3",
        Digester.Sha256 => "sha256",
        _ => $"unknown({(uint)d})",
    };

    public static void Hash(Digester d, ReadOnlySpan<byte> data, Span<byte> digest)
    {
        if (d == Digester.Sha256)
        {
            SHA256.HashData(data, digest);
        }
        else
        {
            Blake3.Hasher.Hash(data, digest[..DigestSize]);
        }
    }

    /// <summary>Incremental hasher over several spans (merkle nodes).</summary>
    public sealed class Incremental : IDisposable
    {
        private readonly Digester _d;
        private readonly Blake3.Hasher? _b3;
        private readonly IncrementalHash? _sha;

        public Incremental(Digester d)
        {
            _d = d;
            if (d == Digester.Sha256) _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            else _b3 = Blake3.Hasher.New();
        }

        public void Update(ReadOnlySpan<byte> data)
        {
            if (_sha is not null) _sha.AppendData(data);
            else _b3!.Update(data);
        }

        public void Finish(Span<byte> digest)
        {
            if (_sha is not null) _sha.GetHashAndReset(digest);
            else _b3!.Finalize(digest[..DigestSize]);
        }

        public void Dispose()
        {
            _sha?.Dispose();
            _b3?.Dispose();
        }
    }

    /// <summary>Upper bound of the compressed size for an input of <paramref name="len"/> bytes.</summary>
    public static int MaxCompressedSize(Compressor c, int len) => c switch
    {
        Compressor.Lz4Block => LZ4Codec.MaximumOutputSize(len),
        Compressor.Zstd => (int)ZstdSharp.Compressor.GetCompressBound(len),
        _ => len,
    };

    /// <summary>Compresses <paramref name="src"/> into <paramref name="dst"/>; returns the size, or -1 when the
    /// result would not be smaller (the chunk is then stored uncompressed, as nydus does).</summary>
    public static int Compress(Compressor c, ReadOnlySpan<byte> src, Span<byte> dst, ZstdSharp.Compressor? zstd)
    {
        int n;
        switch (c)
        {
            case Compressor.Lz4Block:
                n = NativeLz4 ? NativeLz4Encode(src, dst) : LZ4Codec.Encode(src, dst, LZ4Level.L00_FAST);
                break;
            case Compressor.Zstd:
                if (zstd is null) throw new ArgumentNullException(nameof(zstd));
                n = zstd.Wrap(src, dst);
                break;
            default:
                return -1;
        }
        return n > 0 && n < src.Length ? n : -1;
    }

    /// <summary>Whether the system liblz4 is used for lz4_block compression (falls back to K4os when absent).</summary>
    public static bool NativeLz4 { get; set; } = ProbeNativeLz4();

    private static unsafe bool ProbeNativeLz4()
    {
        try
        {
            byte x = 0;
            byte* d = stackalloc byte[16];
            // SAFETY: one input byte, 16 output bytes (LZ4 bound for 1 byte is 17; 16 suffices for a 1-byte literal run).
            return Interop.LZ4_compress_default(&x, d, 1, 16) > 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>K4os's managed LZ4 encoder (reference output for tests).</summary>
    public static int ManagedLz4(ReadOnlySpan<byte> src, Span<byte> dst) => LZ4Codec.Encode(src, dst, LZ4Level.L00_FAST);

    private static unsafe int NativeLz4Encode(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        fixed (byte* s = src)
        fixed (byte* d = dst)
        {
            // SAFETY: both spans are pinned; liblz4 writes at most dst.Length bytes and reads src.Length bytes.
            return Interop.LZ4_compress_default(s, d, src.Length, dst.Length);
        }
    }

    private static unsafe int NativeLz4Decode(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        if (src.IsEmpty || dst.IsEmpty) return -1;
        fixed (byte* s = src)
        fixed (byte* d = dst)
        {
            // SAFETY: both spans are pinned; LZ4_decompress_safe reads at most src.Length and writes at most dst.Length
            // bytes for any input.
            return Interop.LZ4_decompress_safe(s, d, src.Length, dst.Length);
        }
    }

    /// <summary>K4os's managed LZ4 decoder (reference for tests).</summary>
    public static int ManagedLz4Decode(ReadOnlySpan<byte> src, Span<byte> dst) => LZ4Codec.Decode(src, dst);

    /// <summary>Decompresses exactly dst.Length bytes; false if the input is corrupt.</summary>
    public static bool Decompress(Compressor c, ReadOnlySpan<byte> src, Span<byte> dst)
    {
        try
        {
            switch (c)
            {
                case Compressor.None:
                    if (src.Length != dst.Length) return false;
                    src.CopyTo(dst);
                    return true;
                case Compressor.Lz4Block:
                    // Every chunk read from a backend is decoded here: the system liblz4 when present (as for encoding).
                    return (NativeLz4 ? NativeLz4Decode(src, dst) : LZ4Codec.Decode(src, dst)) == dst.Length;
                case Compressor.Zstd:
                    using (var z = new ZstdSharp.Decompressor())
                    {
                        return z.TryUnwrap(src, dst, out int written) && written == dst.Length;
                    }
                case Compressor.Gzip:
                    using (var ms = new MemoryStream(src.ToArray()))
                    using (var gz = new System.IO.Compression.GZipStream(ms, System.IO.Compression.CompressionMode.Decompress))
                    {
                        gz.ReadExactly(dst);
                        return gz.Read(new byte[1]) == 0;
                    }
                default:
                    return false;
            }
        }
        catch (Exception e) when (e is InvalidDataException or ZstdSharp.ZstdException or EndOfStreamException or ArgumentException or InvalidOperationException)
        {
            return false;
        }
    }
}

/// <summary>A bootstrap, blob or build input that does not follow the format; the message names what is wrong.</summary>
public sealed class RafsFormatException : Exception
{
    public RafsFormatException(string message) : base(message) { }
    public RafsFormatException(string message, Exception inner) : base(message, inner) { }
    public RafsFormatException() { }
}
