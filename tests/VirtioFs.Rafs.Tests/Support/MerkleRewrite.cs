using System.Buffers.Binary;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Rafs.Tests.Support;

/// <summary>
/// Rewrites the merkle table of a bootstrap as someone who can rewrite bootstraps (but holds no signing key) could:
/// every row, and the root digest in the header, recomputed bottom up from the inode records so the tree is
/// self-consistent. Used to make a version 2 image (96-byte rows, no file digests: what vfs-image built before the
/// whole-file digest) and an image whose rows lie about a file's digest consistently. Shared (as a linked source
/// file) by the Rafs and ImageTool tests.
/// </summary>
public static class MerkleRewrite
{
    /// <summary>Rewrites <paramref name="bootstrap"/> as merkle version 2: no file digests, file content digest = H(chunk digests).</summary>
    public static void ToVersion2(string bootstrap) => Rewrite(bootstrap, MerkleExtension.MetadataBoundVersion, null, null);

    /// <summary>Gives the file at <paramref name="path"/> the file digest <paramref name="fileDigest"/> and recomputes
    /// the tree over it; returns the new root digest.</summary>
    public static byte[] LieAboutFileDigest(string bootstrap, string path, byte[] fileDigest) => Rewrite(bootstrap, MerkleExtension.Version, path, fileDigest);

    private static byte[] Rewrite(string bootstrap, uint version, string? liePath, byte[]? lie)
    {
        var boot = File.ReadAllBytes(bootstrap);
        byte[] root;
        int header;
        long tableOff, oldSize;
        byte[] table;
        using (var img = RafsImage.Open(bootstrap))
        {
            if (!img.HasMerkle) throw new InvalidOperationException("image has no merkle tree");
            header = img.Version == RafsVersion.V5 ? V5.SignatureHeaderOffset : MerkleExtension.Offset;
            tableOff = (long)BinaryPrimitives.ReadUInt64LittleEndian(boot.AsSpan(header + 8));
            oldSize = (long)BinaryPrimitives.ReadUInt64LittleEndian(boot.AsSpan(header + 16));
            int oldRow = MerkleExtension.RowSizeOf(img.MerkleVersion), newRow = MerkleExtension.RowSizeOf(version);
            long rows = oldSize / oldRow;
            table = new byte[rows * newRow];
            ulong lieIno = 0;
            if (liePath is not null)
            {
                if (ImageWalker.Resolve(img, liePath, out ulong h) != 0 || img.GetAttr(h, out var la) != 0) throw new InvalidOperationException(liePath);
                lieIno = la.Ino;
            }
            var done = new Dictionary<ulong, byte[]>();
            byte[] Visit(ulong handle)
            {
                if (img.GetAttr(handle, out var a) != 0) throw new InvalidOperationException($"inode {handle}");
                if (done.TryGetValue(a.Ino, out var known)) return known;
                var old = boot.AsSpan((int)(tableOff + ((long)a.Ino - 1) * oldRow), oldRow);
                var row = table.AsSpan((int)(((long)a.Ino - 1) * newRow), newRow);
                var xattrs = new List<KeyValuePair<byte[], byte[]>>();
                if (img.GetXattrs(handle, xattrs) != 0) throw new InvalidOperationException($"xattrs of {handle}");
                Merkle.SortXattrs(xattrs);
                byte[] content;
                if (a.FileType == 0x8000)
                {
                    var chunks = new List<RafsChunk>();
                    if (img.GetChunks(handle, chunks) != 0) throw new InvalidOperationException($"chunks of {handle}");
                    var digests = chunks.Where(c => !c.IsHole).Select(c => { var d = c.Digest; return (ReadOnlyMemory<byte>)((ReadOnlySpan<byte>)d).ToArray(); }).ToList();
                    byte[] fd = a.Ino == lieIno ? lie! : version == MerkleExtension.Version ? img.GetFileDigest(a.Ino).ToArray() : [];
                    content = Merkle.File(img.Digester, digests, fd);
                    if (fd.Length > 0) fd.CopyTo(row[MerkleRow.FileDigestOffset..]);
                }
                else if (a.FileType == 0x4000)
                {
                    var kids = new List<(byte[] Name, ulong Handle)>();
                    img.ReadDir(handle, 0, (name, child, _, _) =>
                    {
                        if (!name.SequenceEqual("."u8) && !name.SequenceEqual(".."u8)) kids.Add((name.ToArray(), child));
                        return true;
                    });
                    kids.Sort((x, y) => x.Name.AsSpan().SequenceCompareTo(y.Name));
                    content = Merkle.Directory(img.Digester, true, kids.Select(k => ((ReadOnlyMemory<byte>)k.Name, (ReadOnlyMemory<byte>)Visit(k.Handle))).ToList());
                }
                else
                {
                    content = old.Slice(MerkleRow.ContentDigestOffset, Codec.DigestSize).ToArray();
                }
                var meta = BoundMeta.Read(old[MerkleRow.MetaOffset..]);
                var inode = new byte[Codec.DigestSize];
                Merkle.InodeDigest(img.Digester, meta, xattrs, content, inode);
                inode.CopyTo(row[MerkleRow.InodeDigestOffset..]);
                content.CopyTo(row[MerkleRow.ContentDigestOffset..]);
                old.Slice(MerkleRow.MetaOffset, BoundMeta.EncodedSize).CopyTo(row[MerkleRow.MetaOffset..]);
                done[a.Ino] = inode;
                return inode;
            }
            root = Visit(img.RootIno);
        }
        boot.AsSpan((int)tableOff, (int)oldSize).Clear();
        table.CopyTo(boot.AsSpan((int)tableOff));
        BinaryPrimitives.WriteUInt32LittleEndian(boot.AsSpan(header + 4), version);
        BinaryPrimitives.WriteUInt64LittleEndian(boot.AsSpan(header + 16), (ulong)table.Length);
        root.CopyTo(boot.AsSpan(header + 24));
        boot.AsSpan(header + 56, 68).Clear(); // signature and flags: without the key the rewrite cannot sign
        File.WriteAllBytes(bootstrap, boot);
        return root;
    }
}
