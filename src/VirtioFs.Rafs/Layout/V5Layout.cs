using System.Runtime.InteropServices;

// RAFS v5 on-disk layout (nydus rafs/src/metadata/layout/v5.rs): an 8192-byte superblock, the inode table
// (u32 per inode index: record offset >> 3), the prefetch table (u32 inode numbers), the blob table (per blob:
// u32 prefetch offset, u32 prefetch size, blob id; entries separated by NUL), the extended blob table (64-byte
// entries), then 128-byte inode records. Each record is followed by its name and symlink target (each padded to
// 8 bytes), its xattr table (u64 size, then per pair u32 size, name, NUL, value; padded to 8) and, for regular
// files, one 80-byte RafsV5ChunkInfo per chunk. A directory's children are the records with inode indexes
// i_child_index .. i_child_index + i_child_count - 1, sorted by name. Every inode carries its merkle digest.
namespace VirtioFs.Rafs.Layout;

public static class V5
{
    public const uint Magic = 0x52414653;
    public const uint Version = 0x500;
    public const int SuperBlockSize = 8192;
    public const int Alignment = 8;
    public const ulong FlagSymlink = 0x1, FlagHardlink = 0x2, FlagXattr = 0x4, FlagHasHole = 0x8;
    /// <summary>VirtioFs signature header inside the superblock's reserved bytes (same layout as the v6 merkle extension, no table).</summary>
    public const int SignatureHeaderOffset = 80;
}

/// <summary>RAFS v5 superblock (nydus RafsV5SuperBlock), 8192 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV5SuperBlock
{
    public const int Size = 8192;
    [FieldOffset(0)] public uint s_magic;
    [FieldOffset(4)] public uint s_fs_version;
    [FieldOffset(8)] public uint s_sb_size;
    [FieldOffset(12)] public uint s_block_size;
    [FieldOffset(16)] public ulong s_flags;
    [FieldOffset(24)] public ulong s_inodes_count;
    [FieldOffset(32)] public ulong s_inode_table_offset;
    [FieldOffset(40)] public ulong s_prefetch_table_offset;
    [FieldOffset(48)] public ulong s_blob_table_offset;
    [FieldOffset(56)] public uint s_inode_table_entries;
    [FieldOffset(60)] public uint s_prefetch_table_entries;
    [FieldOffset(64)] public uint s_blob_table_size;
    [FieldOffset(68)] public uint s_extended_blob_table_entries;
    [FieldOffset(72)] public ulong s_extended_blob_table_offset;
}

/// <summary>RAFS v5 inode record (nydus RafsV5Inode), 128 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV5Inode
{
    public const int Size = 128;
    [FieldOffset(0)] public Bytes32 i_digest;
    [FieldOffset(32)] public ulong i_parent;
    [FieldOffset(40)] public ulong i_ino;
    [FieldOffset(48)] public uint i_uid;
    [FieldOffset(52)] public uint i_gid;
    [FieldOffset(56)] public uint i_projid;
    [FieldOffset(60)] public uint i_mode;
    [FieldOffset(64)] public ulong i_size;
    [FieldOffset(72)] public ulong i_blocks;
    [FieldOffset(80)] public ulong i_flags;
    [FieldOffset(88)] public uint i_nlink;
    [FieldOffset(92)] public uint i_child_index;
    [FieldOffset(96)] public uint i_child_count;
    [FieldOffset(100)] public ushort i_name_size;
    [FieldOffset(102)] public ushort i_symlink_size;
    [FieldOffset(104)] public uint i_rdev;
    [FieldOffset(108)] public uint i_mtime_nsec;
    [FieldOffset(112)] public ulong i_mtime;
}

/// <summary>RAFS v5 extended blob table entry (nydus RafsV5ExtBlobEntry), 64 bytes.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RafsV5ExtBlobEntry
{
    public const int Size = 64;
    [FieldOffset(0)] public uint chunk_count;
    [FieldOffset(4)] public uint features;
    [FieldOffset(8)] public ulong uncompressed_size;
    [FieldOffset(16)] public ulong compressed_size;
}
