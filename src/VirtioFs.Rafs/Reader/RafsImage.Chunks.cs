using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Reader;

// File data: the chunks of a byte range of a regular file (v6 chunk indexes into the blob chunk table), and the
// per-inode digests of the merkle extension.
public sealed partial class RafsImage
{
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
        int rc = TryInode(ino, out var inode);
        if (rc != 0) return rc;
        if ((inode.Mode & 0xF000) != 0x8000) return (inode.Mode & 0xF000) == 0x4000 ? EISDIR : EINVAL;
        if (inode.Size == 0) return 0;
        if (inode.Layout != V6.InodeChunkBased) return EIO;
        if ((inode.U & V6.ChunkFormatIndexes) == 0) return ENOTSUP; // block-map chunk format carries no blob index
        int bits = (int)(inode.U & V6.ChunkFormatSizeMask) + V6.BlockBits;
        if (bits > 40) return EIO;
        ulong indexedChunkSize = 1UL << bits;
        ulong count = (inode.Size + indexedChunkSize - 1) / indexedChunkSize;
        if (count > MaxChunksPerFile) return EIO;
        long indexOffset = (inode.Offset + inode.InodeSize + inode.XattrSize + 7) & ~7L;
        if (!TrySpan(indexOffset, (long)count * V6.ChunkAddrSize, out var chunkIndexes)) return EIO;
        ulong chunkSize = ChunkSize;
        if (length == 0 || offset >= inode.Size) return 0;
        ulong last = length > inode.Size - offset ? count : Math.Min(count, (offset + length + indexedChunkSize - 1) / indexedChunkSize);
        for (ulong i = offset / indexedChunkSize; i < last; i++)
        {
            var a = MemoryMarshal.Read<RafsV6InodeChunkAddr>(chunkIndexes[(int)(i * V6.ChunkAddrSize)..]);
            ulong fileOff = i * indexedChunkSize;
            ulong len = Math.Min(indexedChunkSize, inode.Size - fileOff);
            if (a.c_blk_addr == V6.NullAddr)
            {
                chunks.Add(new RafsChunk(fileOff, 0, 0, 0, 0, 0, (uint)len, ChunkFlags.Hole, Compressor.None, default, true));
                continue;
            }
            uint dev = (uint)(a.c_blob_addr_hi & 0xFF);
            if (dev == 0 || dev > Blobs.Count) return EIO;
            uint blob = dev - 1;
            uint chunkIndex = ((uint)(a.c_blob_addr_hi >> 8) << 16) | a.c_blob_addr_lo;
            // An index may cover several fs chunks when nydus merged a contiguous file; they are consecutive in the blob.
            ulong sub = (len + chunkSize - 1) / chunkSize;
            for (ulong k = 0; k < sub; k++)
            {
                long t = FindChunk(blob, checked(chunkIndex + (uint)k));
                if (t < 0) return EIO;
                var info = MemoryMarshal.Read<RafsV5ChunkInfo>(Span(_chunkTableOff + t * RafsV5ChunkInfo.Size, RafsV5ChunkInfo.Size));
                if (k == 0 && info.uncompressed_offset / BlockSize != a.c_blk_addr) return EIO;
                ulong expect = Math.Min(chunkSize, len - k * chunkSize);
                if (info.uncompressed_size != expect || info.compressed_size > (16u << 20) + 65536) return EIO;
                if ((info.flags & (uint)ChunkFlags.Compressed) == 0 && info.compressed_size != info.uncompressed_size) return EIO;
                chunks.Add(new RafsChunk(fileOff + k * chunkSize, blob, info.index, info.compressed_offset, info.compressed_size, info.uncompressed_offset,
                    info.uncompressed_size, (ChunkFlags)info.flags, Blobs[(int)blob].Compressor, info.block_id, false));
            }
        }
        return 0;
    }

    /// <summary>The merkle table row of inode number <paramref name="iIno"/> (<see cref="MerkleRow"/>), or empty when the
    /// image has no version 2 or 3 extension or the number is out of range.</summary>
    private ReadOnlySpan<byte> MerkleRowOf(ulong iIno)
    {
        if (!HasMerkle || iIno == 0 || iIno > (ulong)_merkleRows) return default;
        return Span(_merkleOff + ((long)iIno - 1) * _merkleRowSize, _merkleRowSize);
    }

    /// <summary>The whole-content digest of a regular file (by its i_ino) from its merkle row (version 3), in the
    /// image's digester: what b3sum / sha256sum print for the file. Empty when the image has no such rows (nydus's
    /// images, older VirtioFs ones). Authentic as far as the row's content digest is: a file's content digest covers
    /// it (<see cref="Merkle.File"/>), so <c>check</c> and a pinned root digest catch a row that lies.</summary>
    public ReadOnlySpan<byte> GetFileDigest(ulong iIno)
    {
        if (!HasFileDigests) return default;
        var row = MerkleRowOf(iIno);
        return row.IsEmpty ? default : row.Slice(MerkleRow.FileDigestOffset, Codec.DigestSize);
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
