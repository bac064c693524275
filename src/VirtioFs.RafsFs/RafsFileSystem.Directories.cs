using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.RafsFs;

// OPENDIR and READDIR(PLUS), and the merkle checks every answer about an inode passes first.
public sealed partial class RafsFileSystem
{
    // ---- directories ------------------------------------------------------------------------------------------------

    private int CheckDirectory(ulong ino) => _merkle?.EnsureDirectory(ino) ?? 0;

    /// <summary>With merkle checking on: 0 once the inode's attributes and xattrs match the digest its verified parent
    /// vouched for (a bit test after the first time), EIO otherwise. Called before any attribute reaches the guest.</summary>
    private int CheckInode(ulong ino) => _merkle?.EnsureInode(ino) ?? 0;

    public override int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result)
    {
        result = default;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc;
        if ((a.Mode & S_IFMT) != S_IFDIR) return ENOTDIR;
        if ((rc = CheckDirectory(ino)) != 0) return rc;
        // The listing never changes: let the kernel keep it in its readdir cache across opens (FUSE 7.28).
        result.OpenFlags = FuseConstants.FOPEN_KEEP_CACHE | FuseConstants.FOPEN_CACHE_DIR;
        return 0;
    }

    public override int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        ulong dir = ToIno(nodeId);
        int rc = CheckDirectory(dir);
        if (rc != 0) return rc;
        int inner = 0;
        bool plus = writer.IsPlus;
        rc = _image.ReadDir(dir, offset, (name, ino, fileType, next) =>
        {
            if (!writer.Fits(name.Length)) return false;
            uint type = fileType >> 12;
            bool dots = name.SequenceEqual("."u8) || name.SequenceEqual(".."u8);
            if (plus && !dots)
            {
                // READDIRPLUS: a full entry per name, as LOOKUP would answer it, so `ls -l` needs no further requests.
                // An inode whose metadata does not match its digest is listed as a plain entry (node id 0: no dentry,
                // no attributes; fs/fuse/readdir.c fuse_direntplus_link), so the rest of the directory serves and a
                // LOOKUP of the name answers EIO.
                if (CheckInode(ino) != 0) return writer.TryAdd(ino, next, type, name);
                if ((inner = FillEntry(ino, out FuseEntry e)) != 0) return false;
                if (!writer.TryAddPlus(e, next, type, name)) return false;
                CountLookup(e.NodeId); // the kernel now holds a lookup on it (fuse_direntplus_link)
                return true;
            }
            // d_ino as stat reports it; "." and ".." are left to the kernel (no dentry from a plus reply for them).
            ulong dIno = _image.GetAttr(ino, out RafsAttr a) == 0 ? a.Ino : ino;
            return writer.TryAdd(dIno, next, type, name);
        });
        if (rc == 0) rc = inner;
        // Entries already emitted are worth more than the error: the next READDIR reports it.
        return rc != 0 && writer.BytesWritten == 0 ? rc : 0;
    }
}
