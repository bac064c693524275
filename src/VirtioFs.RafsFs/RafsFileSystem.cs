using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage;
using VirtioFs.Storage.Cache;

// The image filesystem: FUSE's read-only operations answered from a RAFS bootstrap (metadata: names, attributes,
// symlink targets, xattrs, chunk lists) and a blob cache (file data). A RAFS image is immutable, so the kernel may
// cache everything for as long as it likes: entries and attributes get long timeouts, opens FOPEN_KEEP_CACHE and
// directories FOPEN_CACHE_DIR, and the FUSE node id is a pure function of the image inode, so FORGET needs no
// bookkeeping. Every inode number a guest sends is range-checked by the reader; a corrupt image yields EIO.
namespace VirtioFs.RafsFs;

/// <summary>Knobs of a <see cref="RafsFileSystem"/>.</summary>
public sealed class RafsFsOptions
{
    /// <summary>Entry and attribute timeout. The image never changes, so a day (virtiofsd cache=always uses the same).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(86400);

    /// <summary>Check each inode's metadata and xattrs, and directory, file and symlink digests, against the image's
    /// merkle tree as they are first used (the caller has established that the root digest is trusted).</summary>
    public bool VerifyMerkle { get; init; }

    /// <summary>The cache reads through to the backend (no cache directory): keep recently decoded chunks so reads
    /// smaller than a chunk do not decode it again each time (<see cref="RecentChunks"/>).</summary>
    public bool ReadThrough { get; init; }

    /// <summary>With <see cref="ReadThrough"/>: when a reader starts on a chunk, decode the next one on the thread pool
    /// so its fetch, digest check and decompression overlap with the reader (sequential reads in a guest wait on each
    /// chunk otherwise).</summary>
    public bool DecodeAhead { get; init; }

    /// <summary>Most files open at once; further opens fail with ENFILE rather than growing without bound.</summary>
    public int MaxOpenFiles { get; init; } = 1 << 20;
}

/// <summary>
/// Serves one RAFS image (v5 or v6) read-only through the <see cref="IFileSystem"/> seam. Mutations answer EROFS (from
/// <see cref="ReadOnlyFileSystem"/>). READ goes through <see cref="BlobCacheManager.ReadFile(IReadOnlyList{RafsChunk}, ulong, ulong, int, ReadOnlySpan{IoSegment})"/>
/// straight into the reply segments; the file's chunk list is decoded once per OPEN and kept with the handle.
/// Neither the image nor the cache is owned.
/// </summary>
public sealed class RafsFileSystem : ReadOnlyFileSystem, IDisposable
{
    private const int ENXIO = Errno.ENXIO, EBADF = Errno.EBADF, EIO = Errno.EIO, EISDIR = Errno.EISDIR, ENFILE = Errno.ENFILE;
    private const int EACCES = Errno.EACCES, EINVAL = Errno.EINVAL, ERANGE = Errno.ERANGE, ENOTDIR = Errno.ENOTDIR;
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000;
    private const uint O_ACCMODE = 3, O_RDONLY = 0, O_TRUNC = 0x200;
    private const uint SEEK_DATA = 3, SEEK_HOLE = 4;

    private readonly RafsImage _image;
    private readonly BlobCacheManager _cache;
    private readonly RafsFsOptions _options;
    private readonly ILogger _logger;
    private readonly MerkleVerifier? _merkle;
    private readonly RecentChunks? _recent;
    private readonly ConcurrentDictionary<ulong, OpenFile> _open = new();
    // Node ids the kernel holds (lookup counts, dropped by FORGET). Node ids are a pure function of the image inode, so
    // serving needs no table; it exists so a successor daemon can check that every node the kernel still references
    // names the same inode in its image (failover, hot upgrade: see ExportNodes / RestoreNodes).
    private readonly ConcurrentDictionary<ulong, long> _lookups = new();
    private readonly ulong _rootIno;
    private readonly FuseKstatfs _statfs;
    private long _nextHandle;
    private int _openCount;
    private volatile bool _adoptUnknownHandles;

    /// <summary>What an OPEN decoded once: the file's size and chunk list, used by every READ and LSEEK on the handle.</summary>
    private sealed class OpenFile(ulong ino, ulong size, RafsChunk[] chunks)
    {
        public readonly ulong Ino = ino;
        public readonly ulong Size = size;
        public readonly RafsChunk[] Chunks = chunks;
    }

    public RafsFileSystem(RafsImage image, BlobCacheManager cache, RafsFsOptions? options = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(cache);
        _image = image;
        _cache = cache;
        _options = options ?? new RafsFsOptions();
        _logger = logger ?? NullLogger.Instance;
        _rootIno = image.RootIno;
        if (_options.ReadThrough)
        {
            _recent = new RecentChunks(image.ChunkSize, decodeAhead: _options.DecodeAhead);
        }
        if (_options.VerifyMerkle)
        {
            _merkle = new MerkleVerifier(image, _logger);
        }
        ulong bytes = 0;
        foreach (var b in image.Blobs)
        {
            bytes = bytes > ulong.MaxValue - b.UncompressedSize ? ulong.MaxValue : bytes + b.UncompressedSize;
        }
        _statfs = new FuseKstatfs
        {
            blocks = bytes / 4096 + (ulong)image.BootstrapSize / 4096,
            files = image.InodeCount,
            bsize = 4096,
            frsize = 4096,
            namelen = 255,
        };
    }

    public RafsImage Image => _image;

    /// <summary>The decoded-chunk slots of read-through mode (null with a cache directory), for tests.</summary>
    internal RecentChunks? Recent => _recent;

    /// <summary>Files open right now (for metrics and tests).</summary>
    public int OpenFiles => Volatile.Read(ref _openCount);

    /// <summary>FUSE node id 1 is the root (fuse.h FUSE_ROOT_ID); other image inodes are shifted past it so that inode
    /// numbers 0 and 1 (EROFS nids may be either) never collide with the reserved ids.</summary>
    /// <summary>With merkle checking on: binds the root inode to <paramref name="trustedRoot"/> and checks the root
    /// directory. Returns null, or why the image must not be served.</summary>
    public string? VerifyRoot(ReadOnlySpan<byte> trustedRoot) => _merkle?.VerifyRoot(trustedRoot);

    internal ulong ToNode(ulong ino) => ino == _rootIno ? FuseConstants.RootId : ino + 2;

    internal ulong ToIno(ulong nodeId) => nodeId == FuseConstants.RootId ? _rootIno : nodeId < 2 ? ulong.MaxValue : nodeId - 2;

    // ---- metadata ---------------------------------------------------------------------------------------------------

    public override int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        ulong dir = ToIno(parent);
        int rc = CheckDirectory(dir);
        if (rc != 0) return rc;
        rc = _image.Lookup(dir, name, out ulong child);
        if (rc != 0) return rc;
        if ((rc = CheckInode(child)) != 0) return rc;
        rc = FillEntry(child, out entry);
        if (rc == 0) CountLookup(entry.NodeId);
        return rc;
    }

    private void CountLookup(ulong nodeId)
    {
        if (nodeId != FuseConstants.RootId) _lookups.AddOrUpdate(nodeId, 1, static (_, n) => n + 1);
    }

    public override void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup)
    {
        while (_lookups.TryGetValue(nodeId, out long n))
        {
            long left = n - (long)Math.Min(nlookup, (ulong)long.MaxValue);
            if (left <= 0 ? _lookups.TryRemove(new KeyValuePair<ulong, long>(nodeId, n)) : _lookups.TryUpdate(nodeId, left, n)) return;
        }
    }

    // ---- hand-over to a successor daemon ------------------------------------------------------------------------------

    /// <summary>A node id the kernel holds, with what it names: the inode number and mode (type and permissions).</summary>
    public readonly record struct HeldNode(ulong NodeId, ulong Lookups, ulong Ino, uint Mode);

    /// <summary>An open file handle the kernel holds and the node it was opened on.</summary>
    public readonly record struct HeldHandle(ulong Handle, ulong NodeId);

    /// <summary>Every node id the kernel holds a lookup on (the root is always held and not listed).</summary>
    public List<HeldNode> ExportNodes()
    {
        var nodes = new List<HeldNode>(_lookups.Count);
        foreach (var (node, n) in _lookups)
        {
            if (_image.GetAttr(ToIno(node), out RafsAttr a) == 0) nodes.Add(new HeldNode(node, (ulong)n, a.Ino, a.Mode));
        }
        return nodes;
    }

    /// <summary>Every open file handle, and the next handle number this filesystem would give out.</summary>
    public (List<HeldHandle> Handles, ulong NextHandle) ExportHandles()
    {
        var handles = new List<HeldHandle>(_open.Count);
        foreach (var (h, f) in _open) handles.Add(new HeldHandle(h, ToNode(f.Ino)));
        return (handles, (ulong)Interlocked.Read(ref _nextHandle));
    }

    /// <summary>
    /// Adopts the nodes a predecessor's kernel connection holds. Each must name, in this image, the inode with the same
    /// number and mode it named before; otherwise the image is not the one the kernel has cached and the reason is
    /// returned (nothing is adopted).
    /// </summary>
    public string? RestoreNodes(IReadOnlyList<HeldNode> nodes)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        foreach (HeldNode n in nodes)
        {
            if (n.NodeId == FuseConstants.RootId) continue;
            if (_image.GetAttr(ToIno(n.NodeId), out RafsAttr a) != 0 || a.Ino != n.Ino || a.Mode != n.Mode)
                return $"node {n.NodeId} named inode {n.Ino} (mode {Convert.ToString(n.Mode, 8)}); in this image it names something else";
        }
        foreach (HeldNode n in nodes)
        {
            if (n.NodeId != FuseConstants.RootId && n.Lookups > 0) _lookups[n.NodeId] = (long)Math.Min(n.Lookups, (ulong)long.MaxValue);
        }
        return null;
    }

    /// <summary>
    /// Re-opens the handles a predecessor gave the kernel, under the same numbers, so reads on files opened before the
    /// hand-over keep working; later handles are numbered from <paramref name="nextHandle"/>. Returns why not, or null.
    /// </summary>
    public string? RestoreHandles(IReadOnlyList<HeldHandle> handles, ulong nextHandle)
    {
        ArgumentNullException.ThrowIfNull(handles);
        if (handles.Count > _options.MaxOpenFiles) return $"{handles.Count} open handles exceed the limit of {_options.MaxOpenFiles}";
        var opened = new Dictionary<ulong, OpenFile>(handles.Count);
        ulong highest = 0;
        foreach (HeldHandle h in handles)
        {
            if (h.Handle == 0 || !opened.TryAdd(h.Handle, null!)) return $"handle {h.Handle} is zero or listed twice";
            ulong ino = ToIno(h.NodeId);
            if (_image.GetAttr(ino, out RafsAttr a) != 0 || (a.Mode & S_IFMT) != S_IFREG) return $"handle {h.Handle} is on node {h.NodeId}, which is not a file in this image";
            var list = new List<RafsChunk>();
            if (_image.GetChunks(ino, list) != 0) return $"handle {h.Handle}: the chunks of inode {a.Ino} cannot be read";
            opened[h.Handle] = new OpenFile(ino, a.Size, list.ToArray());
            highest = Math.Max(highest, h.Handle);
        }
        if (nextHandle < highest || nextHandle > long.MaxValue) return $"next handle {nextHandle} is below handle {highest} or out of range";
        foreach (var (h, f) in opened)
        {
            _open[h] = f;
        }
        Interlocked.Exchange(ref _openCount, _open.Count);
        // The state was taken at sendfd time and the predecessor kept serving: it may have given out handles after it.
        // Number ours far above, so none collides with one the kernel got later, and adopt those on first use.
        Interlocked.Exchange(ref _nextHandle, (long)Math.Min(nextHandle + HandleGenerationGap, long.MaxValue / 2));
        _adoptUnknownHandles = true;
        return null;
    }

    /// <summary>How far a successor's handle numbers start above the state's "next handle".</summary>
    private const ulong HandleGenerationGap = 1UL << 40;

    /// <summary>
    /// After a hand-over: a handle this daemon never gave out is one the predecessor opened after it sent its state.
    /// The kernel names the node with every READ, and an image never changes, so the handle is opened again here.
    /// </summary>
    private OpenFile? Adopt(ulong handle, ulong nodeId)
    {
        if (!_adoptUnknownHandles || handle == 0) return null;
        ulong ino = ToIno(nodeId);
        if (_image.GetAttr(ino, out RafsAttr a) != 0 || (a.Mode & S_IFMT) != S_IFREG) return null;
        var list = new List<RafsChunk>();
        if (_image.GetChunks(ino, list) != 0) return null;
        if (Interlocked.Increment(ref _openCount) > _options.MaxOpenFiles)
        {
            Interlocked.Decrement(ref _openCount);
            return null;
        }
        var f = new OpenFile(ino, a.Size, list.ToArray());
        OpenFile won = _open.GetOrAdd(handle, f);
        if (!ReferenceEquals(won, f)) Interlocked.Decrement(ref _openCount);
        return won;
    }

    private int FillEntry(ulong ino, out FuseEntry entry)
    {
        entry = default;
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0)
        {
            RafsFsLog.CorruptInode(_logger, ino, rc, "lookup");
            return EIO;
        }
        entry.NodeId = ToNode(ino);
        entry.Attr = ToFuseAttr(a);
        entry.EntryTimeout = _options.Timeout;
        entry.AttrTimeout = _options.Timeout;
        return 0;
    }

    public override int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = _options.Timeout;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc == Errno.ENOENT ? rc : EIO;
        if ((rc = CheckInode(ino)) != 0) return rc;
        attr = ToFuseAttr(a);
        return 0;
    }

    internal static FuseAttr ToFuseAttr(in RafsAttr a) => new()
    {
        ino = a.Ino,
        size = a.Size,
        blocks = a.Size / 512 + (a.Size % 512 == 0 ? 0UL : 1UL),
        atime = (ulong)a.MtimeSec,
        mtime = (ulong)a.MtimeSec,
        ctime = (ulong)a.MtimeSec,
        atimensec = a.MtimeNsec,
        mtimensec = a.MtimeNsec,
        ctimensec = a.MtimeNsec,
        mode = a.Mode,
        nlink = a.Nlink,
        uid = a.Uid,
        gid = a.Gid,
        // fuse_attr.rdev is the kernel's new_encode_dev() form (fs/fuse/inode.c decodes it with new_decode_dev).
        rdev = Rafs.Builder.V6Writer.EncodeDev(a.Rdev),
        blksize = 4096,
    };

    public override int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length)
    {
        length = 0;
        ulong ino = ToIno(nodeId);
        int rc = _image.ReadLink(ino, out byte[] target);
        if (rc != 0) return rc;
        if (target.Length > buffer.Length) return EIO;
        if ((rc = CheckInode(ino)) != 0) return rc;
        target.CopyTo(buffer);
        length = target.Length;
        return 0;
    }

    public override int Access(in FuseContext ctx, ulong nodeId, uint mask)
    {
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc;
        if ((rc = CheckInode(ino)) != 0) return rc;
        const uint R = 4, W = 2, X = 1;
        if ((mask & W) != 0) return EROFS;
        if ((mask & (R | X)) == 0) return 0; // F_OK
        if (ctx.Uid == 0)
        {
            // root passes read checks; execute needs some x bit unless it is a directory (generic_permission).
            return (mask & X) != 0 && (a.Mode & S_IFMT) != S_IFDIR && (a.Mode & 0x49) == 0 ? EACCES : 0;
        }
        uint bits = ctx.Uid == a.Uid ? (a.Mode >> 6) & 7 : ctx.Gid == a.Gid ? (a.Mode >> 3) & 7 : a.Mode & 7;
        return (bits & mask) == (mask & 7) ? 0 : EACCES;
    }

    public override int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        stat = _statfs;
        return 0;
    }

    public override int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetXattr(ino, name, out byte[] v);
        if (rc != 0 && rc != Errno.ENODATA && rc != Errno.EOPNOTSUPP) return rc;
        if (CheckInode(ino) is int bad and not 0) return bad; // an absent xattr is an answer about the inode too
        if (rc != 0) return rc == Errno.EOPNOTSUPP ? Errno.ENODATA : rc;
        length = v.Length;
        if (value.IsEmpty) return 0;
        if (v.Length > value.Length) return ERANGE;
        v.CopyTo(value);
        return 0;
    }

    public override int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        length = 0;
        var names = new List<byte[]>();
        ulong ino = ToIno(nodeId);
        int rc = _image.ListXattr(ino, names);
        if (rc != 0) return rc == Errno.EOPNOTSUPP ? 0 : rc;
        if ((rc = CheckInode(ino)) != 0) return rc;
        int total = 0;
        foreach (var n in names) total = checked(total + n.Length + 1);
        length = total;
        if (list.IsEmpty) return 0;
        if (total > list.Length) return ERANGE;
        int p = 0;
        foreach (var n in names)
        {
            n.CopyTo(list[p..]);
            list[p + n.Length] = 0;
            p += n.Length + 1;
        }
        return 0;
    }

    // ---- directories ------------------------------------------------------------------------------------------------

    private int CheckDirectory(ulong ino) => _merkle?.EnsureDirectory(ino) ?? 0;

    /// <summary>With merkle checking on: 0 once the inode's attributes and xattrs match the digest its verified parent
    /// vouched for (a bit test after the first time), EIO otherwise. Called before any attribute reaches the guest.</summary>
    private int CheckInode(ulong ino) => _merkle?.EnsureInode(ino) ?? 0;

    public override int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result)
    {
        result = default;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc;
        if ((a.Mode & S_IFMT) != S_IFDIR) return ENOTDIR;
        if ((rc = CheckDirectory(ino)) != 0) return rc;
        // The listing never changes: let the kernel keep it in its readdir cache across opens (FUSE 7.28).
        result.OpenFlags = FuseConstants.FOPEN_KEEP_CACHE | FuseConstants.FOPEN_CACHE_DIR;
        return 0;
    }

    public override int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        ulong dir = ToIno(nodeId);
        int rc = CheckDirectory(dir);
        if (rc != 0) return rc;
        int inner = 0;
        bool plus = writer.IsPlus;
        rc = _image.ReadDir(dir, offset, (name, ino, fileType, next) =>
        {
            if (!writer.Fits(name.Length)) return false;
            uint type = fileType >> 12;
            bool dots = name.SequenceEqual("."u8) || name.SequenceEqual(".."u8);
            if (plus && !dots)
            {
                // READDIRPLUS: a full entry per name, as LOOKUP would answer it, so `ls -l` needs no further requests.
                // An inode whose metadata does not match its digest is listed as a plain entry (node id 0: no dentry,
                // no attributes; fs/fuse/readdir.c fuse_direntplus_link), so the rest of the directory serves and a
                // LOOKUP of the name answers EIO.
                if (CheckInode(ino) != 0) return writer.TryAdd(ino, next, type, name);
                if ((inner = FillEntry(ino, out FuseEntry e)) != 0) return false;
                if (!writer.TryAddPlus(e, next, type, name)) return false;
                CountLookup(e.NodeId); // the kernel now holds a lookup on it (fuse_direntplus_link)
                return true;
            }
            // d_ino as stat reports it; "." and ".." are left to the kernel (no dentry from a plus reply for them).
            ulong dIno = _image.GetAttr(ino, out RafsAttr a) == 0 ? a.Ino : ino;
            return writer.TryAdd(dIno, next, type, name);
        });
        if (rc == 0) rc = inner;
        // Entries already emitted are worth more than the error: the next READDIR reports it.
        return rc != 0 && writer.BytesWritten == 0 ? rc : 0;
    }

    // ---- files ------------------------------------------------------------------------------------------------------

    public override int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
    {
        result = default;
        if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0) return EROFS;
        ulong ino = ToIno(nodeId);
        int rc = _image.GetAttr(ino, out RafsAttr a);
        if (rc != 0) return rc;
        if ((rc = CheckInode(ino)) != 0) return rc;
        if ((a.Mode & S_IFMT) == S_IFDIR) return EISDIR;
        if ((a.Mode & S_IFMT) != S_IFREG) return EINVAL;
        var list = new List<RafsChunk>();
        rc = _image.GetChunks(ino, list);
        if (rc != 0)
        {
            RafsFsLog.CorruptInode(_logger, ino, rc, "open");
            return EIO;
        }
        var chunks = list.ToArray();
        if (_merkle is not null && (rc = _merkle.CheckFile(ino, a.Ino, chunks)) != 0) return rc;
        if (Interlocked.Increment(ref _openCount) > _options.MaxOpenFiles)
        {
            Interlocked.Decrement(ref _openCount);
            RafsFsLog.TooManyOpen(_logger, _options.MaxOpenFiles);
            return ENFILE;
        }
        ulong handle = (ulong)Interlocked.Increment(ref _nextHandle);
        _open[handle] = new OpenFile(ino, a.Size, chunks);
        result.Handle = handle;
        // Data never changes under a handle: keep the guest's page cache across opens.
        result.OpenFlags = FuseConstants.FOPEN_KEEP_CACHE;
        return 0;
    }

    public override int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        bytesRead = 0;
        OpenFile? f = _open.TryGetValue(handle, out OpenFile? known) ? known : Adopt(handle, nodeId);
        if (f is null || f.Ino != ToIno(nodeId)) return EBADF;
        long total = 0;
        foreach (ref readonly IoSegment s in destination) total += s.Length;
        int length = (int)Math.Min(total, int.MaxValue);
        int n;
        if (_recent is not null)
        {
            n = _recent.Read(_cache, f.Chunks, f.Size, offset, length, destination);
        }
        else
        {
            // The cache preadv()s cached chunks straight into the reply (guest memory for virtio-fs).
            n = _cache.ReadFile(f.Chunks, f.Size, offset, length, destination);
        }
        if (n < 0) return -n;
        bytesRead = n;
        return 0;
    }

    public override int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner)
    {
        if (_open.TryRemove(handle, out _)) Interlocked.Decrement(ref _openCount);
        return 0;
    }

    /// <summary>
    /// SEEK_DATA / SEEK_HOLE (lseek(2)); the kernel handles the other whences itself. Holes are the chunks the image
    /// records as holes (no blob data); everything else is data, and the end of the file is a hole.
    /// </summary>
    public override int Lseek(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, uint whence, out ulong result)
    {
        result = 0;
        if (whence is not (SEEK_DATA or SEEK_HOLE)) return EINVAL;
        OpenFile? f = _open.TryGetValue(handle, out OpenFile? known) ? known : Adopt(handle, nodeId);
        if (f is null || f.Ino != ToIno(nodeId)) return EBADF;
        if (offset >= f.Size) return ENXIO;
        foreach (ref readonly RafsChunk c in f.Chunks.AsSpan())
        {
            ulong end = c.FileOffset + c.UncompressedSize;
            if (end <= offset) continue;
            if (c.IsHole == (whence == SEEK_HOLE))
            {
                result = Math.Max(offset, c.FileOffset);
                return 0;
            }
        }
        if (whence == SEEK_DATA) return ENXIO;
        result = f.Size;
        return 0;
    }

    public void Dispose() => _recent?.Dispose();
}
