using System.Buffers.Binary;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs;

/// <summary>
/// The merkle tree over an image (VirtioFs merkle extension version 2; the byte layout is in
/// src/VirtioFs.ImageTool/USAGE.md). Every inode has two digests:
/// <list type="bullet">
/// <item>its content digest: a regular file's is H(its chunk digests in order ‖ its file digest) (version 3; version 2:
/// without the file digest), where the file digest is H(the file's whole content), what b3sum / sha256sum print; a symlink's H(target), a directory's
/// H(for each child in name order: u8 name length ‖ name ‖ child's inode digest), any other inode's H("");</item>
/// <item>its inode digest: H(bound metadata (32 bytes: mode, uid, gid, rdev, size) ‖ u32 xattr count ‖ per xattr in
/// name order: u16 name length ‖ name ‖ u32 value length ‖ value ‖ content digest).</item>
/// </list>
/// A directory covers its children's inode digests, so the root's inode digest pins every name, mode, owner, device
/// number, size, xattr, symlink target and (through chunk digests) every byte of data. Times and link counts are not
/// bound. RAFS v5 also keeps nydus's own digest in each inode (file as above, directory = H(child digests) without
/// names: nydus builder/src/core/v5.rs), which <see cref="Compute"/> fills into <see cref="Builder.BuildInode.Digest"/>.
/// </summary>
public static class Merkle
{
    /// <summary>A regular file's content digest: H(chunk digests in order ‖ <paramref name="fileDigest"/>); an empty
    /// <paramref name="fileDigest"/> gives the version 2 form H(chunk digests).</summary>
    public static byte[] File(Digester d, IEnumerable<ReadOnlyMemory<byte>> chunkDigests, ReadOnlySpan<byte> fileDigest = default)
    {
        using var h = new Codec.Incremental(d);
        foreach (var c in chunkDigests) h.Update(c.Span);
        h.Update(fileDigest);
        var r = new byte[Codec.DigestSize];
        h.Finish(r);
        return r;
    }

    public static byte[] Leaf(Digester d, ReadOnlySpan<byte> data)
    {
        var r = new byte[Codec.DigestSize];
        Codec.Hash(d, data, r);
        return r;
    }

    public static byte[] Directory(Digester d, bool withNames, IEnumerable<(ReadOnlyMemory<byte> Name, ReadOnlyMemory<byte> Digest)> children)
    {
        using var h = new Codec.Incremental(d);
        Span<byte> len = stackalloc byte[1];
        foreach (var (name, digest) in children)
        {
            if (withNames)
            {
                len[0] = (byte)name.Length;
                h.Update(len);
                h.Update(name.Span);
            }
            h.Update(digest.Span);
        }
        var r = new byte[Codec.DigestSize];
        h.Finish(r);
        return r;
    }

    /// <summary>Sorts xattrs into the byte-wise name order the inode digest hashes them in.</summary>
    public static void SortXattrs(List<KeyValuePair<byte[], byte[]>> xattrs) => xattrs.Sort((x, y) => x.Key.AsSpan().SequenceCompareTo(y.Key));

    /// <summary>Inode digest of version 2: H(meta ‖ xattrs (already in name order) ‖ content digest).</summary>
    public static void InodeDigest(Digester d, in BoundMeta meta, IReadOnlyList<KeyValuePair<byte[], byte[]>> sortedXattrs, ReadOnlySpan<byte> content, Span<byte> into)
    {
        using var h = new Codec.Incremental(d);
        Span<byte> b = stackalloc byte[BoundMeta.EncodedSize];
        meta.Write(b);
        h.Update(b);
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)sortedXattrs.Count);
        h.Update(b[..4]);
        foreach (var (name, value) in sortedXattrs)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)name.Length);
            h.Update(b[..2]);
            h.Update(name);
            BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)value.Length);
            h.Update(b[..4]);
            h.Update(value);
        }
        h.Update(content);
        h.Finish(into);
    }

    /// <summary>What stat reports for <paramref name="n"/> once laid out in <paramref name="fsVersion"/>: v6 stores a
    /// 16-bit mode and rdev in new_encode_dev form; v5 a 32-bit rdev; non-devices report rdev 0 and devices, fifos
    /// and sockets size 0 (the readers' GetAttr). <paramref name="dirSize"/> is the directory's laid-out size.</summary>
    public static BoundMeta MetaOf(Builder.BuildInode n, int fsVersion, ulong dirSize)
    {
        uint mode = fsVersion == 6 ? (ushort)n.Mode : n.Mode;
        ulong rdev = !n.IsDevice ? 0 : fsVersion == 6 ? Builder.V6Writer.DecodeDev(Builder.V6Writer.EncodeDev(n.Rdev)) : (uint)n.Rdev;
        ulong size = n.IsReg ? n.Size : n.IsDir ? dirSize : n.IsSymlink ? (ulong)n.SymlinkTarget!.Length : 0;
        return new BoundMeta(mode, n.Uid, n.Gid, rdev, size);
    }

    /// <summary>Fills the content and inode digests (and, for v5, nydus's digest) of every inode; <paramref name="order"/>
    /// is breadth first, so children come after their parents. Returns the root's inode digest.</summary>
    public static byte[] Compute(List<Builder.BuildInode> order, Digester d, int fsVersion)
    {
        // Non-directories first: a hard link's inode sits in `order` once, at its first name, which may come before a
        // directory that also names it (/big, then /sub/hardlink), so reverse breadth-first order alone would hash that
        // directory before the linked inode has a digest. Directories are never linked, so for them reverse
        // breadth-first order does put children first.
        for (int i = order.Count - 1; i >= 0; i--)
            if (!order[i].IsDir) ComputeOne(order[i], d, fsVersion);
        for (int i = order.Count - 1; i >= 0; i--)
            if (order[i].IsDir) ComputeOne(order[i], d, fsVersion);
        return order[0].InodeDigest;
    }

    private static void ComputeOne(Builder.BuildInode n, Digester d, int fsVersion)
    {
        ulong dirSize = 0;
        if (n.IsReg)
        {
            // nydus's v5 i_digest stays H(chunk digests): nydus validates it (builder/src/core/v5.rs).
            n.Digest = File(d, n.Chunks.Select(c => (ReadOnlyMemory<byte>)c.Digest));
            if (n.FileDigest.Length != Codec.DigestSize) n.FileDigest = Leaf(d, ReadOnlySpan<byte>.Empty); // no data: H("")
            n.ContentDigest = File(d, n.Chunks.Select(c => (ReadOnlyMemory<byte>)c.Digest), n.FileDigest);
        }
        else if (n.IsSymlink)
        {
            n.ContentDigest = Leaf(d, n.SymlinkTarget);
            n.Digest = n.ContentDigest;
        }
        else if (n.IsDir)
        {
            n.ContentDigest = Directory(d, true, n.Children!.Select(e => ((ReadOnlyMemory<byte>)e.Name, (ReadOnlyMemory<byte>)e.Inode.InodeDigest)));
            n.Digest = fsVersion == 5 ? Directory(d, false, n.Children!.Select(e => ((ReadOnlyMemory<byte>)e.Name, (ReadOnlyMemory<byte>)e.Inode.Digest))) : n.ContentDigest;
            dirSize = fsVersion == 6 ? Builder.V6Writer.DirectorySize(n) : Builder.V5Writer.DirectorySize(n);
        }
        else
        {
            n.ContentDigest = Leaf(d, ReadOnlySpan<byte>.Empty);
            n.Digest = n.ContentDigest;
        }
        n.Meta = MetaOf(n, fsVersion, dirSize);
        n.InodeDigest = new byte[Codec.DigestSize];
        InodeDigest(d, n.Meta, n.Xattrs, n.ContentDigest, n.InodeDigest);
    }

    /// <summary>Writes the table row of <paramref name="n"/> into <paramref name="row"/> (<see cref="MerkleRow"/>).</summary>
    public static void WriteRow(Builder.BuildInode n, Span<byte> row)
    {
        n.InodeDigest.CopyTo(row[MerkleRow.InodeDigestOffset..]);
        n.ContentDigest.CopyTo(row[MerkleRow.ContentDigestOffset..]);
        n.Meta.Write(row[MerkleRow.MetaOffset..]);
        var file = row.Slice(MerkleRow.FileDigestOffset, Codec.DigestSize);
        if (n.IsReg) n.FileDigest.CopyTo(file); else file.Clear();
    }
}
