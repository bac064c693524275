using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>STATFS, ACCESS, SYNCFS.</summary>
public sealed partial class PassthroughFileSystem
{
    public unsafe int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        stat = default;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out _, ref lease)) return Errno.EBADF;
            StatVfs v;
            if (fstatvfs(lease.Fd, &v) != 0) return LastErrno; // SAFETY: fstatfs accepts O_PATH fds (Linux >= 3.12).
            stat = new FuseKstatfs
            {
                blocks = v.f_blocks, bfree = v.f_bfree, bavail = v.f_bavail, files = v.f_files, ffree = v.f_ffree,
                bsize = (uint)v.f_bsize, namelen = (uint)v.f_namemax, frsize = (uint)v.f_frsize,
            };
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int Access(in FuseContext ctx, ulong nodeId, uint mask)
    {
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out _, ref lease)) return Errno.EBADF;
            Statx st;
            if (StatFd(lease.Fd, out st) != 0) return LastErrno;
            if (_options.ReadOnly && (mask & 2) != 0 && (st.stx_mode & S_IFMT) is S_IFREG or S_IFDIR) return Errno.EROFS;
            if (mask == 0) return 0; // F_OK
            uint mode = st.stx_mode;
            if (!TryHostCaller(ctx, out FuseContext caller)) return Errno.EPERM;
            if (caller.Uid == 0)
            {
                // root: everything but execute of a file with no execute bit at all.
                return (mask & 1) != 0 && (mode & S_IFMT) != S_IFDIR && (mode & 0x49) == 0 ? Errno.EACCES : 0;
            }
            uint bits = caller.Uid == st.stx_uid ? (mode >> 6) & 7 : caller.Gid == st.stx_gid ? (mode >> 3) & 7 : mode & 7;
            return (mask & 7 & ~bits) != 0 ? Errno.EACCES : 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int SyncFs(in FuseContext ctx, ulong nodeId)
    {
        var lease = new FdLease();
        try
        {
            if (!TryInode(FuseConstants.RootId, out _, ref lease)) return Errno.EBADF;
            // syncfs needs a real fd (O_PATH is refused): open the root directory briefly.
            byte* dot = stackalloc byte[2] { (byte)'.', 0 };
            int fd = openat(lease.Fd, dot, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0); // SAFETY: "." of the root fd.
            if (fd < 0) return LastErrno;
            int rc = syncfs(fd) == 0 ? 0 : LastErrno;
            close(fd);
            return rc;
        }
        finally
        {
            lease.Dispose();
        }
    }
}
