using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.RafsFs;

// Lookups, attributes, symlinks, permissions and xattrs, all answered from the bootstrap.
public sealed partial class RafsFileSystem
{
    // ---- metadata ---------------------------------------------------------------------------------------------------

    public override int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        ulong dir = ToIno(parent);
        int rc = CheckDirectory(dir);
        if (rc != 0) return rc;
        rc = _image.Lookup(dir, name, out ulong child);
        if (rc != 0) return rc;
        if ((rc = CheckInode(child)) != 0) return rc;
        rc = FillEntry(child, out entry);
        if (rc == 0) CountLookup(entry.NodeId);
        return rc;
    }

    private void CountLookup(ulong nodeId)
    {
        if (nodeId != FuseConstants.RootId) _lookups.AddOrUpdate(nodeId, 1, static (_, n) => n + 1);
    }

    public override void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup)
    {
        while (_lookups.TryGetValue(nodeId, out long n))
        {
            long left = n - (long)Math.Min(nlookup, (ulong)long.MaxValue);
            if (left <= 0 ? _lookups.TryRemove(new KeyValuePair<ulong, long>(nodeId, n)) : _lookups.TryUpdate(nodeId, left, n)) return;
        }
    }

    private int FillEntry(ulong ino, out FuseEntry entry)
    {
        entry = default;
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0)
        {
            RafsFsLog.CorruptInode(_logger, ino, rc, "lookup");
            return EIO;
        }
        entry.NodeId = ToNode(ino);
        entry.Attr = ToFuseAttr(a);
        entry.EntryTimeout = _options.Timeout;
        entry.AttrTimeout = _options.Timeout;
        return 0;
    }

    public override int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = _options.Timeout;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc == Errno.ENOENT ? rc : EIO;
        if ((rc = CheckInode(ino)) != 0) return rc;
        attr = ToFuseAttr(a);
        return 0;
    }

    internal static FuseAttr ToFuseAttr(in RafsAttr a) => new()
    {
        ino = a.Ino,
        size = a.Size,
        blocks = a.Size / 512 + (a.Size % 512 == 0 ? 0UL : 1UL),
        atime = (ulong)a.MtimeSec,
        mtime = (ulong)a.MtimeSec,
        ctime = (ulong)a.MtimeSec,
        atimensec = a.MtimeNsec,
        mtimensec = a.MtimeNsec,
        ctimensec = a.MtimeNsec,
        mode = a.Mode,
        nlink = a.Nlink,
        uid = a.Uid,
        gid = a.Gid,
        // fuse_attr.rdev is the kernel's new_encode_dev() form (fs/fuse/inode.c decodes it with new_decode_dev).
        rdev = Rafs.Builder.V6Writer.EncodeDev(a.Rdev),
        blksize = 4096,
    };

    public override int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length)
    {
        length = 0;
        ulong ino = ToIno(nodeId);
        int rc = _image.ReadLink(ino, out byte[] target);
        if (rc != 0) return rc;
        if (target.Length > buffer.Length) return EIO;
        if ((rc = CheckInode(ino)) != 0) return rc;
        target.CopyTo(buffer);
        length = target.Length;
        return 0;
    }

    public override int Access(in FuseContext ctx, ulong nodeId, uint mask)
    {
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc;
        if ((rc = CheckInode(ino)) != 0) return rc;
        const uint R = 4, W = 2, X = 1;
        if ((mask & W) != 0) return EROFS;
        if ((mask & (R | X)) == 0) return 0; // F_OK
        if (ctx.Uid == 0)
        {
            // root passes read checks; execute needs some x bit unless it is a directory (generic_permission).
            return (mask & X) != 0 && (a.Mode & S_IFMT) != S_IFDIR && (a.Mode & 0x49) == 0 ? EACCES : 0;
        }
        uint bits = ctx.Uid == a.Uid ? (a.Mode >> 6) & 7 : ctx.Gid == a.Gid ? (a.Mode >> 3) & 7 : a.Mode & 7;
        return (bits & mask) == (mask & 7) ? 0 : EACCES;
    }

    public override int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        stat = _statfs;
        return 0;
    }

    public override int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetXattr(ino, name, out byte[] v);
        if (rc != 0 && rc != Errno.ENODATA && rc != Errno.EOPNOTSUPP) return rc;
        if (CheckInode(ino) is int bad and not 0) return bad; // an absent xattr is an answer about the inode too
        if (rc != 0) return rc == Errno.EOPNOTSUPP ? Errno.ENODATA : rc;
        length = v.Length;
        if (value.IsEmpty) return 0;
        if (v.Length > value.Length) return ERANGE;
        v.CopyTo(value);
        return 0;
    }

    public override int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        length = 0;
        var names = new List<byte[]>();
        ulong ino = ToIno(nodeId);
        int rc = _image.ListXattr(ino, names);
        if (rc != 0) return rc == Errno.EOPNOTSUPP ? 0 : rc;
        if ((rc = CheckInode(ino)) != 0) return rc;
        int total = 0;
        foreach (var n in names) total = checked(total + n.Length + 1);
        length = total;
        if (list.IsEmpty) return 0;
        if (total > list.Length) return ERANGE;
        int p = 0;
        foreach (var n in names)
        {
            n.CopyTo(list[p..]);
            list[p + n.Length] = 0;
            p += n.Length + 1;
        }
        return 0;
    }
}
