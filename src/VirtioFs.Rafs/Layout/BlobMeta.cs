using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace VirtioFs.Rafs.Layout;

/// <summary>
/// nydus blob metadata (storage/src/meta/): after the chunk data a blob carries the chunk information array
/// ("CI", 16 bytes per chunk in blob index order, optionally compressed) followed by a 4096-byte
/// BlobCompressionContextHeader. nydusd's v6 reader requires it (RafsV6Blob validation checks
/// ci_uncompressed_size == chunk_count * 16); the blob table entry points at it with ci_offset/ci_*_size.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct BlobChunkInfoV1Ondisk
{
    public const int Size = 16;
    /// <summary>bits 0-7 size-1 high nibble at 8-11, 12-43 offset (4 KiB aligned), 44-63 size-1 low 20 bits.</summary>
    [FieldOffset(0)] public ulong uncomp_info;
    /// <summary>bits 0-39 offset, 40-43 size-1 high nibble, 44-63 size-1 low 20 bits.</summary>
    [FieldOffset(8)] public ulong comp_info;

    public static BlobChunkInfoV1Ondisk Encode(ulong compOffset, uint compSize, ulong uncompOffset, uint uncompSize)
    {
        if (compOffset > 0xFF_FFFF_FFFF || (uncompOffset & ~0xFFF_FFFF_F000UL) != 0 || compSize == 0 || uncompSize == 0 || compSize > 1 << 24 || uncompSize > 1 << 24)
            throw new RafsFormatException("chunk outside the range the nydus chunk information array can encode");
        ulong cs = compSize - 1UL, us = uncompSize - 1UL;
        return new BlobChunkInfoV1Ondisk
        {
            comp_info = ((cs & 0xF_FFFF) << 44) | ((cs & 0xF0_0000) << 20) | compOffset,
            uncomp_info = ((us & 0xF_FFFF) << 44) | ((us & 0xF0_0000) >> 12) | uncompOffset,
        };
    }

    public readonly ulong CompressedOffset => comp_info & 0xFF_FFFF_FFFF;
    public readonly uint CompressedSize => (uint)((comp_info >> 44) | ((comp_info & 0xF00_0000_0000) >> 20)) + 1;
    public readonly ulong UncompressedOffset => uncomp_info & 0xFFF_FFFF_F000;
    public readonly uint UncompressedSize => (uint)((uncomp_info >> 44) | ((uncomp_info & 0xF00) << 12)) + 1;
}

/// <summary>nydus BlobCompressionContextHeader, the last 4096 bytes of a blob's metadata.</summary>
public static class BlobCompressionContextHeader
{
    public const int Size = 4096;
    public const uint Magic = 0xB10BB10B;

    public static byte[] Build(BlobFeatures features, Compressor ciCompressor, uint entries, ulong ciOffset, ulong ciCompressedSize, ulong ciUncompressedSize)
    {
        var h = new byte[Size];
        BinaryPrimitives.WriteUInt32LittleEndian(h, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(4), (uint)features);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), (uint)ciCompressor);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(12), entries);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(16), ciOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(24), ciCompressedSize);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(32), ciUncompressedSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(Size - 4), Magic);
        return h;
    }
}
