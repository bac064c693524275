using System.Buffers.Binary;

namespace VirtioFs.Rafs.Layout;

/// <summary>
/// VirtioFs merkle extension for RAFS v6 and v5 (documented in src/VirtioFs.ImageTool/USAGE.md). Its header lives in
/// reserved superblock bytes that nydus and EROFS do not read (v6: the extended superblock's reserved area at byte
/// 1152 + 56 = 1208; v5: byte 80 of the 8192-byte superblock); the digest table it points to sits after everything
/// nydus or EROFS address (v6: after the chunk table; v5: after the last inode record).
/// <code>
/// +0   u32 magic 0x4B524D56 ("VMRK")   +4  u32 version (3; 2 = rows without file digests; 1 = content-only tree of older builds, not trusted)
/// +8   u64 table offset                +16 u64 table size (rows * 128; version 2: rows * 96)
/// +24  [32] root digest                +56 [64] Ed25519 signature over the root digest (zero if unsigned)
/// +120 u32 flags (bit 0: signed)
/// </code>
/// The table holds one <see cref="RowSize"/>-byte row per inode number, indexed by i_ino - 1 (<see cref="MerkleRow"/>).
/// </summary>
public static class MerkleExtension
{
    public const uint Magic = 0x4B524D56;
    /// <summary>Version 3: version 2 plus each regular file's whole-content digest (what b3sum/sha256sum print) in its
    /// row, bound by the file's content digest.</summary>
    public const uint Version = 3;
    /// <summary>Version 2: every inode's digest binds its metadata (mode, uid, gid, rdev, size, xattrs) to its content;
    /// 96-byte rows without file digests. Still read and trusted.</summary>
    public const uint MetadataBoundVersion = 2;
    /// <summary>Version 1 (before metadata binding): 32-byte content-only digests; read as "no trusted tree".</summary>
    public const uint ContentOnlyVersion = 1;
    public const int Offset = V6.ExtSuperOffset + RafsV6SuperBlockExt.ReservedOffset;
    public const int Size = 124;
    public const uint FlagSigned = 1;
    public const int RowSize = MerkleRow.Size;

    /// <summary>Row size of a table of <paramref name="version"/> (0 when that version has no trusted table).</summary>
    public static int RowSizeOf(uint version) => version switch { Version => MerkleRow.Size, MetadataBoundVersion => MerkleRow.SizeV2, _ => 0 };

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

/// <summary>
/// One row of the merkle table (128 bytes, little-endian; version 2 rows end at 96):
/// <code>
/// +0  [32] inode digest   = H(bound metadata ‖ xattrs ‖ content digest)  (what the parent directory's digest covers)
/// +32 [32] content digest = file: H(chunk digests ‖ file digest) (version 2: H(chunk digests)); symlink: H(target);
///                           directory: H(children); other: H("")
/// +64 [32] bound metadata: u32 mode, u32 uid, u32 gid, u32 zero, u64 rdev, u64 size (as stat reports them)
/// +96 [32] file digest    = regular file: H(its whole content), what b3sum / sha256sum print; zero otherwise
/// </code>
/// The bound metadata is a copy of the fields the inode digest covers, so a checker can name the field an edited
/// inode record changed; the server never trusts it on its own (it recomputes the inode digest from the record).
/// </summary>
public static class MerkleRow
{
    public const int Size = 128;
    public const int SizeV2 = 96;
    public const int InodeDigestOffset = 0, ContentDigestOffset = 32, MetaOffset = 64, FileDigestOffset = 96;
}

/// <summary>The attributes an inode digest binds, in the 32-byte form the digest and the table row store.</summary>
public readonly record struct BoundMeta(uint Mode, uint Uid, uint Gid, ulong Rdev, ulong Size)
{
    public const int EncodedSize = 32;

    public void Write(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(d, Mode);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], Uid);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], Gid);
        BinaryPrimitives.WriteUInt32LittleEndian(d[12..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], Rdev);
        BinaryPrimitives.WriteUInt64LittleEndian(d[24..], Size);
    }

    public static BoundMeta Read(ReadOnlySpan<byte> s) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(s), BinaryPrimitives.ReadUInt32LittleEndian(s[4..]), BinaryPrimitives.ReadUInt32LittleEndian(s[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(s[16..]), BinaryPrimitives.ReadUInt64LittleEndian(s[24..]));

    /// <summary>The bound fields in which <paramref name="other"/> differs, comma separated (empty when none).</summary>
    public string Differences(in BoundMeta other)
    {
        var d = new List<string>();
        if (Mode != other.Mode) d.Add($"mode (bound 0{Convert.ToString(Mode, 8)}, image 0{Convert.ToString(other.Mode, 8)})");
        if (Uid != other.Uid) d.Add($"uid (bound {Uid}, image {other.Uid})");
        if (Gid != other.Gid) d.Add($"gid (bound {Gid}, image {other.Gid})");
        if (Rdev != other.Rdev) d.Add($"rdev (bound 0x{Rdev:x}, image 0x{other.Rdev:x})");
        if (Size != other.Size) d.Add($"size (bound {Size}, image {other.Size})");
        return string.Join(", ", d);
    }
}
