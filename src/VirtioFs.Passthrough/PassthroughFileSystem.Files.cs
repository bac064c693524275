using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>OPEN, CREATE, TMPFILE, READ, WRITE, FLUSH, RELEASE, FSYNC.</summary>
public sealed partial class PassthroughFileSystem
{
    private int SanitizeOpenFlags(uint guestFlags)
    {
        int flags = (int)guestFlags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_PATH);
        // virtiofsd (passthrough/mod.rs open_inode, do_open): O_DIRECT only with --allow-direct-io, O_NOATIME only
        // with --preserve-noatime.
        if (!_options.AllowDirectIo) flags &= ~O_DIRECT;
        if (!_options.PreserveNoatime) flags &= ~O_NOATIME;
        if (_writeback)
        {
            // With a writeback cache the kernel reads pages of write-only files and does appends itself (virtiofsd).
            if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
            flags &= ~O_APPEND;
        }
        return flags | O_CLOEXEC;
    }

    private static bool Writes(uint flags) => ((int)flags & O_ACCMODE) != O_RDONLY || ((int)flags & O_TRUNC) != 0;

    public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
    {
        result = default;
        if (_options.ReadOnly && Writes(flags)) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
            if (inode.Type == S_IFDIR) return Errno.EISDIR;
            if (inode.Type != S_IFREG) return Errno.ENXIO; // fifos, devices, sockets and links are never opened on the host
            int fd = ReopenFd(lease.Fd, SanitizeOpenFlags(flags));
            if (fd < 0) return LastErrno;
            if (((int)flags & O_TRUNC) != 0)
            {
                if (_killPrivV2 && (fuseOpenFlags & FuseConstants.FUSE_OPEN_KILL_SUIDGID) != 0) KillSuidGid(lease.Fd);
                DropMappedCapability(lease.Fd);
            }
            result = OpenResult(AddHandle(fd, nodeId), false);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    /// <summary>
    /// The mode a create passes to the host. Without FUSE_DONT_MASK the guest kernel already applied its umask. With it
    /// (--posix-acl) the umask is ours to apply, and POSIX.1e says a default ACL on the parent replaces it: the host
    /// applies that ACL itself (our process umask is 0), so the umask is applied only where the parent has none.
    /// virtiofsd sets a per-thread umask around the create instead; .NET threads share one umask, so we ask the parent.
    /// </summary>
    private unsafe uint CreateMode(int parentFd, uint mode, uint umask)
    {
        if (!_dontMask) return mode & 0xFFF;
        Span<byte> proc = stackalloc byte[32];
        ProcPath(parentFd, proc);
        nint n;
        fixed (byte* pp = proc)
        fixed (byte* np = "system.posix_acl_default\0"u8)
        {
            n = getxattr(pp, np, null, 0); // SAFETY: NUL-terminated strings; a size probe writes nothing.
        }
        return n > 0 ? mode & 0xFFF : mode & 0xFFF & ~umask;
    }

    /// <summary>Removes a name just created when finishing it (its security context) failed.</summary>
    private static unsafe void UnlinkNew(int parentFd, ReadOnlySpan<byte> cname, int flags)
    {
        fixed (byte* n = cname)
        {
            unlinkat(parentFd, n, flags); // SAFETY: the NUL-terminated single component created a moment ago.
        }
    }

    private static unsafe int ReopenFd(int pathFd, int flags)
    {
        Span<byte> name = stackalloc byte[32];
        int dir = ProcFdName(pathFd, name);
        fixed (byte* np = name)
        {
            // SAFETY: the /proc magic link resolves to the inode itself, not through any path in the shared tree.
            return openat(dir, np, flags, 0);
        }
    }

    public unsafe int Create(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint flags, uint umask, uint fuseOpenFlags,
        out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        var lease = new FdLease();
        try
        {
            Span<byte> cname = stackalloc byte[NameMax + 1];
            int err = BeginCreate(parent, name, cname, out Inode p, ref lease);
            if (err != 0) return err;
            int open = (SanitizeOpenFlags(flags) | O_CREAT | O_NOFOLLOW) | ((int)flags & O_EXCL);
            uint createMode = CreateMode(lease.Fd, mode, umask);
            int fd;
            bool existed;
            if (!TryHostCaller(ctx, out FuseContext caller)) return Errno.EPERM;
            using (new Credentials(caller, _logger))
            {
                fixed (byte* n = cname)
                {
                    // SAFETY: single NUL-terminated component; O_NOFOLLOW refuses to create through a symlink.
                    // O_EXCL first tells a new file from an existing one: only a new file gets the security context.
                    fd = openat(lease.Fd, n, open | O_EXCL, createMode);
                    existed = fd < 0 && LastErrno == Errno.EEXIST && (open & O_EXCL) == 0;
                    if (existed) fd = openat(lease.Fd, n, open, createMode); // SAFETY: as above.
                }
                if (fd < 0) return LastErrno;
            }
            if (!existed && (err = ApplySecurityContext(ctx, fd)) != 0)
            {
                close(fd);
                UnlinkNew(lease.Fd, cname, 0);
                return err;
            }
            if (existed && ((int)flags & O_TRUNC) != 0)
            {
                // An O_CREAT|O_TRUNC open of an existing file truncates it like OPEN does (fuse_create_open sets
                // FUSE_OPEN_KILL_SUIDGID the same way).
                if (_killPrivV2 && (fuseOpenFlags & FuseConstants.FUSE_OPEN_KILL_SUIDGID) != 0) KillSuidGid(fd);
                DropMappedCapability(fd);
            }
            err = DoLookup(p, lease.Fd, name, out entry);
            if (err != 0)
            {
                close(fd);
                return err;
            }
            result = OpenResult(AddHandle(fd, entry.NodeId), false);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int TmpFile(in FuseContext ctx, ulong parent, uint mode, uint flags, uint umask, uint fuseOpenFlags, out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        if (_options.ReadOnly) return Errno.EROFS;
        int err;
        var lease = new FdLease();
        try
        {
            if (!TryInode(parent, out Inode p, ref lease)) return Errno.EBADF;
            int open = (SanitizeOpenFlags(flags) & ~O_ACCMODE & ~O_DIRECTORY) | O_TMPFILE
                | (((int)flags & O_ACCMODE) == O_RDONLY ? O_RDWR : (int)flags & O_ACCMODE);
            int fd;
            if (!TryHostCaller(ctx, out FuseContext caller)) return Errno.EPERM;
            using (new Credentials(caller, _logger))
            {
                byte* dot = stackalloc byte[2] { (byte)'.', 0 };
                fd = openat(lease.Fd, dot, open, CreateMode(lease.Fd, mode, umask)); // SAFETY: "." of a directory fd.
                if (fd < 0) return LastErrno;
            }
            if ((err = ApplySecurityContext(ctx, fd)) != 0)
            {
                close(fd); // an unnamed file: closing it is removing it
                return err;
            }
            int pathFd = ReopenFd(fd, O_PATH | O_CLOEXEC);
            Statx st;
            if (pathFd < 0 || StatFd(pathFd, out st) != 0)
            {
                int e = LastErrno;
                if (pathFd >= 0) close(pathFd);
                close(fd);
                return e;
            }
            Register(pathFd, st, p.MountId, out entry);
            result = OpenResult(AddHandle(fd, entry.NodeId), false);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        bytesRead = 0;
        if (offset > long.MaxValue) return Errno.EINVAL;
        var lease = new FdLease();
        try
        {
            if (!TryHandle(handle, out _, ref lease)) return Errno.EBADF;
            int err = Transfer(lease.Fd, destination, (long)offset, write: false, out long total);
            if (err != 0) return err;
            bytesRead = (int)total;
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
    {
        bytesWritten = 0;
        if (_options.ReadOnly) return Errno.EROFS;
        if (offset > long.MaxValue) return Errno.EINVAL;
        var lease = new FdLease();
        var ilease = new FdLease();
        try
        {
            if (!TryHandle(handle, out OpenHandle h, ref lease)) return Errno.EBADF;
            if ((_killPrivV2 && (writeFlags & FuseConstants.FUSE_WRITE_KILL_SUIDGID) != 0 || _mappedCapability is not null)
                && TryInode(h.NodeId, out _, ref ilease))
            {
                if (_killPrivV2 && (writeFlags & FuseConstants.FUSE_WRITE_KILL_SUIDGID) != 0) KillSuidGid(ilease.Fd);
                DropMappedCapability(ilease.Fd);
            }
            int err = Transfer(lease.Fd, source, (long)offset, write: true, out long total);
            if (err != 0) return err;
            bytesWritten = (int)total;
            return 0;
        }
        finally
        {
            ilease.Dispose();
            lease.Dispose();
        }
    }

    /// <summary>
    /// preadv or pwritev of <paramref name="segments"/> (IoSegment has iovec layout, so they go as they are) in batches
    /// of IOV_MAX, stopping at a short transfer (end of file, full disk). An error after some bytes moved ends the
    /// transfer with what moved, as read(2)/write(2) would; an error before is returned.
    /// </summary>
    private static unsafe int Transfer(int fd, ReadOnlySpan<IoSegment> segments, long offset, bool write, out long total)
    {
        total = 0;
        fixed (IoSegment* segs = segments)
        {
            for (int i = 0; i < segments.Length; i += IOV_MAX)
            {
                int count = Math.Min(IOV_MAX, segments.Length - i);
                long want = 0;
                for (int j = i; j < i + count; j++) want += segs[j].Length;
                // SAFETY: segs + i .. + count lie inside the pinned span; each segment describes memory its owner keeps
                // mapped for this request (guest buffers of an outstanding chain, or a /dev/fuse buffer).
                nint n = write ? pwritev(fd, segs + i, count, offset + total) : preadv(fd, segs + i, count, offset + total);
                if (n < 0)
                {
                    return total > 0 ? 0 : LastErrno;
                }
                total += n;
                if (n < want) break;
            }
        }
        return 0;
    }

    public int Flush(in FuseContext ctx, ulong nodeId, ulong handle, ulong lockOwner)
    {
        var lease = new FdLease();
        try
        {
            if (!TryHandle(handle, out OpenHandle h, ref lease)) return Errno.EBADF;
            DropLockOwner(h.NodeId, lockOwner);
            // close(2) of a duplicate gives the host filesystem its flush-on-close (NFS, FUSE) like a guest close would.
            int d = dup(lease.Fd);
            if (d < 0) return LastErrno;
            return close(d) == 0 ? 0 : LastErrno;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner)
    {
        if (!_handles.TryRemove(handle, out OpenHandle? h)) return Errno.EBADF;
        h.Fd.Dispose();
        return 0;
    }

    public int Fsync(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync)
    {
        var lease = new FdLease();
        try
        {
            if (!TryHandle(handle, out _, ref lease)) return Errno.EBADF;
            return (dataSync ? fdatasync(lease.Fd) : fsync(lease.Fd)) == 0 ? 0 : LastErrno;
        }
        finally
        {
            lease.Dispose();
        }
    }
}
