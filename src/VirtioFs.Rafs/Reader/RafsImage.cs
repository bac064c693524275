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
    private const int B = V6.BlockSize;
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
    /// <summary>Root digest of the VirtioFs merkle extension (version 2: metadata bound), or null if the image has
    /// none (built by nydus, or by a VirtioFs before metadata binding: see <see cref="MerkleVersion"/>).</summary>
    public byte[]? RootDigest { get; private set; }
    public byte[]? Signature { get; private set; }
    public bool HasMerkle => RootDigest is not null;
    /// <summary>Version of the merkle extension header found (0: none). Only <see cref="MerkleExtension.Version"/>
    /// gives a <see cref="RootDigest"/>; an older one is reported so a refusal can say why.</summary>
    public uint MerkleVersion { get; private set; }
    /// <summary>Inode handles (what Lookup and ReadDir return) are below this bound: v6 nids, v5 inode indexes.</summary>
    public ulong InodeHandleLimit => Version == RafsVersion.V5 ? (ulong)_it5Entries + 1 : (ulong)(_size >> V6.InodeSlotBits) + 1;

    private RafsImage(string path, MemoryMappedFile mmf, MemoryMappedViewAccessor view, byte* b, long size, bool plainErofs)
    {
        Path = path;
        _mmf = mmf;
        _view = view;
        _base = b;
        _size = size;
        if (size < B) throw new RafsFormatException($"bootstrap is {size} bytes, smaller than one 4096-byte block (truncated?)");
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
        _metaBase = (long)_sb.s_meta_blkaddr * B;
        if (_metaBase >= size) throw new RafsFormatException($"meta block address {_sb.s_meta_blkaddr} beyond the end of the bootstrap");
        if (!rafs)
        {
            // Plain EROFS (e.g. from mkfs.erofs): metadata only, no RAFS blob/chunk tables.
            ChunkSize = B;
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
        if (!BitOperationsIsPow2(cs) || cs < B || cs > 16u << 20) throw new RafsFormatException($"invalid chunk size {cs} in extended superblock");
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

    /// <summary>The VirtioFs merkle extension header at <paramref name="at"/>: version 2 needs a table of one row per
    /// inode number in range; any other version leaves the image without a trusted tree (it still serves).</summary>
    private void ReadMerkleHeader(int at, ulong rows)
    {
        var mx = Span(at, MerkleExtension.Size);
        if (BinaryPrimitives.ReadUInt32LittleEndian(mx) != MerkleExtension.Magic) return;
        MerkleVersion = BinaryPrimitives.ReadUInt32LittleEndian(mx[4..]);
        if (MerkleVersion != MerkleExtension.Version) return;
        ulong off = BinaryPrimitives.ReadUInt64LittleEndian(mx[8..]), size = BinaryPrimitives.ReadUInt64LittleEndian(mx[16..]);
        if (off > long.MaxValue || size > long.MaxValue || size % MerkleExtension.RowSize != 0 || size / MerkleExtension.RowSize != rows || !InRange((long)off, (long)size))
            throw new RafsFormatException($"merkle table offset 0x{off:x} size {size} out of range or not one {MerkleExtension.RowSize}-byte row per inode number");
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
        if (size < B) throw new RafsFormatException($"bootstrap is {size} bytes, smaller than one 4096-byte block (truncated?)");
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

    // ---------------- inodes ----------------

    /// <summary>Decoded EROFS inode header.</summary>
    internal readonly struct Inode
    {
        public required ulong Nid { get; init; }
        public required long Offset { get; init; }
        public required int InodeSize { get; init; }
        public required int XattrSize { get; init; }
        public required ushort Layout { get; init; }
        public required uint Mode { get; init; }
        public required ulong Size { get; init; }
        public required uint U { get; init; }
        public required uint Ino { get; init; }
        public required uint Uid { get; init; }
        public required uint Gid { get; init; }
        public required long Mtime { get; init; }
        public required uint MtimeNsec { get; init; }
        public required uint Nlink { get; init; }
        public long TailOffset => Offset + InodeSize + XattrSize;
    }

    internal int TryInode(ulong nid, out Inode inode)
    {
        inode = default;
        if (nid > (ulong)(_size >> V6.InodeSlotBits)) return EIO;
        long off = _metaBase + (long)nid * V6.InodeSlotSize;
        if (!TrySpan(off, RafsV6InodeCompact.Size, out var s)) return EIO;
        ushort format = BinaryPrimitives.ReadUInt16LittleEndian(s);
        ushort layout = (ushort)((format >> 1) & 0x7);
        if ((format & ~0xF) != 0 && (format >> 4) != 0) { /* newer EROFS bits; tolerate */ }
        if (layout is not (V6.InodeFlatPlain or V6.InodeFlatInline or V6.InodeChunkBased)) return EIO;
        ushort icount = BinaryPrimitives.ReadUInt16LittleEndian(s[2..]);
        int xsize = icount == 0 ? 0 : ErofsXattrIbodyHeader.Size + (icount - 1) * 4;
        if ((format & 1) == V6.InodeLayoutExtended)
        {
            if (!TrySpan(off, RafsV6InodeExtended.Size, out s)) return EIO;
            var e = MemoryMarshal.Read<RafsV6InodeExtended>(s);
            inode = new Inode
            {
                Nid = nid, Offset = off, InodeSize = RafsV6InodeExtended.Size, XattrSize = xsize, Layout = layout, Mode = e.i_mode,
                Size = e.i_size, U = e.i_u, Ino = e.i_ino, Uid = e.i_uid, Gid = e.i_gid, Mtime = (long)e.i_mtime, MtimeNsec = e.i_mtime_nsec, Nlink = e.i_nlink,
            };
        }
        else
        {
            var c = MemoryMarshal.Read<RafsV6InodeCompact>(s);
            inode = new Inode
            {
                Nid = nid, Offset = off, InodeSize = RafsV6InodeCompact.Size, XattrSize = xsize, Layout = layout, Mode = c.i_mode,
                Size = c.i_size, U = c.i_u, Ino = c.i_ino, Uid = c.i_uid, Gid = c.i_gid, Mtime = (long)_sb.s_build_time, MtimeNsec = _sb.s_build_time_nsec, Nlink = c.i_nlink,
            };
        }
        if (!InRange(inode.TailOffset, 0)) return EIO;
        if (inode.MtimeNsec >= 1_000_000_000) return EIO;
        return 0;
    }

    public int GetAttr(ulong ino, out RafsAttr attr)
    {
        if (Version == RafsVersion.V5) return V5GetAttr(ino, out attr);
        attr = default;
        int rc = TryInode(ino, out var n);
        if (rc != 0) return rc;
        ulong rdev = (n.Mode & 0xF000) is 0x2000 or 0x6000 ? Builder.V6Writer.DecodeDev(n.U) : 0;
        ulong size = (n.Mode & 0xF000) is 0x2000 or 0x6000 or 0x1000 or 0xC000 ? 0 : n.Size;
        attr = new RafsAttr(n.Ino, n.Mode, n.Nlink, n.Uid, n.Gid, size, rdev, n.Mtime, n.MtimeNsec);
        return 0;
    }

    /// <summary>Bytes [pos, pos+len) of a plain or inline inode's data (directory blocks, symlink target).</summary>
    private bool TryData(in Inode n, ulong pos, int len, out ReadOnlySpan<byte> s)
    {
        s = default;
        if (pos > n.Size || (ulong)len > n.Size - pos) return false;
        if (n.Layout == V6.InodeFlatPlain)
        {
            return TrySpan((long)n.U * B + (long)pos, len, out s);
        }
        if (n.Layout == V6.InodeFlatInline)
        {
            ulong tailStart = n.Size / B * B;
            if (n.Size % B == 0) tailStart = n.Size;
            if (pos >= tailStart)
            {
                long t = n.TailOffset + (long)(pos - tailStart);
                // The inline tail must stay inside the inode's block (EROFS rule).
                if ((n.TailOffset % B) + (long)(n.Size - tailStart) > B) return false;
                return TrySpan(t, len, out s);
            }
            if (pos + (ulong)len > tailStart) return false;
            return TrySpan((long)n.U * B + (long)pos, len, out s);
        }
        return false;
    }

    public int ReadLink(ulong ino, out byte[] target)
    {
        if (Version == RafsVersion.V5) return V5ReadLink(ino, out target);
        target = [];
        int rc = TryInode(ino, out var n);
        if (rc != 0) return rc;
        if ((n.Mode & 0xF000) != 0xA000) return EINVAL;
        if (n.Size > 4096 || !TryData(n, 0, (int)n.Size, out var s)) return EIO;
        target = s.ToArray();
        return 0;
    }

    // ---------------- directories ----------------

    private readonly ref struct DirBlock
    {
        public readonly ReadOnlySpan<byte> Data;
        public readonly int Count;
        public DirBlock(ReadOnlySpan<byte> data, int count) { Data = data; Count = count; }
    }

    private static int ParseBlock(ReadOnlySpan<byte> blk, out int count)
    {
        count = 0;
        if (blk.Length < V6.DirentSize) return EIO;
        int nameoff0 = BinaryPrimitives.ReadUInt16LittleEndian(blk[8..]);
        if (nameoff0 < V6.DirentSize || nameoff0 % V6.DirentSize != 0 || nameoff0 > blk.Length) return EIO;
        count = nameoff0 / V6.DirentSize;
        return 0;
    }

    /// <summary>Entry i of a parsed block: name, nid, file type.</summary>
    private static int Entry(ReadOnlySpan<byte> blk, int count, int i, out ReadOnlySpan<byte> name, out ulong nid, out byte ft)
    {
        name = default;
        var d = blk.Slice(i * V6.DirentSize, V6.DirentSize);
        nid = BinaryPrimitives.ReadUInt64LittleEndian(d);
        int start = BinaryPrimitives.ReadUInt16LittleEndian(d[8..]);
        ft = d[10];
        int end = i + 1 < count ? BinaryPrimitives.ReadUInt16LittleEndian(blk[((i + 1) * V6.DirentSize + 8)..]) : blk.Length;
        if (start < count * V6.DirentSize || end > blk.Length || start >= end) return EIO;
        name = blk[start..end];
        if (i + 1 == count)
        {
            int z = name.IndexOf((byte)0);
            if (z >= 0) name = name[..z];
        }
        // A name with '/' or NUL would let a hostile image alias paths.
        if (name.Length == 0 || name.Length > 255 || name.IndexOfAny((byte)'/', (byte)0) >= 0) return EIO;
        return 0;
    }

    private int Block(in Inode dir, ulong b, out ReadOnlySpan<byte> blk)
    {
        ulong pos = b * B;
        int len = (int)Math.Min(B, dir.Size - pos);
        return TryData(dir, pos, len, out blk) ? 0 : EIO;
    }

    private static ulong BlockCount(in Inode dir) => (dir.Size + B - 1) / B;

    public int Lookup(ulong parent, ReadOnlySpan<byte> name, out ulong ino)
    {
        if (Version == RafsVersion.V5) return V5Lookup(parent, name, out ino);
        ino = 0;
        int rc = TryInode(parent, out var dir);
        if (rc != 0) return rc;
        if ((dir.Mode & 0xF000) != 0x4000) return ENOTDIR;
        if (name.Length == 0 || name.Length > 255) return ENOENT;
        ulong lo = 0, hi = BlockCount(dir);
        if (hi > (ulong)(_size / B) + 1) return EIO;
        // Binary search for the last block whose first name <= name, then within it (EROFS dirs are sorted).
        while (lo < hi)
        {
            ulong mid = lo + (hi - lo) / 2;
            if ((rc = Block(dir, mid, out var blk)) != 0 || (rc = ParseBlock(blk, out int cnt)) != 0) return rc;
            if ((rc = Entry(blk, cnt, 0, out var first, out _, out _)) != 0) return rc;
            int c = first.SequenceCompareTo(name);
            if (c == 0) { ino = BinaryPrimitives.ReadUInt64LittleEndian(blk); return 0; }
            if (c < 0) lo = mid + 1; else hi = mid;
        }
        if (lo == 0) return ENOENT;
        {
            if ((rc = Block(dir, lo - 1, out var blk)) != 0 || (rc = ParseBlock(blk, out int cnt)) != 0) return rc;
            int l = 0, h = cnt - 1;
            while (l <= h)
            {
                int m = l + (h - l) / 2;
                if ((rc = Entry(blk, cnt, m, out var nm, out ulong nid, out _)) != 0) return rc;
                int c = nm.SequenceCompareTo(name);
                if (c == 0) { ino = nid; return 0; }
                if (c < 0) l = m + 1; else h = m - 1;
            }
        }
        return ENOENT;
    }

    /// <summary>Lists a directory from <paramref name="offset"/> (0 = start; otherwise a value a previous callback
    /// got as nextOffset). Offsets encode (block &lt;&lt; 16 | entry), so resuming is O(1).</summary>
    public int ReadDir(ulong dirIno, ulong offset, ReadDirCallback callback)
    {
        if (Version == RafsVersion.V5) return V5ReadDir(dirIno, offset, callback);
        int rc = TryInode(dirIno, out var dir);
        if (rc != 0) return rc;
        if ((dir.Mode & 0xF000) != 0x4000) return ENOTDIR;
        ulong nblocks = BlockCount(dir);
        ulong b = offset >> 16;
        int start = (int)(offset & 0xFFFF);
        for (; b < nblocks; b++, start = 0)
        {
            if ((rc = Block(dir, b, out var blk)) != 0 || (rc = ParseBlock(blk, out int cnt)) != 0) return rc;
            for (int i = start; i < cnt; i++)
            {
                if ((rc = Entry(blk, cnt, i, out var name, out ulong nid, out byte ft)) != 0) return rc;
                ulong next = i + 1 < cnt ? (b << 16) | (uint)(i + 1) : (b + 1) << 16;
                if (!callback(name, nid, V6.ModeOfFileType(ft), next)) return 0;
            }
        }
        return 0;
    }

    // ---------------- xattrs ----------------

    internal delegate bool XattrVisitor(byte index, ReadOnlySpan<byte> suffix, ReadOnlySpan<byte> value);

    private int WalkXattrs(ulong ino, XattrVisitor visit)
    {
        if (Version == RafsVersion.V5) return V5WalkXattrs(ino, visit);
        int rc = TryInode(ino, out var n);
        if (rc != 0) return rc;
        if (n.XattrSize == 0) return 0;
        if (!TrySpan(n.Offset + n.InodeSize, n.XattrSize, out var x)) return EIO;
        int shared = x[4];
        int p = ErofsXattrIbodyHeader.Size + shared * 4;
        if (p > x.Length) return EIO;
        // Shared xattrs (mkfs.erofs; nydus does not emit them): u32 ids into the shared area at s_xattr_blkaddr.
        for (int i = 0; i < shared; i++)
        {
            long at = (long)_sb.s_xattr_blkaddr * B + (long)BinaryPrimitives.ReadUInt32LittleEndian(x[(ErofsXattrIbodyHeader.Size + i * 4)..]) * 4;
            if (!TrySpan(at, ErofsXattrEntry.Size, out var eh)) return EIO;
            int snlen = eh[0], sidx = eh[1], svlen = BinaryPrimitives.ReadUInt16LittleEndian(eh[2..]);
            if (!TrySpan(at + 4, snlen + svlen, out var body)) return EIO;
            if (!visit((byte)sidx, body[..snlen], body[snlen..])) return 0;
        }
        while (p + ErofsXattrEntry.Size <= x.Length)
        {
            int nlen = x[p], idx = x[p + 1], vlen = BinaryPrimitives.ReadUInt16LittleEndian(x[(p + 2)..]);
            if (p + 4 + nlen + vlen > x.Length) return EIO;
            if (!visit((byte)idx, x.Slice(p + 4, nlen), x.Slice(p + 4 + nlen, vlen))) return 0;
            p = (p + 4 + nlen + vlen + 3) & ~3;
        }
        return 0;
    }

    /// <summary>Appends every xattr the image serves for <paramref name="ino"/> (full name, value), in stored order.</summary>
    public int GetXattrs(ulong ino, List<KeyValuePair<byte[], byte[]>> xattrs)
    {
        return WalkXattrs(ino, (idx, suffix, value) =>
        {
            var prefix = idx == 0 ? default : Builder.V6Writer.XattrPrefix(idx);
            if (prefix.IsEmpty && idx != 0) return true; // an unknown name index is never served (ListXattr skips it too)
            var full = new byte[prefix.Length + suffix.Length];
            prefix.CopyTo(full);
            suffix.CopyTo(full.AsSpan(prefix.Length));
            xattrs.Add(new(full, value.ToArray()));
            return true;
        });
    }

    public int ListXattr(ulong ino, List<byte[]> names)
    {
        return WalkXattrs(ino, (idx, suffix, _) =>
        {
            var prefix = idx == 0 ? default : Builder.V6Writer.XattrPrefix(idx);
            if (prefix.IsEmpty && idx != 0) return true;
            var full = new byte[prefix.Length + suffix.Length];
            prefix.CopyTo(full);
            suffix.CopyTo(full.AsSpan(prefix.Length));
            names.Add(full);
            return true;
        });
    }

    public int GetXattr(ulong ino, ReadOnlySpan<byte> name, out byte[] value)
    {
        byte[]? found = null;
        var want = name.ToArray();
        int rc = WalkXattrs(ino, (idx, suffix, v) =>
        {
            var prefix = idx == 0 ? default : Builder.V6Writer.XattrPrefix(idx);
            if ((prefix.IsEmpty && idx != 0) || want.Length != prefix.Length + suffix.Length) return true;
            if (!want.AsSpan().StartsWith(prefix) || !want.AsSpan(prefix.Length).SequenceEqual(suffix)) return true;
            found = v.ToArray();
            return false;
        });
        value = found ?? [];
        if (rc != 0) return rc;
        return found is null ? ENODATA : 0;
    }

    // ---------------- chunks ----------------

    private (uint Blob, uint Index) ChunkKey(long i)
    {
        var s = Span(_chunkTableOff + i * RafsV5ChunkInfo.Size, RafsV5ChunkInfo.Size);
        return (BinaryPrimitives.ReadUInt32LittleEndian(s[32..]), BinaryPrimitives.ReadUInt32LittleEndian(s[72..]));
    }

    private long FindChunk(uint blob, uint index)
    {
        if (_chunkTableSorted)
        {
            long lo = 0, hi = _chunkTableCount - 1;
            while (lo <= hi)
            {
                long m = lo + (hi - lo) / 2;
                var (b, x) = ChunkKey(m);
                int c = b != blob ? b.CompareTo(blob) : x.CompareTo(index);
                if (c == 0) return m;
                if (c < 0) lo = m + 1; else hi = m - 1;
            }
            return -1;
        }
        var map = _chunkMap;
        if (map is null)
        {
            // nydus sorts its v6 chunk table by digest; index it once.
            map = new Dictionary<(uint, uint), long>((int)Math.Min(_chunkTableCount, 1 << 20));
            for (long i = 0; i < _chunkTableCount; i++) map.TryAdd(ChunkKey(i), i);
            _chunkMap = map;
        }
        return map.TryGetValue((blob, index), out long r) ? r : -1;
    }

    /// <summary>Appends the chunks of a regular file, in file order, to <paramref name="chunks"/>.</summary>
    public int GetChunks(ulong ino, List<RafsChunk> chunks) => GetChunks(ino, 0, ulong.MaxValue, chunks);

    /// <summary>Appends, in file order, the chunks that overlap [offset, offset + length) of a regular file (what a
    /// FUSE READ needs); for v6 this decodes only those chunk indexes.</summary>
    public int GetChunks(ulong ino, ulong offset, ulong length, List<RafsChunk> chunks)
    {
        if (Version == RafsVersion.V5)
        {
            // Only the window: v5 holes are implied by i_size, so listing the whole file for a READ would cost
            // i_size / chunk size entries whatever the bootstrap's size (found by the rafs fuzz target).
            ulong end5 = length > ulong.MaxValue - offset ? ulong.MaxValue : offset + length;
            return V5GetChunks(ino, offset, end5, chunks);
        }
        int rc = TryInode(ino, out var n);
        if (rc != 0) return rc;
        if ((n.Mode & 0xF000) != 0x8000) return (n.Mode & 0xF000) == 0x4000 ? EISDIR : EINVAL;
        if (n.Size == 0) return 0;
        if (n.Layout != V6.InodeChunkBased) return EIO;
        if ((n.U & V6.ChunkFormatIndexes) == 0) return ENOTSUP; // block-map chunk format carries no blob index
        int bits = (int)(n.U & V6.ChunkFormatSizeMask) + V6.BlockBits;
        if (bits > 40) return EIO;
        ulong ics = 1UL << bits;
        ulong count = (n.Size + ics - 1) / ics;
        if (count > MaxChunksPerFile) return EIO;
        long idxOff = (n.Offset + n.InodeSize + n.XattrSize + 7) & ~7L;
        if (!TrySpan(idxOff, (long)count * V6.ChunkAddrSize, out var idx)) return EIO;
        ulong cs = ChunkSize;
        if (length == 0 || offset >= n.Size) return 0;
        ulong last = length > n.Size - offset ? count : Math.Min(count, (offset + length + ics - 1) / ics);
        for (ulong i = offset / ics; i < last; i++)
        {
            var a = MemoryMarshal.Read<RafsV6InodeChunkAddr>(idx[(int)(i * V6.ChunkAddrSize)..]);
            ulong fileOff = i * ics;
            ulong len = Math.Min(ics, n.Size - fileOff);
            if (a.c_blk_addr == V6.NullAddr)
            {
                chunks.Add(new RafsChunk(fileOff, 0, 0, 0, 0, 0, (uint)len, ChunkFlags.Hole, Compressor.None, default, true));
                continue;
            }
            uint dev = (uint)(a.c_blob_addr_hi & 0xFF);
            if (dev == 0 || dev > Blobs.Count) return EIO;
            uint blob = dev - 1;
            uint ci = ((uint)(a.c_blob_addr_hi >> 8) << 16) | a.c_blob_addr_lo;
            // An index may cover several fs chunks when nydus merged a contiguous file; they are consecutive in the blob.
            ulong sub = (len + cs - 1) / cs;
            for (ulong k = 0; k < sub; k++)
            {
                long t = FindChunk(blob, checked(ci + (uint)k));
                if (t < 0) return EIO;
                var info = MemoryMarshal.Read<RafsV5ChunkInfo>(Span(_chunkTableOff + t * RafsV5ChunkInfo.Size, RafsV5ChunkInfo.Size));
                if (k == 0 && info.uncompressed_offset / B != a.c_blk_addr) return EIO;
                ulong expect = Math.Min(cs, len - k * cs);
                if (info.uncompressed_size != expect || info.compressed_size > (16u << 20) + 65536) return EIO;
                if ((info.flags & (uint)ChunkFlags.Compressed) == 0 && info.compressed_size != info.uncompressed_size) return EIO;
                chunks.Add(new RafsChunk(fileOff + k * cs, blob, info.index, info.compressed_offset, info.compressed_size, info.uncompressed_offset,
                    info.uncompressed_size, (ChunkFlags)info.flags, Blobs[(int)blob].Compressor, info.block_id, false));
            }
        }
        return 0;
    }

    /// <summary>The merkle table row of inode number <paramref name="iIno"/> (<see cref="MerkleRow"/>), or empty when the
    /// image has no version 2 extension or the number is out of range.</summary>
    private ReadOnlySpan<byte> MerkleRowOf(ulong iIno)
    {
        if (!HasMerkle || iIno == 0 || iIno > (ulong)_merkleRows) return default;
        return Span(_merkleOff + ((long)iIno - 1) * MerkleExtension.RowSize, MerkleExtension.RowSize);
    }

    /// <summary>Inode digest of an inode (by its i_ino) from the merkle extension, or empty when the image has none.</summary>
    public ReadOnlySpan<byte> GetInodeDigest(ulong iIno)
    {
        var row = MerkleRowOf(iIno);
        return row.IsEmpty ? default : row.Slice(MerkleRow.InodeDigestOffset, Codec.DigestSize);
    }

    /// <summary>Content digest of an inode (by its i_ino) from the merkle extension, or empty when the image has none.</summary>
    public ReadOnlySpan<byte> GetContentDigest(ulong iIno)
    {
        var row = MerkleRowOf(iIno);
        return row.IsEmpty ? default : row.Slice(MerkleRow.ContentDigestOffset, Codec.DigestSize);
    }

    /// <summary>The metadata copy in an inode's merkle row (only as trustworthy as a check of the inode digest makes it).</summary>
    public bool TryGetBoundMeta(ulong iIno, out BoundMeta meta)
    {
        var row = MerkleRowOf(iIno);
        meta = row.IsEmpty ? default : BoundMeta.Read(row[MerkleRow.MetaOffset..]);
        return !row.IsEmpty;
    }

    /// <summary>The digest a RAFS v5 inode record carries (nydus's tree: directory = H(child digests)); empty for v6.</summary>
    public ReadOnlySpan<byte> GetNativeDigest(ulong ino) => Version == RafsVersion.V5 ? V5Digest(ino) : default;
}
