using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>Creating, removing, renaming and linking names (as the caller).</summary>
public sealed partial class PassthroughFileSystem
{
    /// <summary>
    /// The start every create shares: refused on a read-only share, the name checked as one path component, the
    /// parent's fd leased and the name NUL-terminated into <paramref name="cname"/> (NAME_MAX + 1 bytes).
    /// </summary>
    private int BeginCreate(ulong parent, ReadOnlySpan<byte> name, scoped Span<byte> cname, out Inode parentInode, ref FdLease lease)
    {
        parentInode = null!;
        if (_options.ReadOnly) return Errno.EROFS;
        int err = CheckName(name);
        if (err != 0) return err;
        if (!TryInode(parent, out parentInode, ref lease)) return Errno.EBADF;
        ToCString(name, cname);
        return 0;
    }

    /// <summary>Runs a creating call as the caller under the parent, then looks the result up.</summary>
    private unsafe int CreateNode(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry, int kind, uint mode, ulong rdev, ReadOnlySpan<byte> target,
        uint umask = 0)
    {
        entry = default;
        var lease = new FdLease();
        try
        {
            Span<byte> cname = stackalloc byte[NameMax + 1];
            int err = BeginCreate(parent, name, cname, out Inode p, ref lease);
            if (err != 0) return err;
            int rc;
            if (kind != 2) mode = (mode & S_IFMT) | CreateMode(lease.Fd, mode, umask);
            if (!TryHostCaller(ctx, out FuseContext caller)) return Errno.EPERM;
            using (new Credentials(caller, _logger))
            {
                fixed (byte* n = cname)
                {
                    switch (kind)
                    {
                        case 0:
                            rc = mkdirat(lease.Fd, n, mode & 0xFFF); // SAFETY: single NUL-terminated component.
                            break;
                        case 1:
                            rc = mknodat(lease.Fd, n, mode, rdev); // SAFETY: as above.
                            break;
                        default:
                            Span<byte> t = stackalloc byte[4097]; // target length checked below PATH_MAX by Symlink
                            target.CopyTo(t);
                            t[target.Length] = 0;
                            fixed (byte* tp = t)
                            {
                                rc = symlinkat(tp, lease.Fd, n); // SAFETY: NUL-terminated target and name; the target is never resolved by us.
                            }
                            break;
                    }
                }
                if (rc != 0) return LastErrno;
            }
            if (_securityLabel && ctx.SecurityContext is not null)
            {
                int fd;
                fixed (byte* n = cname)
                {
                    fd = openat(lease.Fd, n, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0); // SAFETY: the component just created.
                }
                err = fd < 0 ? LastErrno : ApplySecurityContext(ctx, fd);
                if (fd >= 0) close(fd);
                if (err != 0)
                {
                    UnlinkNew(lease.Fd, cname, kind == 0 ? AT_REMOVEDIR : 0);
                    return err;
                }
            }
            return DoLookup(p, lease.Fd, name, out entry);
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry) =>
        CreateNode(ctx, parent, name, out entry, 0, mode, 0, default, umask);

    public int MkNod(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntry entry) =>
        CreateNode(ctx, parent, name, out entry, 1, mode, rdev, default, umask);

    public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        return target.Length == 0 || target.Length >= 4096 ? Errno.ENAMETOOLONG : CreateNode(ctx, parent, name, out entry, 2, 0, 0, target);
    }

    public int Unlink(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => Remove(parent, name, 0);
    public int RmDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => Remove(parent, name, AT_REMOVEDIR);

    private unsafe int Remove(ulong parent, ReadOnlySpan<byte> name, int flags)
    {
        if (_options.ReadOnly) return Errno.EROFS;
        int err = CheckName(name);
        if (err != 0) return err;
        var lease = new FdLease();
        try
        {
            if (!TryInode(parent, out _, ref lease)) return Errno.EBADF;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            ToCString(name, cname);
            fixed (byte* n = cname)
            {
                // SAFETY: single NUL-terminated component.
                return unlinkat(lease.Fd, n, flags) == 0 ? 0 : LastErrno;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
    {
        if (_options.ReadOnly) return Errno.EROFS;
        if ((flags & ~RenameFlagsMask) != 0) return Errno.EINVAL;
        int err = CheckName(oldName);
        if (err == 0) err = CheckName(newName);
        if (err != 0) return err;
        var a = new FdLease();
        var b = new FdLease();
        try
        {
            if (!TryInode(oldParent, out _, ref a) || !TryInode(newParent, out _, ref b)) return Errno.EBADF;
            Span<byte> o = stackalloc byte[NameMax + 1];
            Span<byte> n = stackalloc byte[NameMax + 1];
            ToCString(oldName, o);
            ToCString(newName, n);
            fixed (byte* op = o)
            fixed (byte* np = n)
            {
                // SAFETY: single NUL-terminated components relative to directory fds in the shared tree.
                return renameat2(a.Fd, op, b.Fd, np, flags) == 0 ? 0 : LastErrno;
            }
        }
        finally
        {
            b.Dispose();
            a.Dispose();
        }
    }

    public unsafe int Link(in FuseContext ctx, ulong nodeId, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntry entry)
    {
        entry = default;
        if (_options.ReadOnly) return Errno.EROFS;
        int err = CheckName(newName);
        if (err != 0) return err;
        var a = new FdLease();
        var b = new FdLease();
        try
        {
            if (!TryInode(nodeId, out Inode inode, ref a) || !TryInode(newParent, out Inode p, ref b)) return Errno.EBADF;
            if (inode.Type == S_IFDIR) return Errno.EPERM;
            Span<byte> n = stackalloc byte[NameMax + 1];
            ToCString(newName, n);
            fixed (byte* np = n)
            fixed (byte* empty = "\0"u8)
            {
                // SAFETY: AT_EMPTY_PATH links the O_PATH fd's inode itself; the new name is a single component.
                if (linkat(a.Fd, empty, b.Fd, np, AT_EMPTY_PATH) != 0) return LastErrno;
            }
            return DoLookup(p, b.Fd, newName, out entry);
        }
        finally
        {
            b.Dispose();
            a.Dispose();
        }
    }
}
