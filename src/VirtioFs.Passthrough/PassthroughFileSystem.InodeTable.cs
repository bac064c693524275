using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>The inode table: every inode the guest knows, keyed by host (st_dev, st_ino), with the kernel's lookup
/// count; LOOKUP adds to it and FORGET drops from it.</summary>
public sealed partial class PassthroughFileSystem
{
    /// <summary>Looks a checked name up under a parent fd and counts one lookup.</summary>
    private int DoLookup(Inode parent, int parentFd, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        Span<byte> cname = stackalloc byte[NameMax + 1];
        ToCString(name, cname);
        return OpenAndRegister(parentFd, cname, parent.MountId, out entry);
    }

    /// <summary>Opens the NUL-terminated component <paramref name="cname"/> under <paramref name="dirFd"/> as an O_PATH
    /// fd, never following a symlink, and registers its inode (one lookup).</summary>
    private unsafe int OpenAndRegister(int dirFd, ReadOnlySpan<byte> cname, ulong parentMountId, out FuseEntry entry)
    {
        int fd;
        fixed (byte* p = cname)
        {
            // SAFETY: a NUL-terminated single component (or ".."); O_NOFOLLOW keeps a symlink as itself.
            fd = openat(dirFd, p, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
        }
        if (fd < 0)
        {
            entry = default;
            return LastErrno;
        }
        Statx st;
        if (StatFd(fd, out st) != 0)
        {
            int e = LastErrno;
            close(fd);
            entry = default;
            return e;
        }
        return Register(fd, st, parentMountId, out entry);
    }

    /// <summary>
    /// LOOKUP of a name: stat it first and, when its inode is already in the table, count one more lookup on the fd
    /// we hold (one statx instead of openat + statx + close). Holding an fd on every known inode keeps its inode number
    /// from being reused, so (st_dev, st_ino) names exactly the inode we hold. Only an inode seen for the first time is
    /// opened (O_PATH) and re-stated through its fd, as <see cref="DoLookup"/> does.
    /// </summary>
    private unsafe int LookupKnownFirst(Inode parent, int parentFd, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        Span<byte> cname = stackalloc byte[NameMax + 1];
        ToCString(name, cname);
        Statx st;
        int rc;
        fixed (byte* p = cname)
        {
            // SAFETY: single NUL-terminated component; AT_SYMLINK_NOFOLLOW stats a symlink itself, AT_NO_AUTOMOUNT
            // leaves automount points alone like the O_PATH open does; st is a 256-byte statx.
            rc = statx(parentFd, p, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS | STATX_MNT_ID, &st);
        }
        if (rc != 0)
        {
            entry = default;
            return LastErrno;
        }
        if (TryReference(st, parent.MountId, out entry))
        {
            return 0;
        }
        return DoLookup(parent, parentFd, name, out entry);
    }

    /// <summary>Counts one lookup on the inode <paramref name="st"/> describes if the table holds it.</summary>
    private bool TryReference(in Statx st, ulong parentMountId, out FuseEntry entry)
    {
        ulong id;
        lock (_inodeLock)
        {
            if (!_byKey.TryGetValue((Dev(st), st.stx_ino), out Inode? existing))
            {
                entry = default;
                return false;
            }
            existing.Refcount++;
            id = existing.Id;
        }
        entry = MakeEntry(id, st, parentMountId);
        return true;
    }

    private FuseEntry MakeEntry(ulong id, in Statx st, ulong parentMountId)
    {
        var entry = new FuseEntry { NodeId = id, Attr = ToAttr(st), EntryTimeout = _timeout, AttrTimeout = _timeout };
        if (_submounts && st.stx_mnt_id != parentMountId)
        {
            entry.Attr.flags |= FuseConstants.FUSE_ATTR_SUBMOUNT;
        }
        return entry;
    }

    /// <summary>Adds (or re-references) the inode of <paramref name="fd"/>; takes ownership of the fd.</summary>
    private int Register(int fd, in Statx st, ulong parentMountId, out FuseEntry entry)
    {
        ulong dev = Dev(st);
        ulong id;
        lock (_inodeLock)
        {
            if (_byKey.TryGetValue((dev, st.stx_ino), out Inode? existing))
            {
                existing.Refcount++;
                id = existing.Id;
                close(fd);
            }
            else
            {
                id = ++_nextNodeId;
                var inode = new Inode
                {
                    Id = id, Fd = new FdHandle(fd), Dev = dev, Ino = st.stx_ino, Type = st.stx_mode & S_IFMT,
                    MountId = st.stx_mnt_id, Refcount = 1,
                };
                _byId[id] = inode;
                _byKey[(dev, st.stx_ino)] = inode;
            }
        }
        entry = MakeEntry(id, st, parentMountId);
        return 0;
    }

    private void Remove(Inode inode)
    {
        _byId.Remove(inode.Id);
        _byKey.Remove((inode.Dev, inode.Ino));
        inode.Fd.Dispose();
        lock (inode)
        {
            if (inode.LockFds is not null)
            {
                foreach (FdHandle h in inode.LockFds.Values) h.Dispose();
                inode.LockFds = null;
            }
        }
    }

    public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        var lease = new FdLease();
        try
        {
            if (!TryInode(parent, out Inode p, ref lease)) return Errno.EBADF;
            bool dot = name.SequenceEqual("."u8);
            bool dotdot = name.SequenceEqual(".."u8);
            if (dot || (dotdot && parent == FuseConstants.RootId))
            {
                // "." is the directory itself; ".." of the root stays at the root: nothing above is reachable.
                Statx st;
                if (StatFd(lease.Fd, out st) != 0) return LastErrno;
                int fd2 = dup(lease.Fd);
                if (fd2 < 0) return LastErrno;
                return Register(fd2, st, p.MountId, out entry);
            }
            if (dotdot)
            {
                // ".." relative to a directory fd inside the shared tree (not the root: handled above).
                return OpenAndRegister(lease.Fd, "..\0"u8, p.MountId, out entry);
            }
            int err = CheckName(name);
            return err != 0 ? err : LookupKnownFirst(p, lease.Fd, name, out entry);
        }
        finally
        {
            lease.Dispose();
        }
    }

    public void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup)
    {
        lock (_inodeLock)
        {
            ForgetLocked(nodeId, nlookup);
        }
    }

    public void BatchForget(in FuseContext ctx, ReadOnlySpan<FuseForgetOne> forgets)
    {
        lock (_inodeLock)
        {
            foreach (ref readonly FuseForgetOne f in forgets)
            {
                ForgetLocked(f.nodeid, f.nlookup);
            }
        }
    }

    private void ForgetLocked(ulong nodeId, ulong nlookup)
    {
        if (!_byId.TryGetValue(nodeId, out Inode? inode))
        {
            PassthroughLog.UnknownForget(_logger, nodeId);
            return;
        }
        inode.Refcount = nlookup >= (ulong)inode.Refcount ? 0 : inode.Refcount - (long)nlookup;
        if (inode.Refcount == 0 && nodeId != FuseConstants.RootId)
        {
            Remove(inode);
        }
    }
}
