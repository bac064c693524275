using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Layout;

// Reading RAFS bootstraps. A RAFS image is nydus's container image format: a bootstrap with the whole file tree's
// metadata (v6: an EROFS filesystem image with nydus's extended superblock and tables; v5: nydus's own layout)
// and data blobs holding the files' chunks, each optionally compressed and addressed by digest. This namespace maps
// a bootstrap read-only and answers what a FUSE server asks (lookup by name bytes, getattr, readdir from an offset,
// readlink, xattrs, the chunk list of a byte range), checks images (ImageChecker), reads blobs (BlobStore) and
// writes trees back out (Unpacker). Everything read from an image is bounds-checked; failures are errno values.
namespace VirtioFs.Rafs.Reader;

public enum RafsVersion { V5 = 5, V6 = 6 }

/// <summary>A data blob named by the bootstrap's blob table.</summary>
public sealed record RafsBlobInfo(int Index, string BlobId, uint ChunkSize, uint ChunkCount, Compressor Compressor, Digester Digester,
    BlobFeatures Features, ulong CompressedSize, ulong UncompressedSize,
    Compressor CiCompressor = Compressor.None, ulong CiOffset = 0, ulong CiCompressedSize = 0, ulong CiUncompressedSize = 0);

/// <summary>Attributes of one inode, as stat reports them.</summary>
public readonly record struct RafsAttr(ulong Ino, uint Mode, uint Nlink, uint Uid, uint Gid, ulong Size, ulong Rdev,
    long MtimeSec, uint MtimeNsec)
{
    public uint FileType => Mode & 0xF000;
}

/// <summary>Where one chunk of a file lives. A hole has <see cref="IsHole"/> set and no blob.</summary>
public readonly record struct RafsChunk(ulong FileOffset, uint BlobIndex, uint ChunkIndex, ulong CompressedOffset, uint CompressedSize,
    ulong UncompressedOffset, uint UncompressedSize, ChunkFlags Flags, Compressor Compressor, Bytes32 Digest, bool IsHole)
{
    public bool IsCompressed => (Flags & ChunkFlags.Compressed) != 0;
}

/// <summary>Called per directory entry by <see cref="RafsImage.ReadDir"/>; return false to stop.</summary>
public delegate bool ReadDirCallback(ReadOnlySpan<byte> name, ulong ino, uint fileType, ulong nextOffset);

/// <summary>
/// Read-only view of a RAFS v6 bootstrap. The file is memory-mapped and each call decodes only what it needs; every
/// offset, size and count read from the image is range-checked against the mapping, and failures are errno values
/// (EIO for a corrupt image, ENOENT, ENOTDIR, EINVAL, ENODATA) so a FUSE server can return them directly.
/// Inode numbers are EROFS nids; <see cref="RootIno"/> is the root's.
/// </summary>
public sealed unsafe partial class RafsImage : IDisposable
{
    public const int EIO = Errno.EIO, ENOENT = Errno.ENOENT, ENOTDIR = Errno.ENOTDIR, EINVAL = Errno.EINVAL, ENODATA = Errno.ENODATA,
        ENOTSUP = Errno.EOPNOTSUPP, ERANGE = Errno.ERANGE, EISDIR = Errno.EISDIR;
    private const int BlockSize = V6.BlockSize;
    private const int MaxChunksPerFile = 1 << 24;

    private readonly MemoryMappedFile _mmf;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly long _size;
    private readonly long _metaBase;
    private readonly RafsV6SuperBlock _sb;
    private readonly RafsV6SuperBlockExt _ext;
    private readonly long _chunkTableOff;
    private readonly long _chunkTableCount;
    private readonly bool _chunkTableSorted;
    private Dictionary<(uint, uint), long>? _chunkMap;
    private long _merkleOff;
    private long _merkleRows;
    private int _merkleRowSize;

    public string Path { get; }
    public RafsVersion Version { get; }
    public ulong RootIno { get; }
    public ulong InodeCount { get; }
    public uint ChunkSize { get; }
    public Compressor Compressor { get; }
    public Digester Digester { get; }
    public RafsSuperFlags Flags { get; }
    public ulong BuildTime { get; }
    public IReadOnlyList<RafsBlobInfo> Blobs { get; }
    public IReadOnlyList<ulong> PrefetchInodes { get; }
    public long BootstrapSize => _size;
    /// <summary>Root digest of the VirtioFs merkle extension (version 2 or 3: metadata bound), or null if the image has
    /// none (built by nydus, or by a VirtioFs before metadata binding: see <see cref="MerkleVersion"/>).</summary>
    public byte[]? RootDigest { get; private set; }
    public byte[]? Signature { get; private set; }
    public bool HasMerkle => RootDigest is not null;
    /// <summary>Version of the merkle extension header found (0: none). Only <see cref="MerkleExtension.Version"/> and
    /// <see cref="MerkleExtension.MetadataBoundVersion"/> give a <see cref="RootDigest"/>; an older one is reported so a
    /// refusal can say why.</summary>
    public uint MerkleVersion { get; private set; }
    /// <summary>The merkle rows carry each regular file's whole-content digest (version 3): <see cref="GetFileDigest"/>.</summary>
    public bool HasFileDigests => HasMerkle && MerkleVersion == MerkleExtension.Version;
    /// <summary>Inode handles (what Lookup and ReadDir return) are below this bound: v6 nids, v5 inode indexes.</summary>
    public ulong InodeHandleLimit => Version == RafsVersion.V5 ? (ulong)_it5Entries + 1 : (ulong)(_size >> V6.InodeSlotBits) + 1;

    private RafsImage(string path, MemoryMappedFile mmf, MemoryMappedViewAccessor view, byte* b, long size, bool plainErofs)
    {
        Path = path;
        _mmf = mmf;
        _view = view;
        _base = b;
        _size = size;
        if (size < BlockSize) throw new RafsFormatException($"bootstrap is {size} bytes, smaller than one 4096-byte block (truncated?)");
        if (BinaryPrimitives.ReadUInt32LittleEndian(Span(0, 4)) == V5.Magic)
        {
            Version = RafsVersion.V5;
            var (blobs5, pf5, c5, d5) = InitV5();
            Blobs = blobs5;
            PrefetchInodes = pf5;
            Compressor = c5;
            Digester = d5;
            ReadMerkleHeader(V5.SignatureHeaderOffset, _it5Entries);
            RootIno = 1;
            InodeCount = _sb5.s_inodes_count;
            ChunkSize = _sb5.s_block_size;
            Flags = (RafsSuperFlags)_sb5.s_flags;
            return;
        }
        Version = RafsVersion.V6;
        _sb = MemoryMarshal.Read<RafsV6SuperBlock>(Span(V6.SuperOffset, RafsV6SuperBlock.Size));
        if (_sb.s_magic != V6.ErofsSuperMagicV1)
            throw new RafsFormatException($"bad magic 0x{_sb.s_magic:x8} at offset 1024 (expected EROFS 0xe0f5e1e2) and no RAFS v5 magic at 0");
        InodeCount = _sb.s_inos;
        BuildTime = _sb.s_build_time;
        bool rafs = (_sb.s_feature_compat & V6.FeatureCompatRafsV6) != 0;
        if (!rafs && !plainErofs) throw new RafsFormatException("EROFS image without the RAFS v6 feature bit (0x40000000)");
        if (_sb.s_blkszbits != V6.BlockBits) throw new RafsFormatException($"unsupported block size bits {_sb.s_blkszbits} (expected 12)");
        uint incompat = _sb.s_feature_incompat & ~(V6.FeatureIncompatChunkedFile | V6.FeatureIncompatDeviceTable);
        if (incompat != 0) throw new RafsFormatException($"unsupported EROFS incompat features 0x{incompat:x}");
        if (_sb.s_extslots != 0) throw new RafsFormatException("unsupported superblock extension slots");
        if (_sb.s_inos == 0) throw new RafsFormatException("superblock says zero inodes");
        _metaBase = (long)_sb.s_meta_blkaddr * BlockSize;
        if (_metaBase >= size) throw new RafsFormatException($"meta block address {_sb.s_meta_blkaddr} beyond the end of the bootstrap");
        if (!rafs)
        {
            // Plain EROFS (e.g. from mkfs.erofs): metadata only, no RAFS blob/chunk tables.
            ChunkSize = BlockSize;
            Compressor = Compressor.None;
            Digester = Digester.Blake3;
            Blobs = [];
            PrefetchInodes = [];
            RootIno = _sb.s_root_nid;
            if (TryInode(RootIno, out var r0) != 0 || (r0.Mode & 0xF000) != 0x4000) throw new RafsFormatException("root inode is out of range, corrupt or not a directory");
            return;
        }
        _ext = MemoryMarshal.Read<RafsV6SuperBlockExt>(Span(V6.ExtSuperOffset, RafsV6SuperBlockExt.Size));
        uint cs = _ext.s_chunk_size;
        ChunkSize = cs;
        Flags = (RafsSuperFlags)_ext.s_flags;
        if (!BitOperationsIsPow2(cs) || cs < BlockSize || cs > 16u << 20) throw new RafsFormatException($"invalid chunk size {cs} in extended superblock");
        var f = (RafsSuperFlags)_ext.s_flags;
        Compressor = (f & (RafsSuperFlags.CompressionNone | RafsSuperFlags.CompressionLz4 | RafsSuperFlags.CompressionGzip | RafsSuperFlags.CompressionZstd)) switch
        {
            RafsSuperFlags.CompressionNone => Compressor.None,
            RafsSuperFlags.CompressionLz4 => Compressor.Lz4Block,
            RafsSuperFlags.CompressionGzip => Compressor.Gzip,
            RafsSuperFlags.CompressionZstd => Compressor.Zstd,
            _ => throw new RafsFormatException($"invalid compressor flags 0x{_ext.s_flags:x} in extended superblock"),
        };
        Digester = (f & (RafsSuperFlags.HashBlake3 | RafsSuperFlags.HashSha256)) switch
        {
            RafsSuperFlags.HashBlake3 => Digester.Blake3,
            RafsSuperFlags.HashSha256 => Digester.Sha256,
            _ => throw new RafsFormatException($"invalid digester flags 0x{_ext.s_flags:x} in extended superblock"),
        };

        // Blob table.
        long btOff = (long)_ext.s_blob_table_offset, btSize = _ext.s_blob_table_size;
        if (btSize % RafsV6Blob.Size != 0 || !InRange(btOff, btSize)) throw new RafsFormatException($"blob table offset 0x{btOff:x} size {btSize} out of range");
        int nblobs = (int)(btSize / RafsV6Blob.Size);
        if (nblobs > 254) throw new RafsFormatException($"blob table has {nblobs} entries (max 254)");
        if (nblobs != _sb.s_extra_devices) throw new RafsFormatException($"blob table has {nblobs} entries but the device table {_sb.s_extra_devices}");
        var blobs = new List<RafsBlobInfo>(nblobs);
        for (int i = 0; i < nblobs; i++)
        {
            var e = MemoryMarshal.Read<RafsV6Blob>(Span(btOff + (long)i * RafsV6Blob.Size, RafsV6Blob.Size));
            var idSpan = ((ReadOnlySpan<byte>)e.blob_id);
            int idLen = idSpan.IndexOf((byte)0);
            if (idLen < 0) idLen = 64;
            if (idLen == 0) throw new RafsFormatException($"blob {i} has an empty id");
            foreach (var ch in idSpan[..idLen])
                if (ch < 0x21 || ch > 0x7E || ch == '/') throw new RafsFormatException($"blob {i} id is not printable ASCII");
            if (e.compression_algo > 3 || e.digest_algo > 1) throw new RafsFormatException($"blob {i} has unknown compressor {e.compression_algo} or digester {e.digest_algo}");
            blobs.Add(new RafsBlobInfo(i, System.Text.Encoding.ASCII.GetString(idSpan[..idLen]), e.chunk_size, e.chunk_count,
                (Compressor)e.compression_algo, (Digester)e.digest_algo, (BlobFeatures)e.features, e.compressed_size, e.uncompressed_size,
                (Compressor)Math.Min(e.ci_compressor, 3u), e.ci_offset, e.ci_compressed_size, e.ci_uncompressed_size));
        }
        Blobs = blobs;

        // Chunk table.
        _chunkTableOff = (long)_ext.s_chunk_table_offset;
        long ctSize = (long)_ext.s_chunk_table_size;
        if (ctSize != 0 && (ctSize % RafsV5ChunkInfo.Size != 0 || !InRange(_chunkTableOff, ctSize)))
            throw new RafsFormatException($"chunk table offset 0x{_chunkTableOff:x} size {ctSize} out of range");
        _chunkTableCount = ctSize / RafsV5ChunkInfo.Size;
        _chunkTableSorted = true;
        for (long i = 1; i < _chunkTableCount && _chunkTableSorted; i++)
        {
            var (b0, x0) = ChunkKey(i - 1);
            var (b1, x1) = ChunkKey(i);
            if (b1 < b0 || (b1 == b0 && x1 <= x0)) _chunkTableSorted = false;
        }

        // Prefetch table.
        var pf = new List<ulong>();
        long pOff = (long)_ext.s_prefetch_table_offset, pSize = _ext.s_prefetch_table_size;
        if (pOff != 0 && pSize != 0)
        {
            if (pSize % 4 != 0 || !InRange(pOff, pSize)) throw new RafsFormatException($"prefetch table offset 0x{pOff:x} size {pSize} out of range");
            for (long i = 0; i < pSize / 4; i++) pf.Add(BinaryPrimitives.ReadUInt32LittleEndian(Span(pOff + i * 4, 4)));
        }
        PrefetchInodes = pf;

        ReadMerkleHeader(MerkleExtension.Offset, _sb.s_inos);

        RootIno = _sb.s_root_nid;
        if (TryInode(RootIno, out var root) != 0) throw new RafsFormatException($"root inode (nid {RootIno}) is out of range or corrupt");
        if ((root.Mode & 0xF000) != 0x4000) throw new RafsFormatException("root inode is not a directory");
    }

    private static bool BitOperationsIsPow2(uint v) => v != 0 && (v & (v - 1)) == 0;

    /// <summary>The VirtioFs merkle extension header at <paramref name="at"/>: versions 3 (128-byte rows) and 2 (96-byte
    /// rows) need a table of one row per inode number in range; any other version leaves the image without a trusted
    /// tree (it still serves).</summary>
    private void ReadMerkleHeader(int at, ulong rows)
    {
        var mx = Span(at, MerkleExtension.Size);
        if (BinaryPrimitives.ReadUInt32LittleEndian(mx) != MerkleExtension.Magic) return;
        MerkleVersion = BinaryPrimitives.ReadUInt32LittleEndian(mx[4..]);
        int rowSize = MerkleExtension.RowSizeOf(MerkleVersion);
        if (rowSize == 0) return;
        ulong off = BinaryPrimitives.ReadUInt64LittleEndian(mx[8..]), size = BinaryPrimitives.ReadUInt64LittleEndian(mx[16..]);
        if (off > long.MaxValue || size > long.MaxValue || size % (ulong)rowSize != 0 || size / (ulong)rowSize != rows || !InRange((long)off, (long)size))
            throw new RafsFormatException($"merkle table offset 0x{off:x} size {size} out of range or not one {rowSize}-byte row per inode number");
        _merkleRowSize = rowSize;
        _merkleOff = (long)off;
        _merkleRows = (long)rows;
        RootDigest = mx.Slice(24, Codec.DigestSize).ToArray();
        if ((BinaryPrimitives.ReadUInt32LittleEndian(mx[120..]) & MerkleExtension.FlagSigned) != 0) Signature = mx.Slice(56, 64).ToArray();
    }

    /// <summary>Maps and validates a bootstrap; throws <see cref="RafsFormatException"/> naming what is wrong.</summary>
    public static RafsImage Open(string path) => Open(path, plainErofs: false);

    /// <summary>Like <see cref="Open(string)"/>; with <paramref name="plainErofs"/> also maps EROFS images without the
    /// RAFS extension (metadata only: lookup, readdir, attributes, symlinks, xattrs).</summary>
    public static RafsImage Open(string path, bool plainErofs)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("RAFS is little-endian; this reader maps it directly");
        long size = new FileInfo(path).Length;
        if (size < BlockSize) throw new RafsFormatException($"bootstrap is {size} bytes, smaller than one 4096-byte block (truncated?)");
        var mmf = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = mmf.CreateViewAccessor(0, size, MemoryMappedFileAccess.Read);
            byte* p = null;
            // SAFETY: the view maps `size` readable bytes for the lifetime of this object; released in Dispose.
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            try
            {
                return new RafsImage(path, mmf, view, p, size, plainErofs);
            }
            catch
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
                throw;
            }
        }
        catch
        {
            view?.Dispose();
            mmf.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _mmf.Dispose();
    }

    private bool InRange(long off, long len) => off >= 0 && len >= 0 && off <= _size && len <= _size - off;

    private ReadOnlySpan<byte> Span(long off, long len)
    {
        if (!InRange(off, len) || len > int.MaxValue) throw new RafsFormatException($"range 0x{off:x}+{len} beyond the end of the bootstrap ({_size} bytes)");
        // SAFETY: [off, off+len) was checked to lie inside the mapped view.
        return new ReadOnlySpan<byte>(_base + off, (int)len);
    }

    private bool TrySpan(long off, long len, out ReadOnlySpan<byte> s)
    {
        if (!InRange(off, len) || len > int.MaxValue) { s = default; return false; }
        // SAFETY: [off, off+len) was checked to lie inside the mapped view.
        s = new ReadOnlySpan<byte>(_base + off, (int)len);
        return true;
    }
}
