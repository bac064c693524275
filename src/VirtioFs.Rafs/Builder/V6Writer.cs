using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Builder;

/// <summary>Blob table entry input for the writers.</summary>
public sealed record BlobDesc(string BlobId, ulong CompressedSize, ulong UncompressedSize, uint ChunkCount, Compressor Compressor, Digester Digester, uint ChunkSize,
    Compressor CiCompressor = Compressor.None, ulong CiOffset = 0, ulong CiCompressedSize = 0, ulong CiUncompressedSize = 0, BlobFeatures Features = BlobFeatures.Aligned);

/// <summary>Everything a writer needs besides the tree.</summary>
public sealed class LayoutInput
{
    public required List<BuildInode> Order;
    public required List<BlobDesc> Blobs;
    public required uint ChunkSize;
    public required Compressor Compressor;
    public required Digester Digester;
    public ulong BuildTime;
    public List<BuildInode> Prefetch = new();
    public byte[] RootDigest = [];
    public byte[] Signature = [];
}

/// <summary>
/// Writes a RAFS v6 bootstrap following nydus's layout (builder/src/core/v6.rs): superblock, extended superblock,
/// device slots, blob table, prefetch table, then 32-byte-slot extended inodes in breadth-first order (root first),
/// inline xattrs, chunk indexes, inline tails of symlinks and small directories, full directory blocks, the
/// chunk table sorted by (blob, chunk index), and the VirtioFs merkle table.
/// </summary>
public static class V6Writer
{
    private const int B = V6.BlockSize;

    private static long Align(long v, long a) => (v + a - 1) & ~(a - 1);

    public static byte[] Write(LayoutInput input)
    {
        var order = input.Order;
        int nblobs = input.Blobs.Count;
        if (nblobs >= 255) throw new RafsFormatException("more than 254 blobs");
        long blobTableOff = Align(V6.DevTableOffset + (long)nblobs * RafsV6Device.Size, B);
        long blobTableSize = (long)nblobs * RafsV6Blob.Size;
        long prefetchOff = blobTableOff + blobTableSize;
        long prefetchSize = nblobs > 0 ? input.Prefetch.Count * 4L : 0;
        long inodeStart = Align(prefetchOff + prefetchSize, B);
        if (inodeStart == 0) inodeStart = B;
        if (inodeStart >> V6.InodeSlotBits > ushort.MaxValue) throw new RafsFormatException("prefetch table too large: root nid must fit 16 bits");

        // Parents, for ".." entries.
        var parents = new Dictionary<BuildInode, BuildInode>(ReferenceEqualityComparer.Instance);
        foreach (var n in order)
        {
            if (n.Children is null) continue;
            foreach (var e in n.Children) if (e.Inode.IsDir) parents[e.Inode] = n;
        }

        // Pass 1: sizes and placement of every inode record.
        var dirBlocks = new Dictionary<BuildInode, List<List<(byte[] Name, BuildInode? Target, byte Ft)>>>(ReferenceEqualityComparer.Instance);
        var inlineTail = new Dictionary<BuildInode, int>(ReferenceEqualityComparer.Instance);
        long off = inodeStart;
        foreach (var n in order)
        {
            int xsize = XattrSize(n);
            long recSize = RafsV6InodeExtended.Size + xsize;
            int tail = 0;
            if (n.IsReg)
            {
                recSize = Align(recSize, V6.ChunkAddrSize) + (long)n.Chunks.Length * V6.ChunkAddrSize;
            }
            else if (n.IsDir)
            {
                var blocks = PackDir(n);
                dirBlocks[n] = blocks;
                long dsize = DirSize(blocks);
                n.Size = (ulong)dsize;
                tail = (int)(dsize % B);
            }
            else if (n.IsSymlink)
            {
                tail = n.SymlinkTarget!.Length;
            }
            bool inline = tail > 0 && recSize + tail <= B;
            if (inline)
            {
                inlineTail[n] = tail;
                recSize += tail;
            }
            off = Align(off, V6.InodeSlotSize);
            if (inline && (off % B) + recSize > B) off = Align(off, B);
            n.MetaOffset = off;
            off += recSize;
        }
        long dataOff = Align(off, B);

        // Pass 2: directory and symlink data blocks after the inodes.
        var dataAddr = new Dictionary<BuildInode, long>(ReferenceEqualityComparer.Instance);
        foreach (var n in order)
        {
            long full;
            if (n.IsDir) full = (long)n.Size;
            else if (n.IsSymlink) full = n.SymlinkTarget!.Length;
            else continue;
            if (inlineTail.TryGetValue(n, out int t)) full -= t;
            dataAddr[n] = dataOff;
            dataOff += Align(full, B);
        }

        // Distinct chunk records, sorted by (blob, index) for binary search on read.
        var chunkSet = new Dictionary<(uint, uint), ChunkRecord>();
        foreach (var n in order)
        {
            foreach (var c in n.Chunks) chunkSet.TryAdd((c.BlobIndex, c.Index), c);
        }
        var chunks = chunkSet.Values.OrderBy(c => c.BlobIndex).ThenBy(c => c.Index).ToList();
        long chunkTableOff = Align(dataOff, B);
        long chunkTableSize = (long)chunks.Count * RafsV5ChunkInfo.Size;
        long merkleOff = Align(chunkTableOff + chunkTableSize, 8);
        long merkleSize = (long)order.Count * MerkleExtension.RowSize;
        long total = Align(merkleOff + merkleSize, B);

        var buf = new byte[total];
        var span = buf.AsSpan();

        // Inodes.
        foreach (var n in order)
        {
            long o = n.MetaOffset;
            var ino = new RafsV6InodeExtended
            {
                i_mode = (ushort)n.Mode,
                i_size = n.IsReg ? n.Size : n.IsDir ? n.Size : n.IsSymlink ? (ulong)n.SymlinkTarget!.Length : 0,
                i_ino = n.Ino,
                i_uid = n.Uid,
                i_gid = n.Gid,
                i_mtime = (ulong)n.MtimeSec,
                i_mtime_nsec = n.MtimeNsec,
                i_nlink = n.Nlink,
            };
            int xsize = XattrSize(n);
            ino.i_xattr_icount = xsize == 0 ? (ushort)0 : (ushort)((xsize - ErofsXattrIbodyHeader.Size) / 4 + 1);
            ushort layout = V6.InodeFlatPlain;
            if (n.IsReg)
            {
                layout = V6.InodeChunkBased;
                ino.i_u = V6.ChunkFormatIndexes | (uint)(BitOperations.Log2(input.ChunkSize) - V6.BlockBits);
            }
            else if (n.IsDir || n.IsSymlink)
            {
                layout = inlineTail.ContainsKey(n) ? V6.InodeFlatInline : V6.InodeFlatPlain;
                ino.i_u = checked((uint)(dataAddr[n] / B));
            }
            else if (n.IsDevice)
            {
                ino.i_u = EncodeDev(n.Rdev);
            }
            ino.i_format = (ushort)(V6.InodeLayoutExtended | (layout << 1));
            MemoryMarshal.Write(span[(int)o..], in ino);
            long p = o + RafsV6InodeExtended.Size;
            WriteXattrs(span, p, n);
            p += xsize;
            if (n.IsReg)
            {
                p = Align(p, V6.ChunkAddrSize);
                foreach (var c in n.Chunks)
                {
                    var a = new RafsV6InodeChunkAddr
                    {
                        c_blob_addr_lo = (ushort)c.Index,
                        c_blob_addr_hi = (ushort)(((c.Index >> 8) & 0xFF00) | ((c.BlobIndex + 1) & 0xFF)),
                        c_blk_addr = checked((uint)(c.UncompressedOffset / B)),
                    };
                    if (c.Index > 0xFF_FFFF) throw new RafsFormatException("more than 2^24 chunks in one blob");
                    MemoryMarshal.Write(span[(int)p..], in a);
                    p += V6.ChunkAddrSize;
                }
            }
            else if (n.IsDir)
            {
                var data = RenderDir(dirBlocks[n], n, parents.GetValueOrDefault(n) ?? n);
                int t = inlineTail.GetValueOrDefault(n);
                int full = data.Length - t;
                data.AsSpan(0, full).CopyTo(span[(int)dataAddr[n]..]);
                if (t > 0) data.AsSpan(full, t).CopyTo(span[(int)p..]);
            }
            else if (n.IsSymlink)
            {
                var target = n.SymlinkTarget!;
                if (inlineTail.ContainsKey(n)) target.CopyTo(span[(int)p..]);
                else target.CopyTo(span[(int)dataAddr[n]..]);
            }
        }

        // Chunk table.
        for (int i = 0; i < chunks.Count; i++)
        {
            var c = chunks[i];
            var ci = new RafsV5ChunkInfo
            {
                blob_index = c.BlobIndex,
                flags = (uint)c.Flags,
                compressed_size = c.CompressedSize,
                uncompressed_size = c.UncompressedSize,
                compressed_offset = c.CompressedOffset,
                uncompressed_offset = c.UncompressedOffset,
                index = c.Index,
            };
            c.Digest.CopyTo(ci.block_id);
            MemoryMarshal.Write(span[(int)(chunkTableOff + (long)i * RafsV5ChunkInfo.Size)..], in ci);
        }

        // Merkle table, indexed by i_ino - 1.
        foreach (var n in order) Merkle.WriteRow(n, span.Slice((int)(merkleOff + (n.Ino - 1L) * MerkleExtension.RowSize), MerkleExtension.RowSize));

        // Prefetch table: nids.
        if (prefetchSize > 0)
        {
            for (int i = 0; i < input.Prefetch.Count; i++)
                BinaryPrimitives.WriteUInt32LittleEndian(span[(int)(prefetchOff + i * 4)..], checked((uint)(input.Prefetch[i].MetaOffset >> V6.InodeSlotBits)));
        }

        // Device slots and blob table; devices are mapped after the bootstrap, 512 KiB aligned, as nydus does.
        long pos = total;
        uint blockCount = 0;
        for (int i = 0; i < nblobs; i++)
        {
            var b = input.Blobs[i];
            var dev = new RafsV6Device();
            WriteId(dev.blob_id, b.BlobId);
            uint cnt = checked((uint)(b.UncompressedSize / B));
            long mapped = Align(pos, 0x8_0000) / B;
            dev.blocks = cnt;
            dev.mapped_blkaddr = checked((uint)mapped);
            pos = (mapped + cnt) * B;
            blockCount = checked(blockCount + cnt);
            MemoryMarshal.Write(span[(V6.DevTableOffset + i * RafsV6Device.Size)..], in dev);

            var bt = new RafsV6Blob
            {
                blob_index = (uint)i,
                chunk_size = b.ChunkSize,
                chunk_count = b.ChunkCount,
                compression_algo = (uint)b.Compressor,
                digest_algo = (uint)b.Digester,
                features = (uint)b.Features,
                compressed_size = b.CompressedSize,
                uncompressed_size = b.UncompressedSize,
                ci_compressor = (uint)b.CiCompressor,
                ci_offset = b.CiOffset,
                ci_compressed_size = b.CiCompressedSize,
                ci_uncompressed_size = b.CiUncompressedSize,
            };
            WriteId(bt.blob_id, b.BlobId);
            MemoryMarshal.Write(span[(int)(blobTableOff + i * RafsV6Blob.Size)..], in bt);
        }

        var sb = new RafsV6SuperBlock
        {
            s_magic = V6.ErofsSuperMagicV1,
            s_feature_compat = V6.FeatureCompatRafsV6,
            s_blkszbits = V6.BlockBits,
            s_root_nid = checked((ushort)(order[0].MetaOffset >> V6.InodeSlotBits)),
            s_inos = (ulong)order.Count,
            s_build_time = input.BuildTime,
            s_blocks = blockCount,
            s_meta_blkaddr = 0,
            s_feature_incompat = V6.FeatureIncompatChunkedFile | V6.FeatureIncompatDeviceTable,
            s_extra_devices = (ushort)nblobs,
            s_devt_slotoff = V6.DevTableOffset / RafsV6Device.Size,
        };
        if (input.RootDigest.Length >= 16) input.RootDigest.AsSpan(0, 16).CopyTo(sb.s_uuid);
        MemoryMarshal.Write(span[V6.SuperOffset..], in sb);

        var flags = RafsSuperFlags.ExplicitUidGid | RafsSuperFlags.EncryptionNone | CompressionFlag(input.Compressor)
            | (input.Digester == Digester.Sha256 ? RafsSuperFlags.HashSha256 : RafsSuperFlags.HashBlake3);
        if (order.Any(n => n.Xattrs.Count > 0)) flags |= RafsSuperFlags.HasXattr;
        var ext = new RafsV6SuperBlockExt
        {
            s_flags = (ulong)flags,
            s_blob_table_offset = (ulong)blobTableOff,
            s_blob_table_size = (uint)blobTableSize,
            s_chunk_size = input.ChunkSize,
            s_chunk_table_offset = chunks.Count > 0 ? (ulong)chunkTableOff : 0,
            s_chunk_table_size = (ulong)chunkTableSize,
            s_prefetch_table_offset = prefetchSize > 0 ? (ulong)prefetchOff : 0,
            s_prefetch_table_size = (uint)prefetchSize,
        };
        MemoryMarshal.Write(span[V6.ExtSuperOffset..], in ext);
        MerkleExtension.Write(span, (ulong)merkleOff, (ulong)merkleSize, input.RootDigest, input.Signature);
        return buf;
    }

    public static RafsSuperFlags CompressionFlag(Compressor c) => c switch
    {
        Compressor.None => RafsSuperFlags.CompressionNone,
        Compressor.Lz4Block => RafsSuperFlags.CompressionLz4,
        Compressor.Gzip => RafsSuperFlags.CompressionGzip,
        _ => RafsSuperFlags.CompressionZstd,
    };

    private static void WriteId(Span<byte> dst, string id)
    {
        var b = System.Text.Encoding.ASCII.GetBytes(id);
        if (b.Length > 64) throw new RafsFormatException($"blob id '{id}' longer than 64 bytes");
        b.CopyTo(dst);
    }

    /// <summary>Linux new_encode_dev of a glibc dev_t (EROFS stores rdev that way in i_u).</summary>
    public static uint EncodeDev(ulong rdev)
    {
        ulong major = ((rdev >> 8) & 0xFFF) | ((rdev >> 32) & ~0xFFFUL);
        ulong minor = (rdev & 0xFF) | ((rdev >> 12) & ~0xFFUL);
        return (uint)((minor & 0xFF) | (major << 8) | ((minor & ~0xFFUL) << 12));
    }

    /// <summary>glibc makedev of a Linux new_decode_dev value.</summary>
    public static ulong DecodeDev(uint dev)
    {
        ulong major = (dev & 0xFFF00) >> 8;
        ulong minor = (dev & 0xFF) | ((dev >> 12) & 0xFFF00);
        return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFFUL) << 12) | ((major & ~0xFFFUL) << 32);
    }

    // ---- xattrs (erofs_fs.h: ibody header, then 4-byte-aligned entries with a name index prefix) ----

    private static readonly (byte[] Prefix, byte Index)[] XattrPrefixes =
    [
        ("system.posix_acl_access"u8.ToArray(), 2),
        ("system.posix_acl_default"u8.ToArray(), 3),
        ("user."u8.ToArray(), 1),
        ("trusted."u8.ToArray(), 4),
        ("security."u8.ToArray(), 6),
    ];

    public static (byte Index, int PrefixLen) MatchXattr(ReadOnlySpan<byte> name)
    {
        foreach (var (p, i) in XattrPrefixes)
        {
            if (name.StartsWith(p) && (i is not (2 or 3) || name.Length == p.Length)) return (i, p.Length);
        }
        throw new RafsFormatException($"xattr '{BuildTree.Show(name)}' has a namespace RAFS v6 cannot store (user., trusted., security., system.posix_acl_*)");
    }

    public static ReadOnlySpan<byte> XattrPrefix(byte index)
    {
        foreach (var (p, i) in XattrPrefixes) if (i == index) return p;
        return default;
    }

    private static int XattrSize(BuildInode n)
    {
        if (n.Xattrs.Count == 0) return 0;
        long size = ErofsXattrIbodyHeader.Size;
        foreach (var (k, v) in n.Xattrs)
        {
            var (_, plen) = MatchXattr(k);
            if (k.Length - plen > 255) throw new RafsFormatException($"xattr name '{BuildTree.Show(k)}' too long");
            if (v.Length > ushort.MaxValue) throw new RafsFormatException($"xattr '{BuildTree.Show(k)}' value larger than 65535 bytes");
            size = Align(size + ErofsXattrEntry.Size + k.Length - plen + v.Length, 4);
        }
        if (size > ushort.MaxValue * 4L) throw new RafsFormatException("xattrs of one inode too large");
        return (int)size;
    }

    private static void WriteXattrs(Span<byte> span, long p, BuildInode n)
    {
        if (n.Xattrs.Count == 0) return;
        p += ErofsXattrIbodyHeader.Size;
        foreach (var (k, v) in n.Xattrs)
        {
            var (idx, plen) = MatchXattr(k);
            var e = new ErofsXattrEntry { e_name_len = (byte)(k.Length - plen), e_name_index = idx, e_value_size = (ushort)v.Length };
            MemoryMarshal.Write(span[(int)p..], in e);
            k.AsSpan(plen).CopyTo(span[(int)(p + 4)..]);
            v.CopyTo(span[(int)(p + 4 + k.Length - plen)..]);
            p = Align(p + 4 + k.Length - plen + v.Length, 4);
        }
    }

    // ---- directories (erofs_fs.h: per block, a dirent array then the names; sorted by name bytes) ----

    private static List<List<(byte[] Name, BuildInode? Target, byte Ft)>> PackDir(BuildInode dir)
    {
        var all = new List<(byte[] Name, BuildInode? Target, byte Ft)>(dir.Children!.Count + 2)
        {
            ("."u8.ToArray(), dir, V6.FtDir),
            (".."u8.ToArray(), null, V6.FtDir),
        };
        foreach (var e in dir.Children!) all.Add((e.Name, e.Inode, V6.FileType(e.Inode.Mode)));
        all.Sort((a, b) => BuildTree.CompareNames(a.Name, b.Name));
        var blocks = new List<List<(byte[], BuildInode?, byte)>>();
        var cur = new List<(byte[], BuildInode?, byte)>();
        int used = 0;
        foreach (var e in all)
        {
            int len = V6.DirentSize + e.Name.Length;
            if (used + len > B)
            {
                blocks.Add(cur);
                cur = new();
                used = 0;
            }
            cur.Add(e);
            used += len;
        }
        blocks.Add(cur);
        return blocks;
    }

    /// <summary>The i_size directory <paramref name="dir"/> gets when laid out (what the merkle tree binds).</summary>
    public static ulong DirectorySize(BuildInode dir) => (ulong)DirSize(PackDir(dir));

    private static long DirSize(List<List<(byte[] Name, BuildInode? Target, byte Ft)>> blocks)
    {
        long last = 0;
        foreach (var e in blocks[^1]) last += V6.DirentSize + e.Name.Length;
        return (long)(blocks.Count - 1) * B + last;
    }

    private static byte[] RenderDir(List<List<(byte[] Name, BuildInode? Target, byte Ft)>> blocks, BuildInode dir, BuildInode parent)
    {
        long size = DirSize(blocks);
        var data = new byte[size];
        for (int b = 0; b < blocks.Count; b++)
        {
            var blk = blocks[b];
            var s = data.AsSpan(b * B, (int)Math.Min(B, size - (long)b * B));
            int nameOff = blk.Count * V6.DirentSize;
            for (int i = 0; i < blk.Count; i++)
            {
                var (name, target, ft) = blk[i];
                long nid = target is null ? parent.MetaOffset : target.MetaOffset;
                var d = new RafsV6Dirent { e_nid = (ulong)(nid >> V6.InodeSlotBits), e_nameoff = (ushort)nameOff, e_file_type = ft };
                MemoryMarshal.Write(s[(i * V6.DirentSize)..], in d);
                name.CopyTo(s[nameOff..]);
                nameOff += name.Length;
            }
        }
        return data;
    }
}
