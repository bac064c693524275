// Passthrough: serves a host directory to a FUSE client, like virtiofsd's passthrough filesystem.
//
// Every inode the guest knows is an O_PATH fd keyed by the host (st_dev, st_ino), with the kernel's lookup count;
// FORGET drops the count and closes the fd at zero. Every operation is relative to such an fd (*at() calls with
// O_NOFOLLOW / AT_SYMLINK_NOFOLLOW / AT_EMPTY_PATH, or a re-open of /proc/self/fd/N), with names that are single
// path components, so no sequence of requests can name anything outside the shared directory and no host symlink is
// ever followed. Special files (fifos, devices, sockets) are never opened on the host.
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>An fd closed when the last user releases it (FORGET may race with operations on the same inode).</summary>
internal sealed class FdHandle : SafeHandle
{
    public FdHandle(int fd) : base(-1, true) => SetHandle(fd);
    public override bool IsInvalid => handle < 0;
    protected override bool ReleaseHandle() => close((int)handle) == 0;
}

public sealed unsafe class PassthroughFileSystem : IFileSystem, IDisposable
{
    private const int NameMax = 255;
    private const uint RenameFlagsMask = 1 | 2 | 4; // RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT

    private sealed class Inode
    {
        public required ulong Id;
        public required FdHandle Fd;
        public required ulong Dev;
        public required ulong Ino;
        public required uint Type;
        public required ulong MountId;
        public long Refcount;
        /// <summary>
        /// POSIX locks: one open file description per guest lock owner, so OFD locks behave like process-owned
        /// fcntl locks in the guest (same owner never conflicts with itself; FLUSH by the owner drops its locks).
        /// </summary>
        public Dictionary<ulong, FdHandle>? LockFds;
    }

    private sealed class OpenHandle
    {
        public required FdHandle Fd;
        public required ulong NodeId;
        public readonly Lock DirLock = new();
    }

    private readonly PassthroughOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _inodeLock = new();
    private readonly Dictionary<ulong, Inode> _byId = new();
    private readonly Dictionary<(ulong Dev, ulong Ino), Inode> _byKey = new();
    private readonly ConcurrentDictionary<ulong, OpenHandle> _handles = new();
    private readonly TimeSpan _timeout;
    private ulong _nextNodeId = FuseConstants.RootId;
    private long _nextHandle;
    private volatile bool _writeback;
    private volatile bool _killPrivV2;
    private volatile bool _submounts;

    /// <summary>
    /// Opens the shared directory. Sets the process umask to 0 (as virtiofsd does): the kernel already applied the
    /// guest's umask to every mode it sends, and the host's must not be applied a second time.
    /// </summary>
    public PassthroughFileSystem(PassthroughOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options;
        _logger = logger;
        _timeout = options.Cache switch
        {
            CachePolicy.Never => TimeSpan.Zero,
            CachePolicy.Auto => TimeSpan.FromSeconds(1),
            _ => TimeSpan.FromSeconds(86400),
        };
        umask(0);

        byte[] path = System.Text.Encoding.UTF8.GetBytes(Path.GetFullPath(options.SharedDir) + "\0");
        int fd;
        fixed (byte* p = path)
        {
            // SAFETY: NUL-terminated pinned path.
            fd = openat(AT_FDCWD, p, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
        }
        if (fd < 0)
        {
            throw new IOException($"cannot open shared directory {options.SharedDir}: errno {LastErrno}");
        }
        Statx st;
        if (StatFd(fd, &st) != 0)
        {
            int e = LastErrno;
            close(fd);
            throw new IOException($"cannot stat shared directory {options.SharedDir}: errno {e}");
        }
        var root = new Inode
        {
            Id = FuseConstants.RootId, Fd = new FdHandle(fd), Dev = Dev(st), Ino = st.stx_ino,
            Type = st.stx_mode & S_IFMT, MountId = st.stx_mnt_id, Refcount = 2,
        };
        _byId[root.Id] = root;
        _byKey[(root.Dev, root.Ino)] = root;
        PassthroughLog.Started(logger, options.SharedDir, options.Cache, options.ReadOnly, options.Xattr);
    }

    /// <summary>Inodes currently held (the root included); each holds one O_PATH fd.</summary>
    public int InodeCount
    {
        get
        {
            lock (_inodeLock)
            {
                return _byId.Count;
            }
        }
    }

    /// <summary>Open file and directory handles.</summary>
    public int HandleCount => _handles.Count;

    public int Init(FuseInitFlags negotiated)
    {
        _writeback = (negotiated & FuseInitFlags.WritebackCache) != 0;
        _killPrivV2 = (negotiated & FuseInitFlags.HandleKillprivV2) != 0;
        // FUSE_ATTR_SUBMOUNT means nothing to a kernel that did not agree to FUSE_SUBMOUNTS.
        _submounts = _options.AnnounceSubmounts && (negotiated & FuseInitFlags.Submounts) != 0;
        return 0;
    }

    public void Destroy()
    {
        // The session ends: drop every handle and every inode but the root, as virtiofsd does on DESTROY.
        foreach (ulong fh in _handles.Keys)
        {
            if (_handles.TryRemove(fh, out OpenHandle? h)) h.Fd.Dispose();
        }
        lock (_inodeLock)
        {
            foreach (Inode i in _byId.Values.ToArray())
            {
                if (i.Id != FuseConstants.RootId)
                {
                    Remove(i);
                }
            }
        }
    }

    public void Dispose()
    {
        Destroy();
        lock (_inodeLock)
        {
            foreach (Inode i in _byId.Values)
            {
                i.Fd.Dispose();
            }
            _byId.Clear();
            _byKey.Clear();
        }
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    private static ulong Dev(in Statx st) =>
        // glibc makedev encoding; its low 32 bits are the kernel's new_encode_dev used by fuse_attr.rdev.
        ((ulong)(st.stx_dev_minor & 0xff)) | ((ulong)(st.stx_dev_major & 0xfff) << 8)
        | ((ulong)(st.stx_dev_minor & ~0xffu) << 12) | ((ulong)(st.stx_dev_major & ~0xfffu) << 32);

    private static uint Rdev(in Statx st) =>
        (st.stx_rdev_minor & 0xff) | ((st.stx_rdev_major & 0xfff) << 8) | ((st.stx_rdev_minor & ~0xffu) << 12);

    private static int StatFd(int fd, Statx* st)
    {
        // SAFETY: "" with AT_EMPTY_PATH stats the fd itself (O_PATH fds allowed); st points to a 256-byte statx.
        // The empty path is spelled "\0"u8 on purpose: fixed over an empty span yields NULL, which fchownat/linkat/
        // readlinkat reject with EFAULT (and utimensat would treat as "operate on the fd", refused for O_PATH).
        fixed (byte* empty = "\0"u8)
        {
            return statx(fd, empty, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID, st);
        }
    }

    private static FuseAttr ToAttr(in Statx st) => new()
    {
        ino = st.stx_ino,
        size = st.stx_size,
        blocks = st.stx_blocks,
        atime = (ulong)st.stx_atime.tv_sec,
        atimensec = st.stx_atime.tv_nsec,
        mtime = (ulong)st.stx_mtime.tv_sec,
        mtimensec = st.stx_mtime.tv_nsec,
        ctime = (ulong)st.stx_ctime.tv_sec,
        ctimensec = st.stx_ctime.tv_nsec,
        mode = st.stx_mode,
        nlink = st.stx_nlink,
        uid = st.stx_uid,
        gid = st.stx_gid,
        rdev = Rdev(st),
        blksize = st.stx_blksize,
    };

    /// <summary>A single path component: no '/', not empty, not longer than NAME_MAX, not "." or "..".</summary>
    private static int CheckName(ReadOnlySpan<byte> name)
    {
        if (name.Length == 0 || name.Contains((byte)'/') || name.SequenceEqual("."u8) || name.SequenceEqual(".."u8))
        {
            return Errno.EINVAL;
        }
        return name.Length > NameMax ? Errno.ENAMETOOLONG : 0;
    }

    /// <summary>Copies a checked name into a NUL-terminated stack buffer (at least 256 bytes).</summary>
    private static void ToCString(ReadOnlySpan<byte> name, Span<byte> dest)
    {
        name.CopyTo(dest);
        dest[name.Length] = 0;
    }

    /// <summary>"/proc/self/fd/N": re-opens an O_PATH fd's inode without a path walk through the shared tree.</summary>
    private static void ProcPath(int fd, Span<byte> dest)
    {
        "/proc/self/fd/"u8.CopyTo(dest);
        fd.TryFormat(dest[14..], out int n, default, System.Globalization.CultureInfo.InvariantCulture);
        dest[14 + n] = 0;
    }

    /// <summary>Holds a reference on an fd so a concurrent FORGET/RELEASE cannot close (and recycle) it mid-call.</summary>
    private ref struct FdLease
    {
        private SafeHandle? _handle;
        public int Fd;

        public bool Take(SafeHandle handle)
        {
            bool added = false;
            try
            {
                handle.DangerousAddRef(ref added);
            }
            catch (ObjectDisposedException)
            {
                return false;
            }
            _handle = handle;
            Fd = (int)handle.DangerousGetHandle();
            return true;
        }

        public void Dispose()
        {
            _handle?.DangerousRelease();
            _handle = null;
        }
    }

    private bool TryInode(ulong id, out Inode inode, ref FdLease lease)
    {
        lock (_inodeLock)
        {
            if (!_byId.TryGetValue(id, out inode!))
            {
                return false;
            }
        }
        return lease.Take(inode.Fd);
    }

    private bool TryHandle(ulong fh, out OpenHandle handle, ref FdLease lease) =>
        _handles.TryGetValue(fh, out handle!) && lease.Take(handle.Fd);

    private ulong AddHandle(int fd, ulong nodeId)
    {
        ulong id = (ulong)Interlocked.Increment(ref _nextHandle);
        _handles[id] = new OpenHandle { Fd = new FdHandle(fd), NodeId = nodeId };
        return id;
    }

    /// <summary>Creates as the guest's caller: fsuid/fsgid are per-thread on Linux, restored on dispose.</summary>
    private readonly ref struct Credentials
    {
        private readonly bool _switched;
        private readonly ILogger? _logger;

        public Credentials(in FuseContext ctx, ILogger logger)
        {
            _logger = logger;
            _switched = ctx.Uid != 0 || ctx.Gid != 0;
            if (_switched)
            {
                setfsgid(ctx.Gid);
                setfsuid(ctx.Uid);
            }
        }

        public void Dispose()
        {
            if (_switched)
            {
                setfsuid(0);
                setfsgid(0);
                if (setfsuid(unchecked((uint)-1)) != 0 && _logger is not null)
                {
                    PassthroughLog.CredentialRestoreFailed(_logger);
                }
            }
        }
    }

    private FuseOpenResult OpenResult(ulong handle, bool directory)
    {
        uint flags = _options.Cache switch
        {
            CachePolicy.Never => directory ? 0 : FuseConstants.FOPEN_DIRECT_IO,
            CachePolicy.Always => directory ? FuseConstants.FOPEN_CACHE_DIR | FuseConstants.FOPEN_KEEP_CACHE : FuseConstants.FOPEN_KEEP_CACHE,
            _ => 0,
        };
        return new FuseOpenResult { Handle = handle, OpenFlags = flags };
    }

    // ---- inode table --------------------------------------------------------------------------------------------

    /// <summary>Looks a checked name up under a parent fd and counts one lookup.</summary>
    private int DoLookup(Inode parent, int parentFd, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        Span<byte> cname = stackalloc byte[NameMax + 1];
        ToCString(name, cname);
        int fd;
        fixed (byte* p = cname)
        {
            // SAFETY: single NUL-terminated component; O_NOFOLLOW keeps a symlink as itself.
            fd = openat(parentFd, p, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
        }
        if (fd < 0)
        {
            return LastErrno;
        }
        Statx st;
        if (StatFd(fd, &st) != 0)
        {
            int e = LastErrno;
            close(fd);
            return e;
        }
        return Register(fd, st, parent.MountId, out entry);
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
        entry = new FuseEntry { NodeId = id, Attr = ToAttr(st), EntryTimeout = _timeout, AttrTimeout = _timeout };
        if (_submounts && st.stx_mnt_id != parentMountId)
        {
            entry.Attr.flags |= FuseConstants.FUSE_ATTR_SUBMOUNT;
        }
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
                if (StatFd(lease.Fd, &st) != 0) return LastErrno;
                int fd2 = dup(lease.Fd);
                if (fd2 < 0) return LastErrno;
                return Register(fd2, st, p.MountId, out entry);
            }
            if (dotdot)
            {
                byte* z = stackalloc byte[3] { (byte)'.', (byte)'.', 0 };
                // SAFETY: ".." relative to a directory fd inside the shared tree (not the root: handled above).
                int fd = openat(lease.Fd, z, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
                if (fd < 0) return LastErrno;
                Statx st;
                if (StatFd(fd, &st) != 0)
                {
                    int e = LastErrno;
                    close(fd);
                    return e;
                }
                return Register(fd, st, p.MountId, out entry);
            }
            int err = CheckName(name);
            return err != 0 ? err : DoLookup(p, lease.Fd, name, out entry);
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

    // ---- attributes ---------------------------------------------------------------------------------------------

    public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = _timeout;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out _, ref lease)) return Errno.EBADF;
            Statx st;
            if (StatFd(lease.Fd, &st) != 0) return LastErrno;
            attr = ToAttr(st);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int SetAttr(in FuseContext ctx, ulong nodeId, in FuseSetattrIn s, out FuseAttr attr, out TimeSpan timeout)
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
                    // SAFETY: empty path + AT_EMPTY_PATH changes the O_PATH fd's inode itself, never following links.
                    if (fchownat(lease.Fd, empty, uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return LastErrno;
                }
                if ((s.valid & FuseConstants.FATTR_SIZE) != 0)
                {
                    if (s.size > long.MaxValue) return Errno.EFBIG;
                    if (inode.Type != S_IFREG) return inode.Type == S_IFDIR ? Errno.EISDIR : Errno.EINVAL;
                    int rc = hfd >= 0 ? ftruncate(hfd, (long)s.size) : truncate(pp, (long)s.size); // SAFETY: as above.
                    if (rc != 0) return LastErrno;
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
            if (StatFd(lease.Fd, &st) != 0) return LastErrno;
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

    /// <summary>HANDLE_KILLPRIV_V2: we run privileged, so clear suid (and sgid with group-exec) ourselves.</summary>
    private static void KillSuidGid(int pathFd)
    {
        Statx st;
        if (StatFd(pathFd, &st) != 0) return;
        uint mode = st.stx_mode;
        uint kill = S_ISUID | ((mode & S_IXGRP) != 0 ? S_ISGID : 0);
        if ((mode & kill) == 0 || (mode & S_IFMT) != S_IFREG) return;
        Span<byte> proc = stackalloc byte[32];
        ProcPath(pathFd, proc);
        fixed (byte* pp = proc)
        {
            // SAFETY: NUL-terminated /proc path to a regular file.
            fchmodat(AT_FDCWD, pp, mode & 0xFFF & ~kill, 0);
        }
    }

    public int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length)
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

    // ---- namespace mutations ------------------------------------------------------------------------------------

    /// <summary>Runs a creating call as the caller under the parent, then looks the result up.</summary>
    private int CreateNode(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry, int kind, uint mode, ulong rdev, ReadOnlySpan<byte> target)
    {
        entry = default;
        if (_options.ReadOnly) return Errno.EROFS;
        int err = CheckName(name);
        if (err != 0) return err;
        var lease = new FdLease();
        try
        {
            if (!TryInode(parent, out Inode p, ref lease)) return Errno.EBADF;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            ToCString(name, cname);
            int rc;
            using (new Credentials(ctx, _logger))
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
            return DoLookup(p, lease.Fd, name, out entry);
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry) =>
        CreateNode(ctx, parent, name, out entry, 0, mode, 0, default);

    public int MkNod(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntry entry) =>
        CreateNode(ctx, parent, name, out entry, 1, mode, rdev, default);

    public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        return target.Length == 0 || target.Length >= 4096 ? Errno.ENAMETOOLONG : CreateNode(ctx, parent, name, out entry, 2, 0, 0, target);
    }

    public int Unlink(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => Remove(parent, name, 0);
    public int RmDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => Remove(parent, name, AT_REMOVEDIR);

    private int Remove(ulong parent, ReadOnlySpan<byte> name, int flags)
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

    public int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
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

    public int Link(in FuseContext ctx, ulong nodeId, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntry entry)
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

    // ---- files --------------------------------------------------------------------------------------------------

    private int SanitizeOpenFlags(uint guestFlags)
    {
        int flags = (int)guestFlags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_DIRECT | O_PATH);
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
            if (_killPrivV2 && (fuseOpenFlags & FuseConstants.FUSE_OPEN_KILL_SUIDGID) != 0 && ((int)flags & O_TRUNC) != 0)
            {
                KillSuidGid(lease.Fd);
            }
            result = OpenResult(AddHandle(fd, nodeId), false);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    private static int ReopenFd(int pathFd, int flags)
    {
        Span<byte> proc = stackalloc byte[32];
        ProcPath(pathFd, proc);
        fixed (byte* pp = proc)
        {
            // SAFETY: the /proc magic link resolves to the inode itself, not through any path in the shared tree.
            return openat(AT_FDCWD, pp, flags, 0);
        }
    }

    public int Create(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint flags, uint umask, uint fuseOpenFlags,
        out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        if (_options.ReadOnly) return Errno.EROFS;
        int err = CheckName(name);
        if (err != 0) return err;
        var lease = new FdLease();
        try
        {
            if (!TryInode(parent, out Inode p, ref lease)) return Errno.EBADF;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            ToCString(name, cname);
            int open = (SanitizeOpenFlags(flags) | O_CREAT | O_NOFOLLOW) | ((int)flags & O_EXCL);
            int fd;
            using (new Credentials(ctx, _logger))
            {
                fixed (byte* n = cname)
                {
                    // SAFETY: single NUL-terminated component; O_NOFOLLOW refuses to create through a symlink.
                    fd = openat(lease.Fd, n, open, mode & 0xFFF);
                }
                if (fd < 0) return LastErrno;
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

    public int TmpFile(in FuseContext ctx, ulong parent, uint mode, uint flags, uint umask, uint fuseOpenFlags, out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            if (!TryInode(parent, out Inode p, ref lease)) return Errno.EBADF;
            int open = (SanitizeOpenFlags(flags) & ~O_ACCMODE & ~O_DIRECTORY) | O_TMPFILE
                | (((int)flags & O_ACCMODE) == O_RDONLY ? O_RDWR : (int)flags & O_ACCMODE);
            int fd;
            using (new Credentials(ctx, _logger))
            {
                byte* dot = stackalloc byte[2] { (byte)'.', 0 };
                fd = openat(lease.Fd, dot, open, mode & 0xFFF); // SAFETY: "." of a directory fd.
                if (fd < 0) return LastErrno;
            }
            int pathFd = ReopenFd(fd, O_PATH | O_CLOEXEC);
            Statx st;
            if (pathFd < 0 || StatFd(pathFd, &st) != 0)
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
            long total = 0;
            fixed (IoSegment* segs = destination)
            {
                for (int i = 0; i < destination.Length; i += IOV_MAX)
                {
                    int count = Math.Min(IOV_MAX, destination.Length - i);
                    long want = 0;
                    for (int j = i; j < i + count; j++) want += segs[j].Length;
                    // SAFETY: IoSegment has iovec layout; the segments describe live reply memory for this request.
                    nint n = preadv(lease.Fd, segs + i, count, (long)offset + total);
                    if (n < 0)
                    {
                        if (total > 0) break;
                        return LastErrno;
                    }
                    total += n;
                    if (n < want) break; // end of file
                }
            }
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
            if (_killPrivV2 && (writeFlags & FuseConstants.FUSE_WRITE_KILL_SUIDGID) != 0 && TryInode(h.NodeId, out _, ref ilease))
            {
                KillSuidGid(ilease.Fd);
            }
            long total = 0;
            fixed (IoSegment* segs = source)
            {
                for (int i = 0; i < source.Length; i += IOV_MAX)
                {
                    int count = Math.Min(IOV_MAX, source.Length - i);
                    long want = 0;
                    for (int j = i; j < i + count; j++) want += segs[j].Length;
                    // SAFETY: IoSegment has iovec layout; the segments describe live request memory.
                    nint n = pwritev(lease.Fd, segs + i, count, (long)offset + total);
                    if (n < 0)
                    {
                        if (total > 0) break;
                        return LastErrno;
                    }
                    total += n;
                    if (n < want) break;
                }
            }
            bytesWritten = (int)total;
            return 0;
        }
        finally
        {
            ilease.Dispose();
            lease.Dispose();
        }
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

    // ---- directories --------------------------------------------------------------------------------------------

    public int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result)
    {
        result = default;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
            if (inode.Type != S_IFDIR) return Errno.ENOTDIR;
            int fd;
            byte* dot = stackalloc byte[2] { (byte)'.', 0 };
            fd = openat(lease.Fd, dot, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0); // SAFETY: "." of a directory fd.
            if (fd < 0) return LastErrno;
            result = OpenResult(AddHandle(fd, nodeId), true);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        var lease = new FdLease();
        var ilease = new FdLease();
        try
        {
            if (!TryHandle(handle, out OpenHandle h, ref lease)) return Errno.EBADF;
            Inode? dir = null;
            if (writer.IsPlus && !TryInode(h.NodeId, out dir, ref ilease)) return Errno.EBADF;
            const int BufferSize = 8192;
            byte* buf = stackalloc byte[BufferSize];
            lock (h.DirLock)
            {
                // getdents64 d_off values are stable cookies for this directory: seek to the one the kernel passed back.
                if (lseek(lease.Fd, (long)Math.Min(offset, long.MaxValue), 0) < 0) return LastErrno;
                while (true)
                {
                    nint n = getdents64(lease.Fd, buf, BufferSize); // SAFETY: buf has BufferSize bytes.
                    if (n < 0) return LastErrno;
                    if (n == 0) return 0;
                    for (nint pos = 0; pos < n;)
                    {
                        // linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
                        byte* rec = buf + pos;
                        ulong ino = *(ulong*)rec;
                        ulong off = *(ulong*)(rec + 8);
                        ushort reclen = *(ushort*)(rec + 16);
                        byte type = rec[18];
                        if (reclen < 20 || pos + reclen > n) return Errno.EIO;
                        var name = new ReadOnlySpan<byte>(rec + 19, reclen - 19);
                        int nul = name.IndexOf((byte)0);
                        if (nul >= 0) name = name[..nul];
                        pos += reclen;
                        if (!Emit(writer, dir, ilease.Fd, ino, off, type, name)) return 0;
                    }
                }
            }
        }
        finally
        {
            ilease.Dispose();
            lease.Dispose();
        }
    }

    /// <summary>Emits one entry; false when the reply is full (the entry is left for the next call).</summary>
    private bool Emit(DirectoryWriter writer, Inode? dir, int dirFd, ulong ino, ulong off, uint type, ReadOnlySpan<byte> name)
    {
        bool dots = name.SequenceEqual("."u8) || name.SequenceEqual(".."u8);
        if (!writer.IsPlus || dots)
        {
            return writer.TryAdd(ino, off, type, name);
        }
        if (!writer.Fits(name.Length))
        {
            return false;
        }
        if (CheckName(name) != 0 || DoLookup(dir!, dirFd, name, out FuseEntry e) != 0)
        {
            return true; // vanished since getdents: skip it
        }
        if (!writer.TryAddPlus(e, off, type, name))
        {
            Forget(default, e.NodeId, 1); // cannot happen after Fits, but never leak the lookup
            return false;
        }
        return true;
    }

    public int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags) => Release(ctx, nodeId, handle, flags, 0, 0);

    public int FsyncDir(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => Fsync(ctx, nodeId, handle, dataSync);

    // ---- filesystem-wide ----------------------------------------------------------------------------------------

    public int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
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
            if (StatFd(lease.Fd, &st) != 0) return LastErrno;
            if (_options.ReadOnly && (mask & 2) != 0 && (st.stx_mode & S_IFMT) is S_IFREG or S_IFDIR) return Errno.EROFS;
            if (mask == 0) return 0; // F_OK
            uint mode = st.stx_mode;
            if (ctx.Uid == 0)
            {
                // root: everything but execute of a file with no execute bit at all.
                return (mask & 1) != 0 && (mode & S_IFMT) != S_IFDIR && (mode & 0x49) == 0 ? Errno.EACCES : 0;
            }
            uint bits = ctx.Uid == st.stx_uid ? (mode >> 6) & 7 : ctx.Gid == st.stx_gid ? (mode >> 3) & 7 : mode & 7;
            return (mask & 7 & ~bits) != 0 ? Errno.EACCES : 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int SyncFs(in FuseContext ctx, ulong nodeId)
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

    // ---- xattrs -------------------------------------------------------------------------------------------------

    /// <summary>Resolves the path used for xattr calls: /proc/self/fd/N of a file or directory.</summary>
    private int XattrTarget(ulong nodeId, ref FdLease lease, scoped Span<byte> proc)
    {
        if (!_options.Xattr) return Errno.ENOSYS; // the kernel then stops sending xattr requests (fc->no_xattr)
        if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
        // Following the magic link of a symlink or special file would act on it without opening it only for regular
        // files and directories; the rest are refused like a filesystem without xattr support on them.
        if (inode.Type is not (S_IFREG or S_IFDIR)) return Errno.EOPNOTSUPP;
        ProcPath(lease.Fd, proc);
        return 0;
    }

    private static bool XattrName(ReadOnlySpan<byte> name, Span<byte> dest)
    {
        if (name.Length is 0 or > NameMax) return false;
        ToCString(name, dest);
        return true;
    }

    public int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            if (!XattrName(name, cname)) return Errno.ERANGE;
            fixed (byte* pp = proc)
            fixed (byte* np = cname)
            fixed (byte* vp = value)
            {
                nint n = getxattr(pp, np, vp, (nuint)value.Length); // SAFETY: NUL-terminated strings; vp has value.Length bytes.
                if (n < 0) return LastErrno;
                length = (int)n;
                return 0;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            fixed (byte* pp = proc)
            fixed (byte* lp = list)
            {
                nint n = listxattr(pp, lp, (nuint)list.Length); // SAFETY: lp has list.Length bytes.
                if (n < 0) return LastErrno;
                length = (int)n;
                return 0;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            if (!XattrName(name, cname)) return Errno.ERANGE;
            fixed (byte* pp = proc)
            fixed (byte* np = cname)
            fixed (byte* vp = value)
            {
                // SAFETY: NUL-terminated strings; vp has value.Length bytes.
                return setxattr(pp, np, vp, (nuint)value.Length, (int)flags) == 0 ? 0 : LastErrno;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            if (!XattrName(name, cname)) return Errno.ERANGE;
            fixed (byte* pp = proc)
            fixed (byte* np = cname)
            {
                return removexattr(pp, np) == 0 ? 0 : LastErrno; // SAFETY: NUL-terminated strings.
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    // ---- locks, allocation, seeking, copying --------------------------------------------------------------------

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

    public int GetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, out FuseFileLock result)
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

    public int SetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, bool sleep)
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

    public int CopyFileRange(in FuseContext ctx, ulong nodeIdIn, ulong handleIn, ulong offsetIn, ulong nodeIdOut, ulong handleOut,
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
