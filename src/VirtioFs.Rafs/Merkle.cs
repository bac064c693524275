namespace VirtioFs.Rafs;

/// <summary>
/// The merkle tree over an image: a regular file's digest is H(its chunk digests in order), a symlink's is
/// H(target), a directory's is H over its children in name order, other inodes hash the empty string.
/// RAFS v5 stores these in each inode and hashes a directory as H(child digests) (nydus builder/src/core/v5.rs);
/// the VirtioFs v6 extension also binds names: H(for each child: u8 name length, name, digest), so renaming a
/// file changes the root.
/// </summary>
public static class Merkle
{
    public static byte[] File(Digester d, IEnumerable<ReadOnlyMemory<byte>> chunkDigests)
    {
        using var h = new Codec.Incremental(d);
        foreach (var c in chunkDigests) h.Update(c.Span);
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

    /// <summary>Fills <see cref="Builder.BuildInode.Digest"/> for every inode; <paramref name="order"/> is breadth first.</summary>
    public static byte[] Compute(List<Builder.BuildInode> order, Digester d, bool withNames)
    {
        for (int i = order.Count - 1; i >= 0; i--)
        {
            var n = order[i];
            if (n.IsReg) n.Digest = File(d, n.Chunks.Select(c => (ReadOnlyMemory<byte>)c.Digest));
            else if (n.IsSymlink) n.Digest = Leaf(d, n.SymlinkTarget);
            else if (n.IsDir) n.Digest = Directory(d, withNames, n.Children!.Select(e => ((ReadOnlyMemory<byte>)e.Name, (ReadOnlyMemory<byte>)e.Inode.Digest)));
            else n.Digest = Leaf(d, ReadOnlySpan<byte>.Empty);
        }
        return order[0].Digest;
    }
}
