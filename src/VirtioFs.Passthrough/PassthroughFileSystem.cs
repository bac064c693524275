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

public sealed partial class PassthroughFileSystem : IFileSystem, IDisposable
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
    public unsafe PassthroughFileSystem(PassthroughOptions options, ILogger logger)
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
        if (StatFd(fd, out st) != 0)
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
}
