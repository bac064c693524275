using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>POSIX and BSD locks, FALLOCATE, LSEEK, COPY_FILE_RANGE.</summary>
public sealed partial class PassthroughFileSystem
{
    private const long OffsetMax = long.MaxValue;

    private static Flock ToFlock(in FuseFileLock lk)
    {
        long start = (long)Math.Min(lk.start, (ulong)OffsetMax);
        long len = lk.end >= (ulong)OffsetMax ? 0 : (long)lk.end - start + 1;
        return new Flock { l_type = (short)lk.type, l_whence = 0, l_start = start, l_len = Math.Max(len, 0) };
    }

    private const int NoOwnerFd = int.MinValue;

    private void DropLockOwner(ulong nodeId, ulong owner)
    {
        Inode? inode;
        lock (_inodeLock)
        {
            _byId.TryGetValue(nodeId, out inode);
        }
        if (inode is null) return;
        FdHandle? fd = null;
        lock (inode)
        {
            if (inode.LockFds is not null && inode.LockFds.Remove(owner, out fd) && inode.LockFds.Count == 0)
            {
                inode.LockFds = null;
            }
        }
        fd?.Dispose(); // closing the owner's open file description releases its locks, as a guest close(2) would
    }

    /// <summary>The owner's lock fd for a regular file, opened on first use; -errno on failure; NoOwnerFd if none and not <paramref name="create"/>.</summary>
    private int LockFd(ulong nodeId, ulong owner, bool create, ref FdLease lease)
    {
        Inode? inode;
        lock (_inodeLock)
        {
            _byId.TryGetValue(nodeId, out inode);
        }
        if (inode is null) return -Errno.EBADF;
        if (inode.Type != S_IFREG) return -Errno.EINVAL;
        lock (inode)
        {
            if (inode.LockFds is not null && inode.LockFds.TryGetValue(owner, out FdHandle? existing))
            {
                return lease.Take(existing) ? lease.Fd : -Errno.EBADF;
            }
            if (!create) return NoOwnerFd;
            var pathLease = new FdLease();
            try
            {
                if (!pathLease.Take(inode.Fd)) return -Errno.EBADF;
                int fd = ReopenFd(pathLease.Fd, O_RDWR | O_CLOEXEC);
                if (fd < 0) fd = ReopenFd(pathLease.Fd, O_RDONLY | O_CLOEXEC);
                if (fd < 0) return -LastErrno;
                var h = new FdHandle(fd);
                (inode.LockFds ??= new Dictionary<ulong, FdHandle>())[owner] = h;
                return lease.Take(h) ? lease.Fd : -Errno.EBADF;
            }
            finally
            {
                pathLease.Dispose();
            }
        }
    }

    public unsafe int GetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, out FuseFileLock result)
    {
        result = default;
        var lease = new FdLease();
        try
        {
            int fd = LockFd(nodeId, owner, create: true, ref lease);
            if (fd < 0) return -fd;
            Flock fl = ToFlock(lk);
            if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return LastErrno; // SAFETY: fl is a struct flock.
            result = new FuseFileLock
            {
                type = (uint)fl.l_type,
                start = (ulong)fl.l_start,
                end = fl.l_type == F_UNLCK ? 0 : fl.l_len == 0 ? (ulong)OffsetMax : (ulong)(fl.l_start + fl.l_len - 1),
                pid = 0,
            };
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int SetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, bool sleep)
    {
        var lease = new FdLease();
        try
        {
            if ((lkFlags & FuseConstants.FUSE_LK_FLOCK) != 0)
            {
                // BSD locks belong to the open file description: the guest's one is this handle.
                if (!TryHandle(handle, out _, ref lease)) return Errno.EBADF;
                int op = lk.type switch { 0 => LOCK_SH, 1 => LOCK_EX, _ => LOCK_UN };
                if (!sleep) op |= LOCK_NB;
                return flock(lease.Fd, op) == 0 ? 0 : LastErrno;
            }
            bool unlock = lk.type == F_UNLCK;
            int fd = LockFd(nodeId, owner, create: !unlock, ref lease);
            if (fd == NoOwnerFd) return 0; // unlocking an owner that holds nothing
            if (fd < 0) return -fd;
            Flock fl = ToFlock(lk);
            // SAFETY: fl is a struct flock. A blocking SETLKW holds this worker until the lock is granted.
            return fcntl(fd, sleep ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0 ? 0 : LastErrno;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int Fallocate(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ulong length, uint mode)
    {
        if (_options.ReadOnly) return Errno.EROFS;
        if (offset > long.MaxValue || length > long.MaxValue) return Errno.EINVAL;
        var lease = new FdLease();
        try
        {
            if (!TryHandle(handle, out _, ref lease)) return Errno.EBADF;
            return fallocate(lease.Fd, (int)mode, (long)offset, (long)length) == 0 ? 0 : LastErrno;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int Lseek(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, uint whence, out ulong result)
    {
        result = 0;
        if (offset > long.MaxValue || whence > 4) return Errno.EINVAL;
        var lease = new FdLease();
        try
        {
            if (!TryHandle(handle, out _, ref lease)) return Errno.EBADF;
            long r = lseek(lease.Fd, (long)offset, (int)whence);
            if (r < 0) return LastErrno;
            result = (ulong)r;
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int CopyFileRange(in FuseContext ctx, ulong nodeIdIn, ulong handleIn, ulong offsetIn, ulong nodeIdOut, ulong handleOut,
        ulong offsetOut, ulong length, ulong flags, out ulong copied)
    {
        copied = 0;
        if (_options.ReadOnly) return Errno.EROFS;
        if (offsetIn > long.MaxValue || offsetOut > long.MaxValue || flags > uint.MaxValue) return Errno.EINVAL;
        var a = new FdLease();
        var b = new FdLease();
        try
        {
            if (!TryHandle(handleIn, out _, ref a) || !TryHandle(handleOut, out _, ref b)) return Errno.EBADF;
            long oi = (long)offsetIn, oo = (long)offsetOut;
            // SAFETY: offsets are locals; the kernel copies between the two handles' files.
            nint n = copy_file_range(a.Fd, &oi, b.Fd, &oo, (nuint)Math.Min(length, int.MaxValue), (uint)flags);
            if (n < 0) return LastErrno;
            copied = (ulong)n;
            return 0;
        }
        finally
        {
            b.Dispose();
            a.Dispose();
        }
    }
}
