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

public sealed unsafe partial class PassthroughFileSystem : IFileSystem, IDisposable
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

        // Directory stream state (under DirLock), like the buffer of a DIR*: the last getdents64 block, where the
        // next unsent entry starts in it, and the offset cookie the kernel will send to continue right there.
        public byte[]? DirBuffer;
        public int DirLength;
        public int DirPosition;
        public ulong DirNextOffset;
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
    private volatile bool _posixAcl;
    private volatile bool _dontMask;
    private volatile bool _securityLabel;
    /// <summary>The NUL-terminated host name security.capability maps to when the xattr map renames it; else null.</summary>
    private readonly byte[]? _mappedCapability;

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
        if ((options.XattrMap is not null || options.PosixAcl || options.SecurityLabel) && !options.Xattr)
        {
            throw new ArgumentException("xattrmap, posix ACLs and security labels need Xattr (virtiofsd: they imply --xattr)", nameof(options));
        }
        if (options.XattrMap?.MapClientName("security.capability"u8) is { } cap && !cap.AsSpan().SequenceEqual("security.capability"u8))
        {
            _mappedCapability = [.. cap, 0];
        }

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
        if (options.XattrMap is not null || options.PosixAcl || options.SecurityLabel)
        {
            PassthroughLog.XattrPolicy(logger, options.XattrMap?.Rules.Count ?? 0, _mappedCapability is not null, options.PosixAcl, options.SecurityLabel);
        }
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
        // virtiofsd init(): posix ACLs need the kernel to leave the umask to us (DONT_MASK) and to say when an ACL
        // change must drop SGID (SETXATTR_EXT); security labels need SECURITY_CTX. Without them the session is refused.
        const FuseInitFlags aclFlags = FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.SetxattrExt;
        if (_options.PosixAcl && (negotiated & aclFlags) != aclFlags) return Errno.EPROTO;
        if (_options.SecurityLabel && (negotiated & FuseInitFlags.SecurityCtx) == 0) return Errno.EPROTO;
        _posixAcl = _options.PosixAcl;
        _dontMask = (negotiated & FuseInitFlags.DontMask) != 0;
        _securityLabel = _options.SecurityLabel;
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

    /// <summary>The caller as the host knows it (--translate-uid/gid); false when its uid or gid is forbidden (EPERM).</summary>
    private bool TryHostCaller(in FuseContext ctx, out FuseContext host)
    {
        uint uid = ctx.Uid, gid = ctx.Gid;
        if ((_options.Uids is { } u && !u.TryToHost(ctx.Uid, out uid)) || (_options.Gids is { } g && !g.TryToHost(ctx.Gid, out gid)))
        {
            host = default;
            return false;
        }
        host = _options.Uids is null && _options.Gids is null ? ctx : new FuseContext(uid, gid, ctx.Pid, ctx.Unique) { SecurityContext = ctx.SecurityContext };
        return true;
    }

    /// <summary>The host's owner as the guest sees it (--translate-uid/gid).</summary>
    private FuseAttr ToAttr(in Statx st)
    {
        FuseAttr attr = ToHostAttr(st);
        if (_options.Uids is { } u) attr.uid = u.ToGuest(attr.uid);
        if (_options.Gids is { } g) attr.gid = g.ToGuest(attr.gid);
        return attr;
    }

    private static FuseAttr ToHostAttr(in Statx st) => new()
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

    /// <summary>"/proc/self/fd/N": re-opens an O_PATH fd's inode without a path walk through the shared tree. Inside
    /// vfsd's sandbox the root is the shared directory, where "/proc" would be a name the guest controls; there the
    /// working directory is the sandbox's /proc/self/fd and the name is the relative "N".</summary>
    private static void ProcPath(int fd, Span<byte> dest)
    {
        int start = 0;
        if (!ProcFd.IsWorkingDirectory)
        {
            "/proc/self/fd/"u8.CopyTo(dest);
            start = 14;
        }
        fd.TryFormat(dest[start..], out int n, default, System.Globalization.CultureInfo.InvariantCulture);
        dest[start + n] = 0;
    }

    /// <summary>
    /// An O_PATH fd of /proc/self/fd, opened once (virtiofsd keeps the same, <c>proc_self_fd</c>): re-opening inode N
    /// as <c>openat(ProcSelfFd, "N")</c> resolves one magic link instead of walking /proc, self and fd on every OPEN.
    /// -1 when /proc is not there; <see cref="ProcFdName"/> then falls back to the absolute path, which fails the same way
    /// it always did.
    /// </summary>
    private static readonly int ProcSelfFd = OpenProcSelfFd();

    private static int OpenProcSelfFd()
    {
        fixed (byte* p = ProcFd.IsWorkingDirectory ? ".\0"u8 : "/proc/self/fd\0"u8)
        {
            // SAFETY: NUL-terminated constant path; the fd lives as long as the process and is never closed.
            return openat(AT_FDCWD, p, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
        }
    }

    /// <summary>
    /// Writes the name that re-opens <paramref name="fd"/>'s inode through its /proc magic link and returns the dirfd
    /// it is relative to: "N" under <see cref="ProcSelfFd"/>, or "/proc/self/fd/N" with AT_FDCWD.
    /// </summary>
    private static int ProcFdName(int fd, Span<byte> dest)
    {
        if (ProcSelfFd < 0)
        {
            ProcPath(fd, dest);
            return AT_FDCWD;
        }
        fd.TryFormat(dest, out int n, default, System.Globalization.CultureInfo.InvariantCulture);
        dest[n] = 0;
        return ProcSelfFd;
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

    /// <summary>The daemon's own fsuid/fsgid (setfs*id(-1) only reports), restored after each switch.</summary>
    private static readonly uint OwnFsUid = unchecked((uint)setfsuid(uint.MaxValue));
    private static readonly uint OwnFsGid = unchecked((uint)setfsgid(uint.MaxValue));

    /// <summary>
    /// Creates as the guest's caller: fsuid/fsgid are per-thread on Linux, restored on dispose. A non-root caller also
    /// loses the daemon's supplementary groups for the call (CVE-2022-0358): the kernel's inode_init_owner keeps the
    /// SGID bit a caller asks for in an SGID directory only if in_group_p(dir group), which counts the thread's
    /// supplementary groups, so with root's groups a guest user who is not in the group would get an SGID file of it.
    /// virtiofsd drops supplementary groups for the same reason. The switch to a non-zero fsuid already drops CAP_FSETID.
    /// The raw setgroups system call changes this thread only (glibc's wrapper would change every thread); the thread's
    /// own groups are read at each switch and put back after.
    /// </summary>
    private readonly ref struct Credentials
    {
        private readonly bool _switched;
        private readonly uint[]? _droppedGroups;
        private readonly ILogger? _logger;

        public Credentials(in FuseContext ctx, ILogger logger)
        {
            _logger = logger;
            _switched = ctx.Uid != OwnFsUid || ctx.Gid != OwnFsGid;
            if (_switched)
            {
                if (ctx.Uid != 0)
                {
                    _droppedGroups = DropGroups();
                }
                // gid first: once fsuid is unprivileged, CAP_SETGID still allows it, but keep the order canonical.
                setfsgid(ctx.Gid);
                setfsuid(ctx.Uid);
            }
        }

        /// <summary>Empties this thread's supplementary groups; returns the ones to put back (null: there were none).</summary>
        private static uint[]? DropGroups()
        {
            int n = getgroups(0, null);
            if (n <= 0) return null; // the common case in a container: nothing to drop, no allocation
            var groups = new uint[n];
            fixed (uint* g = groups)
            {
                n = getgroups(n, g); // SAFETY: g has room for n gids.
            }
            if (n <= 0) return null;
            return syscall(SysSetgroups, 0, null) == 0 ? groups[..n] : null; // SAFETY: an empty list.
        }

        public void Dispose()
        {
            if (_switched)
            {
                setfsuid(OwnFsUid);
                setfsgid(OwnFsGid);
                if (_droppedGroups is not null)
                {
                    fixed (uint* g = _droppedGroups)
                    {
                        // SAFETY: g holds _droppedGroups.Length gids (CAP_SETGID is not an fs capability: never dropped).
                        if (syscall(SysSetgroups, _droppedGroups.Length, g) != 0 && _logger is not null) PassthroughLog.CredentialRestoreFailed(_logger);
                    }
                }
                if ((uint)setfsuid(uint.MaxValue) != OwnFsUid || (uint)setfsgid(uint.MaxValue) != OwnFsGid)
                {
                    if (_logger is not null) PassthroughLog.CredentialRestoreFailed(_logger);
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

    /// <summary>
    /// LOOKUP of a name: stat it first and, when its inode is already in the table, count one more lookup on the fd
    /// we hold (one statx instead of openat + statx + close). Holding an fd on every known inode keeps its inode number
    /// from being reused, so (st_dev, st_ino) names exactly the inode we hold. Only an inode seen for the first time is
    /// opened (O_PATH) and re-stated through its fd, as <see cref="DoLookup"/> does.
    /// </summary>
    private int LookupKnownFirst(Inode parent, int parentFd, ReadOnlySpan<byte> name, out FuseEntry entry)
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
