using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>Helpers every operation uses: statx and attributes, name checks, /proc/self/fd re-opens, fd leases on
/// inodes and handles, the caller's credentials, and open flags per cache policy.</summary>
public sealed partial class PassthroughFileSystem
{

    private static ulong Dev(in Statx st) =>
        // glibc makedev encoding; its low 32 bits are the kernel's new_encode_dev used by fuse_attr.rdev.
        ((ulong)(st.stx_dev_minor & 0xff)) | ((ulong)(st.stx_dev_major & 0xfff) << 8)
        | ((ulong)(st.stx_dev_minor & ~0xffu) << 12) | ((ulong)(st.stx_dev_major & ~0xfffu) << 32);

    private static uint Rdev(in Statx st) =>
        (st.stx_rdev_minor & 0xff) | ((st.stx_rdev_major & 0xfff) << 8) | ((st.stx_rdev_minor & ~0xffu) << 12);

    /// <summary>statx of the fd itself (an O_PATH fd too), without following a symlink; fills <paramref name="st"/>
    /// on success (0) and leaves it unspecified otherwise.</summary>
    private static unsafe int StatFd(int fd, out Statx st)
    {
        Unsafe.SkipInit(out st);
        // SAFETY: "" with AT_EMPTY_PATH stats the fd itself (O_PATH fds allowed); p pins st, a 256-byte statx the
        // kernel fills and nothing else. The empty path is spelled "\0"u8 on purpose: fixed over an empty span yields
        // NULL, which fchownat/linkat/readlinkat reject with EFAULT (and utimensat would treat as "operate on the fd",
        // refused for O_PATH).
        fixed (byte* empty = "\0"u8)
        fixed (Statx* p = &st)
        {
            return statx(fd, empty, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID, p);
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

    private static unsafe int OpenProcSelfFd()
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
        private static unsafe uint[]? DropGroups()
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

        public unsafe void Dispose()
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
}
