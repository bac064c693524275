using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>GETATTR, SETATTR, READLINK.</summary>
public sealed partial class PassthroughFileSystem
{
    public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = _timeout;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out _, ref lease)) return Errno.EBADF;
            Statx st;
            if (StatFd(lease.Fd, out st) != 0) return LastErrno;
            attr = ToAttr(st);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int SetAttr(in FuseContext ctx, ulong nodeId, in FuseSetattrIn s, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = _timeout;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        var hlease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
            int hfd = -1;
            if ((s.valid & FuseConstants.FATTR_FH) != 0 && TryHandle(s.fh, out OpenHandle h, ref hlease) && h.NodeId == nodeId)
            {
                hfd = hlease.Fd;
            }
            bool regOrDir = inode.Type is S_IFREG or S_IFDIR;
            Span<byte> proc = stackalloc byte[32];
            ProcPath(lease.Fd, proc);
            fixed (byte* pp = proc)
            fixed (byte* empty = "\0"u8)
            {
                if ((s.valid & FuseConstants.FATTR_MODE) != 0)
                {
                    // chmod of a symlink is meaningless on Linux; specials are changed through the magic link, never opened.
                    int rc = hfd >= 0 ? fchmod(hfd, s.mode & 0xFFF)
                        : inode.Type == S_IFLNK ? 0
                        : fchmodat(AT_FDCWD, pp, s.mode & 0xFFF, 0); // SAFETY: NUL-terminated /proc path.
                    if (rc != 0) return LastErrno;
                }
                if ((s.valid & (FuseConstants.FATTR_UID | FuseConstants.FATTR_GID)) != 0)
                {
                    uint uid = (s.valid & FuseConstants.FATTR_UID) != 0 ? s.uid : uint.MaxValue;
                    uint gid = (s.valid & FuseConstants.FATTR_GID) != 0 ? s.gid : uint.MaxValue;
                    // --translate-uid/gid: the guest names guest ids (virtiofsd setattr: map_guest_uid, EPERM if forbidden).
                    if (uid != uint.MaxValue && _options.Uids is { } um && !um.TryToHost(uid, out uid)) return Errno.EPERM;
                    if (gid != uint.MaxValue && _options.Gids is { } gm && !gm.TryToHost(gid, out gid)) return Errno.EPERM;
                    // SAFETY: empty path + AT_EMPTY_PATH changes the O_PATH fd's inode itself, never following links.
                    if (fchownat(lease.Fd, empty, uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return LastErrno;
                    // The host dropped suid (and sgid with group-exec) and security.capability itself (chown_common
                    // passes ATTR_KILL_SUID/SGID/PRIV, also for root), but not a capability the map renamed.
                    if (regOrDir) DropMappedCapability(lease.Fd);
                }
                if ((s.valid & FuseConstants.FATTR_SIZE) != 0)
                {
                    if (s.size > long.MaxValue) return Errno.EFBIG;
                    if (inode.Type != S_IFREG) return inode.Type == S_IFDIR ? Errno.EISDIR : Errno.EINVAL;
                    int rc = hfd >= 0 ? ftruncate(hfd, (long)s.size) : truncate(pp, (long)s.size); // SAFETY: as above.
                    if (rc != 0) return LastErrno;
                    DropMappedCapability(lease.Fd);
                }
                if ((s.valid & (FuseConstants.FATTR_ATIME | FuseConstants.FATTR_MTIME)) != 0)
                {
                    Timespec* times = stackalloc Timespec[2];
                    times[0] = TimeArg(s.valid, FuseConstants.FATTR_ATIME, FuseConstants.FATTR_ATIME_NOW, s.atime, s.atimensec);
                    times[1] = TimeArg(s.valid, FuseConstants.FATTR_MTIME, FuseConstants.FATTR_MTIME_NOW, s.mtime, s.mtimensec);
                    int rc = hfd >= 0 ? futimens(hfd, times) : utimensat(lease.Fd, empty, times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
                    if (rc != 0) return LastErrno;
                }
                if ((s.valid & FuseConstants.FATTR_KILL_SUIDGID) != 0 && _killPrivV2 && regOrDir)
                {
                    KillSuidGid(lease.Fd);
                }
            }
            Statx st;
            if (StatFd(lease.Fd, out st) != 0) return LastErrno;
            attr = ToAttr(st);
            return 0;
        }
        finally
        {
            hlease.Dispose();
            lease.Dispose();
        }
    }

    private static Timespec TimeArg(uint valid, uint set, uint now, ulong sec, uint nsec)
    {
        if ((valid & set) == 0) return new Timespec { tv_nsec = UTIME_OMIT };
        if ((valid & now) != 0) return new Timespec { tv_nsec = UTIME_NOW };
        return new Timespec { tv_sec = (long)sec, tv_nsec = nsec % 1_000_000_000 };
    }

    /// <summary>
    /// FUSE_HANDLE_KILLPRIV_V2: the guest kernel sets FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID or
    /// FUSE_OPEN_KILL_SUIDGID when its caller lacks CAP_FSETID, and leaves the clearing to us. We write as root with
    /// CAP_FSETID, so the host kernel would keep the bits: clear them as the kernel would for that caller (fuse.h: "suid
    /// is always killed; sgid only if the file has group execute permission", should_remove_suid), regular files only.
    /// A set-group-ID file without group-exec is the mandatory-locking marker and keeps its bit. A file capability
    /// under its own name the host drops itself on write/truncate (cap_inode_need_killpriv does not look at the writer).
    /// </summary>
    private static void KillSuidGid(int pathFd)
    {
        Statx st;
        if (StatFd(pathFd, out st) != 0 || (st.stx_mode & S_IFMT) != S_IFREG) return;
        ClearMode(pathFd, S_ISUID | ((st.stx_mode & S_IXGRP) != 0 ? S_ISGID : 0), st.stx_mode);
    }

    /// <summary>Clears <paramref name="bits"/> from the mode of a regular file or directory (nothing to do when none is set).</summary>
    private static unsafe void ClearMode(int pathFd, uint bits, uint mode = uint.MaxValue)
    {
        if (mode == uint.MaxValue)
        {
            Statx st;
            if (StatFd(pathFd, out st) != 0) return;
            mode = st.stx_mode;
        }
        if ((mode & bits) == 0 || (mode & S_IFMT) is not (S_IFREG or S_IFDIR)) return;
        Span<byte> name = stackalloc byte[32];
        int dir = ProcFdName(pathFd, name);
        fixed (byte* np = name)
        {
            // SAFETY: NUL-terminated name of the magic link of a regular file or directory, relative to dir.
            fchmodat(dir, np, mode & 0xFFF & ~bits, 0);
        }
    }

    public unsafe int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
            if (inode.Type != S_IFLNK) return Errno.EINVAL;
            nint n;
            fixed (byte* b = buffer)
            fixed (byte* empty = "\0"u8)
            {
                // SAFETY: empty path reads the O_PATH symlink itself; b has buffer.Length bytes.
                n = readlinkat(lease.Fd, empty, b, (nuint)buffer.Length);
            }
            if (n < 0) return LastErrno;
            length = (int)n;
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }
}
