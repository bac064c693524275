using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Builder;

/// <summary>
/// Writes a RAFS v5 bootstrap following nydus (builder/src/core/v5.rs, bootstrap.rs): inode indexes are assigned
/// so every directory's children are contiguous and name-sorted; a hard-linked regular file gets one record per
/// name sharing i_ino (the first record's index) with HARDLINK set; each record's digest follows nydus (directory =
/// H(child digests)). The VirtioFs merkle extension (header in the superblock's reserved bytes, table after the
/// records, one row per i_ino) carries the metadata-bound tree and the Ed25519 signature, if any.
/// </summary>
public static class V5Writer
{
    private static long Align8(long v) => (v + 7) & ~7L;

    private sealed class Rec
    {
        public required BuildInode Node;
        public required byte[] Name;
        public uint Index;
        public uint Ino;
        public uint ParentIno;
        public uint ChildIndex;
        public long Offset;
        public long Size;
    }

    public static byte[] Write(LayoutInput input, BuildInode root)
    {
        // Index assignment: breadth first over directories, children of one directory consecutive.
        var recs = new List<Rec>();
        var firstIno = new Dictionary<BuildInode, uint>(ReferenceEqualityComparer.Instance);
        var rootRec = new Rec { Node = root, Name = "/"u8.ToArray(), Index = 1, Ino = 1, ParentIno = 0 };
        recs.Add(rootRec);
        firstIno[root] = 1;
        var queue = new Queue<Rec>();
        queue.Enqueue(rootRec);
        while (queue.Count > 0)
        {
            var d = queue.Dequeue();
            d.ChildIndex = (uint)recs.Count + 1;
            foreach (var e in d.Node.Children!)
            {
                var r = new Rec { Node = e.Inode, Name = e.Name, Index = (uint)recs.Count + 1, ParentIno = d.Ino };
                if (e.Inode.IsReg && firstIno.TryGetValue(e.Inode, out var ino)) r.Ino = ino;
                else { r.Ino = r.Index; firstIno[e.Inode] = r.Index; }
                recs.Add(r);
                if (e.Inode.IsDir) queue.Enqueue(r);
            }
        }
        if (recs.Count > (1 << 29)) throw new RafsFormatException("too many inodes for RAFS v5");

        int nblobs = input.Blobs.Count;
        long inodeTableOff = V5.SuperBlockSize;
        long inodeTableSize = Align8(recs.Count * 4L);
        long prefetchOff = inodeTableOff + inodeTableSize;
        long prefetchSize = Align8(input.Prefetch.Count * 4L);
        long blobTableOff = prefetchOff + prefetchSize;
        long blobTableRaw = 0;
        foreach (var b in input.Blobs) blobTableRaw += 8 + b.BlobId.Length + 1;
        long blobTableSize = nblobs == 0 ? 0 : Align8(blobTableRaw - 1);
        long extOff = blobTableOff + blobTableSize;
        long extSize = (long)nblobs * RafsV5ExtBlobEntry.Size;
        long off = extOff + extSize;
        foreach (var r in recs)
        {
            r.Offset = off;
            long size = RafsV5Inode.Size + Align8(r.Name.Length) + (r.Node.IsSymlink ? Align8(r.Node.SymlinkTarget!.Length) : 0);
            if (r.Node.Xattrs.Count > 0) size += 8 + Align8(XattrRawSize(r.Node));
            if (r.Node.IsReg) size += (long)r.Node.Chunks.Length * RafsV5ChunkInfo.Size;
            r.Size = size;
            off += size;
            if (off > (1L << 32)) throw new RafsFormatException("RAFS v5 metadata larger than 4 GiB");
        }
        // The merkle table (VirtioFs extension) after the last record: nydus reads records through the inode table
        // only (rafs/src/metadata/{direct,cached}_v5.rs), so bytes past them are invisible to it. One row per index.
        long merkleOff = Align8(off);
        long merkleSize = (long)recs.Count * MerkleExtension.RowSize;
        var buf = new byte[merkleOff + merkleSize];
        var span = buf.AsSpan();

        var flags = RafsSuperFlags.ExplicitUidGid | V6Writer.CompressionFlag(input.Compressor)
            | (input.Digester == Digester.Sha256 ? RafsSuperFlags.HashSha256 : RafsSuperFlags.HashBlake3);
        if (recs.Any(r => r.Node.Xattrs.Count > 0)) flags |= RafsSuperFlags.HasXattr;
        var sb = new RafsV5SuperBlock
        {
            s_magic = V5.Magic, s_fs_version = V5.Version, s_sb_size = V5.SuperBlockSize, s_block_size = input.ChunkSize,
            s_flags = (ulong)flags, s_inodes_count = (ulong)firstIno.Count, s_inode_table_offset = (ulong)inodeTableOff,
            s_inode_table_entries = (uint)recs.Count, s_prefetch_table_offset = (ulong)prefetchOff,
            s_prefetch_table_entries = (uint)input.Prefetch.Count, s_blob_table_offset = (ulong)blobTableOff,
            s_blob_table_size = (uint)blobTableSize, s_extended_blob_table_offset = (ulong)extOff,
            s_extended_blob_table_entries = (uint)nblobs,
        };
        MemoryMarshal.Write(span, in sb);
        MerkleExtension.WriteAt(span, V5.SignatureHeaderOffset, (ulong)merkleOff, (ulong)merkleSize, input.RootDigest, input.Signature);
        foreach (var r in recs) Merkle.WriteRow(r.Node, span.Slice((int)(merkleOff + (r.Ino - 1L) * MerkleExtension.RowSize), MerkleExtension.RowSize));

        foreach (var r in recs) BinaryPrimitives.WriteUInt32LittleEndian(span[(int)(inodeTableOff + (r.Index - 1) * 4L)..], checked((uint)(r.Offset >> 3)));
        for (int i = 0; i < input.Prefetch.Count; i++)
            BinaryPrimitives.WriteUInt32LittleEndian(span[(int)(prefetchOff + i * 4L)..], firstIno[input.Prefetch[i]]);
        long p = blobTableOff;
        for (int i = 0; i < nblobs; i++)
        {
            var b = input.Blobs[i];
            p += 8; // prefetch offset and size: zero
            System.Text.Encoding.ASCII.GetBytes(b.BlobId).CopyTo(span[(int)p..]);
            p += b.BlobId.Length + 1;
            var ext = new RafsV5ExtBlobEntry { chunk_count = b.ChunkCount, features = (uint)b.Features, uncompressed_size = b.UncompressedSize, compressed_size = b.CompressedSize };
            MemoryMarshal.Write(span[(int)(extOff + (long)i * RafsV5ExtBlobEntry.Size)..], in ext);
        }

        foreach (var r in recs)
        {
            var n = r.Node;
            bool hard = n.IsReg && n.Nlink > 1;
            ulong iflags = (n.IsSymlink ? V5.FlagSymlink : 0) | (hard ? V5.FlagHardlink : 0) | (n.Xattrs.Count > 0 ? V5.FlagXattr : 0);
            ulong size = n.IsDir ? DirSize(n) : n.IsSymlink ? (ulong)n.SymlinkTarget!.Length : n.IsReg ? n.Size : 0;
            ulong xsize = n.Xattrs.Count > 0 ? (ulong)(8 + Align8(XattrRawSize(n))) : 0;
            var ino = new RafsV5Inode
            {
                i_parent = r.ParentIno, i_ino = r.Ino, i_uid = n.Uid, i_gid = n.Gid, i_mode = n.Mode, i_size = size,
                i_blocks = (size + (n.IsDir ? xsize : 0) + 511) / 512, i_flags = iflags, i_nlink = n.IsReg ? n.Nlink : n.IsDir ? n.Nlink : 1,
                i_child_index = n.IsDir ? r.ChildIndex : 0, i_child_count = n.IsDir ? (uint)n.Children!.Count : (uint)n.Chunks.Length,
                i_name_size = (ushort)r.Name.Length, i_symlink_size = n.IsSymlink ? (ushort)n.SymlinkTarget!.Length : (ushort)0,
                i_rdev = (uint)n.Rdev, i_mtime_nsec = n.MtimeNsec, i_mtime = (ulong)n.MtimeSec,
            };
            if (n.IsDir && n.Children!.Count == 0) ino.i_child_index = 0;
            n.Digest.CopyTo(ino.i_digest);
            long q = r.Offset;
            MemoryMarshal.Write(span[(int)q..], in ino);
            q += RafsV5Inode.Size;
            r.Name.CopyTo(span[(int)q..]);
            q += Align8(r.Name.Length);
            if (n.IsSymlink)
            {
                n.SymlinkTarget!.CopyTo(span[(int)q..]);
                q += Align8(n.SymlinkTarget!.Length);
            }
            if (n.Xattrs.Count > 0)
            {
                long raw = XattrRawSize(n);
                BinaryPrimitives.WriteUInt64LittleEndian(span[(int)q..], (ulong)raw);
                q += 8;
                long x = q;
                foreach (var (k, v) in n.Xattrs)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(span[(int)x..], checked((uint)(k.Length + 1 + v.Length)));
                    x += 4;
                    k.CopyTo(span[(int)x..]);
                    x += k.Length + 1;
                    v.CopyTo(span[(int)x..]);
                    x += v.Length;
                }
                q += Align8(raw);
            }
            if (n.IsReg)
            {
                for (int i = 0; i < n.Chunks.Length; i++)
                {
                    var c = n.Chunks[i];
                    var ci = new RafsV5ChunkInfo
                    {
                        blob_index = c.BlobIndex, flags = (uint)c.Flags, compressed_size = c.CompressedSize, uncompressed_size = c.UncompressedSize,
                        compressed_offset = c.CompressedOffset, uncompressed_offset = c.UncompressedOffset, file_offset = (ulong)i * input.ChunkSize, index = c.Index,
                    };
                    c.Digest.CopyTo(ci.block_id);
                    MemoryMarshal.Write(span[(int)q..], in ci);
                    q += RafsV5ChunkInfo.Size;
                }
            }
        }
        return buf;
    }

    private static long XattrRawSize(BuildInode n)
    {
        long s = 0;
        foreach (var (k, v) in n.Xattrs) s += 4 + k.Length + 1 + v.Length;
        return s;
    }

    /// <summary>The i_size directory <paramref name="n"/> gets when laid out (what the merkle tree binds).</summary>
    public static ulong DirectorySize(BuildInode n) => DirSize(n);

    private static ulong DirSize(BuildInode n)
    {
        ulong d = 0;
        foreach (var e in n.Children!) d += (ulong)e.Name.Length + 8;
        return d == 0 ? 4096 : (d + 4095) / 4096 * 4096;
    }
}
