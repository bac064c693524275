using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Reader;

// RAFS v5 decoding. Inode handles are v5 inode numbers (root = 1); the inode table maps a number to its record.
public sealed unsafe partial class RafsImage
{
    private RafsV5SuperBlock _sb5;
    private long _it5Off;
    private uint _it5Entries;

    private (List<RafsBlobInfo>, List<ulong>, Compressor, Digester) InitV5()
    {
        if (_size < RafsV5SuperBlock.Size + 8) throw new RafsFormatException($"RAFS v5 bootstrap is {_size} bytes, smaller than its 8192-byte superblock (truncated?)");
        _sb5 = MemoryMarshal.Read<RafsV5SuperBlock>(Span(0, RafsV5SuperBlock.Size));
        if (_sb5.s_fs_version != V5.Version) throw new RafsFormatException($"unsupported RAFS version 0x{_sb5.s_fs_version:x} (expected 0x500)");
        if (_sb5.s_sb_size != V5.SuperBlockSize) throw new RafsFormatException($"RAFS v5 superblock size {_sb5.s_sb_size} (expected 8192)");
        uint cs = _sb5.s_block_size;
        if (!BitOperationsIsPow2(cs) || cs < BlockSize || cs > 16u << 20) throw new RafsFormatException($"invalid chunk size {cs} in RAFS v5 superblock");
        var f = (RafsSuperFlags)_sb5.s_flags;
        var comp = (f & (RafsSuperFlags.CompressionNone | RafsSuperFlags.CompressionLz4 | RafsSuperFlags.CompressionGzip | RafsSuperFlags.CompressionZstd)) switch
        {
            RafsSuperFlags.CompressionNone => Compressor.None,
            RafsSuperFlags.CompressionLz4 => Compressor.Lz4Block,
            RafsSuperFlags.CompressionGzip => Compressor.Gzip,
            RafsSuperFlags.CompressionZstd => Compressor.Zstd,
            _ => throw new RafsFormatException($"invalid compressor flags 0x{_sb5.s_flags:x} in RAFS v5 superblock"),
        };
        var dig = (f & (RafsSuperFlags.HashBlake3 | RafsSuperFlags.HashSha256)) switch
        {
            RafsSuperFlags.HashBlake3 => Digester.Blake3,
            RafsSuperFlags.HashSha256 => Digester.Sha256,
            _ => throw new RafsFormatException($"invalid digester flags 0x{_sb5.s_flags:x} in RAFS v5 superblock"),
        };
        _it5Off = (long)_sb5.s_inode_table_offset;
        _it5Entries = _sb5.s_inode_table_entries;
        if (_it5Entries == 0 || _sb5.s_inodes_count > _it5Entries || !InRange(_it5Off, _it5Entries * 4L) || _it5Off < V5.SuperBlockSize)
            throw new RafsFormatException($"inode table offset 0x{_it5Off:x} entries {_it5Entries} out of range");

        long btOff = (long)_sb5.s_blob_table_offset, btSize = _sb5.s_blob_table_size;
        if (!InRange(btOff, btSize)) throw new RafsFormatException($"blob table offset 0x{btOff:x} size {btSize} out of range");
        long extOff = (long)_sb5.s_extended_blob_table_offset;
        uint extN = _sb5.s_extended_blob_table_entries;
        if (extN > 255 || (extN > 0 && !InRange(extOff, extN * (long)RafsV5ExtBlobEntry.Size)))
            throw new RafsFormatException($"extended blob table offset 0x{extOff:x} entries {extN} out of range");
        var blobs = new List<RafsBlobInfo>();
        var bt = Span(btOff, btSize);
        int pos = 0;
        while (bt.Length - pos > 8)
        {
            var rest = bt[(pos + 8)..];
            int end = rest.IndexOf((byte)0);
            if (end < 0) end = rest.Length;
            var id = rest[..end];
            if (id.Length == 0) break;
            if (id.Length > 64) throw new RafsFormatException($"blob {blobs.Count} id longer than 64 bytes");
            foreach (var ch in id) if (ch < 0x21 || ch > 0x7E || ch == '/') throw new RafsFormatException($"blob {blobs.Count} id is not printable ASCII");
            if (blobs.Count >= 255) throw new RafsFormatException("more than 255 blobs");
            RafsV5ExtBlobEntry ext = default;
            if (blobs.Count < extN) ext = MemoryMarshal.Read<RafsV5ExtBlobEntry>(Span(extOff + blobs.Count * (long)RafsV5ExtBlobEntry.Size, RafsV5ExtBlobEntry.Size));
            blobs.Add(new RafsBlobInfo(blobs.Count, System.Text.Encoding.ASCII.GetString(id), cs, ext.chunk_count, comp, dig, (BlobFeatures)ext.features, ext.compressed_size, ext.uncompressed_size));
            pos += 8 + end + 1;
        }

        var pf = new List<ulong>();
        long pOff = (long)_sb5.s_prefetch_table_offset;
        uint pN = _sb5.s_prefetch_table_entries;
        if (pN > 0)
        {
            if (!InRange(pOff, pN * 4L)) throw new RafsFormatException($"prefetch table offset 0x{pOff:x} entries {pN} out of range");
            for (long i = 0; i < pN; i++) pf.Add(BinaryPrimitives.ReadUInt32LittleEndian(Span(pOff + i * 4, 4)));
        }

        if (V5Rec(1, out var root) != 0) throw new RafsFormatException("root inode (1) is out of range or corrupt");
        if ((root.Inode.i_mode & 0xF000) != 0x4000) throw new RafsFormatException("root inode is not a directory");
        return (blobs, pf, comp, dig);
    }

    private readonly ref struct Rec5
    {
        public readonly RafsV5Inode Inode;
        public readonly long Offset;
        public readonly ReadOnlySpan<byte> Name;
        public readonly ReadOnlySpan<byte> Symlink;
        public readonly ReadOnlySpan<byte> Xattrs;
        public readonly long ChunksOffset;

        public Rec5(RafsV5Inode inode, long offset, ReadOnlySpan<byte> name, ReadOnlySpan<byte> symlink, ReadOnlySpan<byte> xattrs, long chunks)
        {
            Inode = inode; Offset = offset; Name = name; Symlink = symlink; Xattrs = xattrs; ChunksOffset = chunks;
        }
    }

    /// <summary>Record of inode table entry <paramref name="index"/> (1-based).</summary>
    private int V5Rec(ulong index, out Rec5 rec)
    {
        rec = default;
        if (index == 0 || index > _it5Entries) return index == 0 ? EINVAL : ENOENT;
        if (!TrySpan(_it5Off + ((long)index - 1) * 4, 4, out var e)) return EIO;
        long off = (long)BinaryPrimitives.ReadUInt32LittleEndian(e) << 3;
        if (off <= V5.SuperBlockSize || !TrySpan(off, RafsV5Inode.Size, out var s)) return EIO;
        var ino = MemoryMarshal.Read<RafsV5Inode>(s);
        long p = off + RafsV5Inode.Size;
        if (ino.i_name_size == 0 || ino.i_name_size > 255 || !TrySpan(p, ino.i_name_size, out var name)) return EIO;
        if (index != 1 && name.IndexOfAny((byte)'/', (byte)0) >= 0) return EIO; // names must not alias paths
        p += (ino.i_name_size + 7) & ~7;
        ReadOnlySpan<byte> link = default;
        if ((ino.i_flags & V5.FlagSymlink) != 0)
        {
            if (ino.i_symlink_size > 4096 || !TrySpan(p, ino.i_symlink_size, out link)) return EIO;
            p += (ino.i_symlink_size + 7) & ~7;
        }
        ReadOnlySpan<byte> x = default;
        if ((ino.i_flags & V5.FlagXattr) != 0)
        {
            if (!TrySpan(p, 8, out var xs)) return EIO;
            ulong xsize = BinaryPrimitives.ReadUInt64LittleEndian(xs);
            if (xsize > 1 << 20 || !TrySpan(p + 8, (long)xsize, out x)) return EIO;
            p += 8 + (((long)xsize + 7) & ~7);
        }
        if (ino.i_mtime_nsec >= 1_000_000_000) return EIO;
        rec = new Rec5(ino, off, name, link, x, p);
        return 0;
    }

    private int V5GetAttr(ulong ino, out RafsAttr attr)
    {
        attr = default;
        int rc = V5Rec(ino, out var r);
        if (rc != 0) return rc;
        var n = r.Inode;
        uint t = n.i_mode & 0xF000;
        ulong size = t is 0x2000 or 0x6000 or 0x1000 or 0xC000 ? 0 : n.i_size;
        attr = new RafsAttr(n.i_ino, n.i_mode, n.i_nlink, n.i_uid, n.i_gid, size, t is 0x2000 or 0x6000 ? n.i_rdev : 0, (long)n.i_mtime, n.i_mtime_nsec);
        return 0;
    }

    private int V5ReadLink(ulong ino, out byte[] target)
    {
        target = [];
        int rc = V5Rec(ino, out var r);
        if (rc != 0) return rc;
        if ((r.Inode.i_mode & 0xF000) != 0xA000) return EINVAL;
        target = r.Symlink.ToArray();
        return 0;
    }

    private int V5Children(in Rec5 dir, out uint first, out uint count)
    {
        first = dir.Inode.i_child_index;
        count = dir.Inode.i_child_count;
        if ((dir.Inode.i_mode & 0xF000) != 0x4000) return ENOTDIR;
        if (count == 0) return 0;
        if (first == 0 || first > _it5Entries || count > _it5Entries - first + 1) return EIO;
        return 0;
    }

    private int V5Lookup(ulong parent, ReadOnlySpan<byte> name, out ulong ino)
    {
        ino = 0;
        int rc = V5Rec(parent, out var dir);
        if (rc != 0) return rc;
        if ((rc = V5Children(dir, out uint first, out uint count)) != 0) return rc;
        long lo = 0, hi = (long)count - 1;
        while (lo <= hi)
        {
            long m = lo + (hi - lo) / 2;
            if ((rc = V5Rec(first + (ulong)m, out var c)) != 0) return rc;
            int cmp = c.Name.SequenceCompareTo(name);
            if (cmp == 0) { ino = c.Inode.i_ino; return 0; }
            if (cmp < 0) lo = m + 1; else hi = m - 1;
        }
        return ENOENT;
    }

    private int V5ReadDir(ulong dirIno, ulong offset, ReadDirCallback callback)
    {
        int rc = V5Rec(dirIno, out var dir);
        if (rc != 0) return rc;
        if ((rc = V5Children(dir, out uint first, out uint count)) != 0) return rc;
        ulong parent = dir.Inode.i_parent == 0 ? dirIno : dir.Inode.i_parent;
        for (ulong o = offset; o < 2UL + count; o++)
        {
            if (o == 0) { if (!callback("."u8, dirIno, 0x4000, 1)) return 0; continue; }
            if (o == 1) { if (!callback(".."u8, parent, 0x4000, 2)) return 0; continue; }
            if ((rc = V5Rec(first + (o - 2), out var c)) != 0) return rc;
            if (!callback(c.Name, c.Inode.i_ino, c.Inode.i_mode & 0xF000, o + 1)) return 0;
        }
        return 0;
    }

    private int V5WalkXattrs(ulong ino, XattrVisitor visit)
    {
        int rc = V5Rec(ino, out var r);
        if (rc != 0) return rc;
        var x = r.Xattrs;
        int p = 0;
        while (p + 4 <= x.Length)
        {
            int sz = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(x[p..]), int.MaxValue);
            p += 4;
            if (sz > x.Length - p) return EIO;
            var pair = x.Slice(p, sz);
            int nul = pair.IndexOf((byte)0);
            if (nul <= 0) return EIO;
            if (!visit(0, pair[..nul], pair[(nul + 1)..])) return 0;
            p += sz;
        }
        return 0;
    }

    /// <summary>The chunks and implied holes of a regular file that overlap [offset, end).</summary>
    private int V5GetChunks(ulong ino, ulong offset, ulong end, List<RafsChunk> chunks)
    {
        int rc = V5Rec(ino, out var r);
        if (rc != 0) return rc;
        var n = r.Inode;
        if ((n.i_mode & 0xF000) != 0x8000) return (n.i_mode & 0xF000) == 0x4000 ? EISDIR : EINVAL;
        uint count = n.i_child_count;
        if (count > MaxChunksPerFile || !TrySpan(r.ChunksOffset, (long)count * RafsV5ChunkInfo.Size, out var tbl)) return EIO;
        // Holes are not stored but listed (AddHoles): bound the list by the size, or a forged i_size allocates without end.
        if (n.i_size / ChunkSize >= MaxChunksPerFile) return EIO;
        ulong covered = 0;
        for (int i = 0; i < count; i++)
        {
            var c = MemoryMarshal.Read<RafsV5ChunkInfo>(tbl[(i * RafsV5ChunkInfo.Size)..]);
            if (c.blob_index >= Blobs.Count || c.file_offset < covered || c.uncompressed_size == 0 || c.uncompressed_size > ChunkSize
                || c.file_offset > n.i_size || c.uncompressed_size > n.i_size - c.file_offset) return EIO;
            if ((c.flags & (uint)ChunkFlags.Compressed) == 0 && c.compressed_size != c.uncompressed_size) return EIO;
            if (c.compressed_size > (16u << 20) + 65536) return EIO;
            AddHoles(chunks, covered, c.file_offset, offset, end);
            if (c.file_offset + c.uncompressed_size > offset && c.file_offset < end)
                chunks.Add(new RafsChunk(c.file_offset, c.blob_index, c.index, c.compressed_offset, c.compressed_size, c.uncompressed_offset,
                    c.uncompressed_size, (ChunkFlags)c.flags, Blobs[(int)c.blob_index].Compressor, c.block_id, false));
            covered = c.file_offset + c.uncompressed_size;
        }
        AddHoles(chunks, covered, n.i_size, offset, end);
        return 0;
    }

    /// <summary>Hole entries for [from, to), cut at chunk-size boundaries, that overlap [offset, end).</summary>
    private void AddHoles(List<RafsChunk> chunks, ulong from, ulong to, ulong offset, ulong end)
    {
        if (offset > from)
        {
            // Holes are cut at chunk-size boundaries, so starting at the window's boundary yields the same entries.
            from = Math.Max(from, Math.Min(to, offset - offset % ChunkSize));
        }
        while (from < to && from < end)
        {
            uint len = (uint)Math.Min(ChunkSize - from % ChunkSize, to - from);
            if (from + len > offset) chunks.Add(new RafsChunk(from, 0, 0, 0, 0, 0, len, ChunkFlags.Hole, Compressor.None, default, true));
            from += len;
        }
    }

    private ReadOnlySpan<byte> V5Digest(ulong ino)
    {
        if (V5Rec(ino, out var r) != 0) return default;
        return Span(r.Offset, 32);
    }
}
