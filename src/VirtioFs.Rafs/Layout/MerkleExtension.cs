using System.Buffers.Binary;

namespace VirtioFs.Rafs.Layout;

/// <summary>
/// VirtioFs merkle extension for RAFS v6 (documented in src/VirtioFs.ImageTool/USAGE.md). Its header lives in
/// the reserved bytes of the RAFS v6 extended superblock (byte 1152 + 56 = 1208), which nydus and EROFS do not
/// read; the digest table it points to sits after the chunk table, outside every range nydus or EROFS address.
/// <code>
/// +0   u32 magic 0x4B524D56 ("VMRK")   +4  u32 version (1)
/// +8   u64 table offset                +16 u64 table size (inode count * 32)
/// +24  [32] root digest                +56 [64] Ed25519 signature over the root digest (zero if unsigned)
/// +120 u32 flags (bit 0: signed)
/// </code>
/// The table holds one 32-byte digest per inode, indexed by i_ino - 1.
/// </summary>
public static class MerkleExtension
{
    public const uint Magic = 0x4B524D56;
    public const uint Version = 1;
    public const int Offset = V6.ExtSuperOffset + RafsV6SuperBlockExt.ReservedOffset;
    public const int Size = 124;
    public const uint FlagSigned = 1;

    public static void Write(Span<byte> bootstrap, ulong tableOffset, ulong tableSize, ReadOnlySpan<byte> root, ReadOnlySpan<byte> signature)
        => WriteAt(bootstrap, Offset, tableOffset, tableSize, root, signature);

    public static void WriteAt(Span<byte> bootstrap, int offset, ulong tableOffset, ulong tableSize, ReadOnlySpan<byte> root, ReadOnlySpan<byte> signature)
    {
        var h = bootstrap.Slice(offset, Size);
        BinaryPrimitives.WriteUInt32LittleEndian(h, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], Version);
        BinaryPrimitives.WriteUInt64LittleEndian(h[8..], tableOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(h[16..], tableSize);
        root.CopyTo(h[24..56]);
        if (signature.Length == 64)
        {
            signature.CopyTo(h[56..120]);
            BinaryPrimitives.WriteUInt32LittleEndian(h[120..], FlagSigned);
        }
    }
}
