using System.Runtime.InteropServices;

// RAFS v6 on-disk layout.
//
// RAFS v6 is an EROFS image (Linux fs/erofs/erofs_fs.h) with nydus extensions (dragonflyoss/nydus
// rafs/src/metadata/layout/v6.rs): the EROFS superblock sits at byte 1024, the RAFS extended superblock at
// 1152, the EROFS device table at 1408 (one 128-byte slot per data blob), then the 256-byte blob table entries
// and the prefetch table (u32 nids), then the metadata area (block `s_meta_blkaddr`) with 32-byte-slot
// inodes, directory blocks and inline tails, then the 80-byte chunk table (RafsV5ChunkInfo records).
// Regular files are EROFS "chunk based" inodes whose 8-byte chunk indexes name a device (blob index + 1) and a
// block address (uncompressed offset / 4096) in that blob. All fields are little-endian.
namespace VirtioFs.Rafs.Layout;

/// <summary>Constants of the EROFS/RAFS v6 layout (erofs_fs.h, nydus layout/v6.rs).</summary>
public static class V6
{
    public const uint ErofsSuperMagicV1 = 0xE0F5E1E2;
    public const int SuperOffset = 1024;
    public const int SuperBlockSize = 128;
    public const int ExtSuperOffset = SuperOffset + SuperBlockSize;      // 1152
    public const int ExtSuperBlockSize = 256;
    public const int DevTableOffset = ExtSuperOffset + ExtSuperBlockSize; // 1408
    public const int BlockBits = 12;
    public const int BlockSize = 1 << BlockBits;
    public const int InodeSlotBits = 5;
    public const int InodeSlotSize = 1 << InodeSlotBits;
    public const uint FeatureCompatRafsV6 = 0x4000_0000;
    public const uint FeatureCompatSbChksum = 0x1;
    public const uint FeatureIncompatChunkedFile = 0x4;
    public const uint FeatureIncompatDeviceTable = 0x8;
    public const ushort InodeLayoutCompact = 0;
    public const ushort InodeLayoutExtended = 1;
    public const ushort InodeFlatPlain = 0;
    public const ushort InodeFlatInline = 2;
    public const ushort InodeChunkBased = 4;
    public const ushort ChunkFormatIndexes = 0x0020;
    public const ushort ChunkFormatSizeMask = 0x001F;
    public const uint NullAddr = 0xFFFF_FFFF;
    public const int DirentSize = 12;
    public const int XattrIbodyHeaderSize = 12;
    public const int XattrEntrySize = 4;
    public const int ChunkAddrSize = 8;

    // EROFS dirent file types (erofs_fs.h EROFS_FT_*).
    public const byte FtUnknown = 0, FtRegFile = 1, FtDir = 2, FtChrdev = 3, FtBlkdev = 4, FtFifo = 5, FtSock = 6, FtSymlink = 7;

    /// <summary>EROFS dirent file type for a POSIX mode.</summary>
    public static byte FileType(uint mode) => (mode & 0xF000) switch
    {
        0x8000 => FtRegFile,
        0x4000 => FtDir,
        0x2000 => FtChrdev,
        0x6000 => FtBlkdev,
        0x1000 => FtFifo,
        0xC000 => FtSock,
        0xA000 => FtSymlink,
        _ => FtUnknown,
    };

    /// <summary>POSIX S_IFMT bits for an EROFS dirent file type (0 if unknown).</summary>
    public static uint ModeOfFileType(byte ft) => ft switch
    {
        FtRegFile => 0x8000,
        FtDir => 0x4000,
        FtChrdev => 0x2000,
        FtBlkdev => 0x6000,
        FtFifo => 0x1000,
        FtSock => 0xC000,
        FtSymlink => 0xA000,
        _ => 0,
    };
}

/// <summary>EROFS superblock as RAFS v6 uses it (nydus RafsV6SuperBlock / erofs_super_block), 128 bytes at 1024.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6SuperBlock
{
    public const int Size = 128;
    [FieldOffset(0)] public uint s_magic;
    [FieldOffset(4)] public uint s_checksum;
    [FieldOffset(8)] public uint s_feature_compat;
    [FieldOffset(12)] public byte s_blkszbits;
    [FieldOffset(13)] public byte s_extslots;
    [FieldOffset(14)] public ushort s_root_nid;
    [FieldOffset(16)] public ulong s_inos;
    [FieldOffset(24)] public ulong s_build_time;
    [FieldOffset(32)] public uint s_build_time_nsec;
    [FieldOffset(36)] public uint s_blocks;
    [FieldOffset(40)] public uint s_meta_blkaddr;
    [FieldOffset(44)] public uint s_xattr_blkaddr;
    [FieldOffset(48)] public Bytes16 s_uuid;
    [FieldOffset(64)] public Bytes16 s_volume_name;
    [FieldOffset(80)] public uint s_feature_incompat;
    [FieldOffset(84)] public ushort s_u;
    [FieldOffset(86)] public ushort s_extra_devices;
    [FieldOffset(88)] public ushort s_devt_slotoff;
    // 38 reserved bytes to 128.
}

/// <summary>RAFS v6 extended superblock (nydus RafsV6SuperBlockExt), 256 bytes at 1152.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6SuperBlockExt
{
    public const int Size = 256;
    /// <summary>Offset of the 200 reserved bytes; VirtioFs keeps its merkle extension header there.</summary>
    public const int ReservedOffset = 56;
    [FieldOffset(0)] public ulong s_flags;
    [FieldOffset(8)] public ulong s_blob_table_offset;
    [FieldOffset(16)] public uint s_blob_table_size;
    [FieldOffset(20)] public uint s_chunk_size;
    [FieldOffset(24)] public ulong s_chunk_table_offset;
    [FieldOffset(32)] public ulong s_chunk_table_size;
    [FieldOffset(40)] public ulong s_prefetch_table_offset;
    [FieldOffset(48)] public uint s_prefetch_table_size;
    [FieldOffset(52)] public uint s_padding;
}

/// <summary>EROFS 32-byte compact inode (erofs_inode_compact).</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6InodeCompact
{
    public const int Size = 32;
    [FieldOffset(0)] public ushort i_format;
    [FieldOffset(2)] public ushort i_xattr_icount;
    [FieldOffset(4)] public ushort i_mode;
    [FieldOffset(6)] public ushort i_nlink;
    [FieldOffset(8)] public uint i_size;
    [FieldOffset(12)] public uint i_reserved;
    [FieldOffset(16)] public uint i_u;
    [FieldOffset(20)] public uint i_ino;
    [FieldOffset(24)] public ushort i_uid;
    [FieldOffset(26)] public ushort i_gid;
    [FieldOffset(28)] public uint i_reserved2;
}

/// <summary>EROFS 64-byte extended inode (erofs_inode_extended).</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6InodeExtended
{
    public const int Size = 64;
    [FieldOffset(0)] public ushort i_format;
    [FieldOffset(2)] public ushort i_xattr_icount;
    [FieldOffset(4)] public ushort i_mode;
    [FieldOffset(6)] public ushort i_reserved;
    [FieldOffset(8)] public ulong i_size;
    [FieldOffset(16)] public uint i_u;
    [FieldOffset(20)] public uint i_ino;
    [FieldOffset(24)] public uint i_uid;
    [FieldOffset(28)] public uint i_gid;
    [FieldOffset(32)] public ulong i_mtime;
    [FieldOffset(40)] public uint i_mtime_nsec;
    [FieldOffset(44)] public uint i_nlink;
    // 16 reserved bytes to 64.
}

/// <summary>EROFS directory entry (erofs_dirent), 12 bytes; names follow the dirent array in the block.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6Dirent
{
    public const int Size = 12;
    [FieldOffset(0)] public ulong e_nid;
    [FieldOffset(8)] public ushort e_nameoff;
    [FieldOffset(10)] public byte e_file_type;
    [FieldOffset(11)] public byte e_reserved;
}

/// <summary>
/// EROFS chunk index (erofs_inode_chunk_index) as nydus fills it: the low byte of c_blob_addr_hi is the EROFS
/// device id (blob index + 1), the high byte with c_blob_addr_lo is the chunk's index in its blob, and
/// c_blk_addr is the chunk's uncompressed offset in the blob in 4 KiB blocks.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6InodeChunkAddr
{
    public const int Size = 8;
    [FieldOffset(0)] public ushort c_blob_addr_lo;
    [FieldOffset(2)] public ushort c_blob_addr_hi;
    [FieldOffset(4)] public uint c_blk_addr;
}

/// <summary>EROFS device slot (erofs_deviceslot / nydus RafsV6Device), 128 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6Device
{
    public const int Size = 128;
    [FieldOffset(0)] public Bytes64 blob_id;
    [FieldOffset(64)] public uint blocks;
    [FieldOffset(68)] public uint mapped_blkaddr;
}

/// <summary>RAFS v6 blob table entry (nydus RafsV6Blob), 256 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV6Blob
{
    public const int Size = 256;
    [FieldOffset(0)] public Bytes64 blob_id;
    [FieldOffset(64)] public uint blob_index;
    [FieldOffset(68)] public uint chunk_size;
    [FieldOffset(72)] public uint chunk_count;
    [FieldOffset(76)] public uint compression_algo;
    [FieldOffset(80)] public uint digest_algo;
    [FieldOffset(84)] public uint features;
    [FieldOffset(88)] public ulong compressed_size;
    [FieldOffset(96)] public ulong uncompressed_size;
    [FieldOffset(104)] public uint blob_toc_size;
    [FieldOffset(108)] public uint ci_compressor;
    [FieldOffset(112)] public ulong ci_offset;
    [FieldOffset(120)] public ulong ci_compressed_size;
    [FieldOffset(128)] public ulong ci_uncompressed_size;
    [FieldOffset(136)] public Bytes32 blob_toc_digest;
    [FieldOffset(168)] public Bytes32 blob_meta_digest;
    [FieldOffset(200)] public ulong blob_meta_size;
    [FieldOffset(208)] public ulong cipher_iv;
    [FieldOffset(216)] public uint cipher_algo;
    // 36 reserved bytes to 256.
}

/// <summary>Chunk record shared by RAFS v5 and the v6 chunk table (nydus RafsV5ChunkInfo), 80 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV5ChunkInfo
{
    public const int Size = 80;
    [FieldOffset(0)] public Bytes32 block_id;
    [FieldOffset(32)] public uint blob_index;
    [FieldOffset(36)] public uint flags;
    [FieldOffset(40)] public uint compressed_size;
    [FieldOffset(44)] public uint uncompressed_size;
    [FieldOffset(48)] public ulong compressed_offset;
    [FieldOffset(56)] public ulong uncompressed_offset;
    [FieldOffset(64)] public ulong file_offset;
    [FieldOffset(72)] public uint index;
    [FieldOffset(76)] public uint crc32;
}

/// <summary>EROFS inline xattr body header (erofs_xattr_ibody_header), 12 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct ErofsXattrIbodyHeader
{
    public const int Size = 12;
    [FieldOffset(0)] public uint h_reserved;
    [FieldOffset(4)] public byte h_shared_count;
}

/// <summary>EROFS xattr entry header (erofs_xattr_entry), 4 bytes, followed by name suffix and value.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct ErofsXattrEntry
{
    public const int Size = 4;
    [FieldOffset(0)] public byte e_name_len;
    [FieldOffset(1)] public byte e_name_index;
    [FieldOffset(2)] public ushort e_value_size;
}

[System.Runtime.CompilerServices.InlineArray(16)]
public struct Bytes16 { private byte _e; }

/// <summary>32 inline bytes (a digest); compares and hashes by content, prints as hex.</summary>
[System.Runtime.CompilerServices.InlineArray(32)]
public struct Bytes32 : IEquatable<Bytes32>
{
    private byte _e;

    public readonly bool Equals(Bytes32 other) =>
        MemoryMarshal.CreateReadOnlySpan(in _e, 32).SequenceEqual(MemoryMarshal.CreateReadOnlySpan(in other._e, 32));

    public override readonly bool Equals(object? obj) => obj is Bytes32 b && Equals(b);

    public override readonly int GetHashCode() => BitConverter.ToInt32(MemoryMarshal.CreateReadOnlySpan(in _e, 4));

    public override readonly string ToString() => Convert.ToHexStringLower(MemoryMarshal.CreateReadOnlySpan(in _e, 32));

    public static bool operator ==(Bytes32 a, Bytes32 b) => a.Equals(b);

    public static bool operator !=(Bytes32 a, Bytes32 b) => !a.Equals(b);
}

[System.Runtime.CompilerServices.InlineArray(64)]
public struct Bytes64 { private byte _e; }
