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


/// <summary>
/// Serves one RAFS image (v5 or v6) read-only through the <see cref="IFileSystem"/> seam. Mutations answer EROFS (from
/// <see cref="ReadOnlyFileSystem"/>). READ goes through <see cref="BlobCacheManager.ReadFile(IReadOnlyList{RafsChunk}, ulong, ulong, int, ReadOnlySpan{IoSegment})"/>
/// straight into the reply segments; the file's chunk list is decoded once per OPEN and kept with the handle.
/// Neither the image nor the cache is owned.
/// </summary>
public sealed partial class RafsFileSystem : ReadOnlyFileSystem, IDisposable
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
    private readonly RecentChunks _recent;
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
        // With a cache directory the slots only serve chunks being fetched (cached ones are read from the cache file):
        // a few per reader are enough, and a shared daemon holds one set per image.
        _recent = new RecentChunks(image.ChunkSize, cache.CacheDir is null ? 16 : 8, _options.DecodeAhead);
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

    /// <summary>Fetches a program's shared libraries when it is first read; null when off.</summary>
    internal Dependencies.DependencyPrefetcher? Dependencies { get; set; }

    /// <summary>The decoded-chunk slots, for tests.</summary>
    internal RecentChunks Recent => _recent;

    /// <summary>Files open right now (for metrics and tests).</summary>
    public int OpenFiles => Volatile.Read(ref _openCount);

    /// <summary>With merkle checking on: binds the root inode to <paramref name="trustedRoot"/> and checks the root
    /// directory. Returns null, or why the image must not be served.</summary>
    public string? VerifyRoot(ReadOnlySpan<byte> trustedRoot) => _merkle?.VerifyRoot(trustedRoot);

    /// <summary>FUSE node id 1 is the root (fuse.h FUSE_ROOT_ID); other image inodes are shifted past it so that inode
    /// numbers 0 and 1 (EROFS nids may be either) never collide with the reserved ids.</summary>
    internal ulong ToNode(ulong ino) => ino == _rootIno ? FuseConstants.RootId : ino + 2;

    internal ulong ToIno(ulong nodeId) => nodeId == FuseConstants.RootId ? _rootIno : nodeId < 2 ? ulong.MaxValue : nodeId - 2;

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
        => Read(nodeId, handle, offset, destination, null, out bytesRead);

    /// <summary>/dev/fuse: data out of a decoded-chunk slot is referred to, not copied (<see cref="RecentChunks"/>).</summary>
    public override int ReadOrReference(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination,
        IReplyReferences references, uint flags, out int bytesRead) => Read(nodeId, handle, offset, destination, references, out bytesRead);

    private int Read(ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, IReplyReferences? references, out int bytesRead)
    {
        bytesRead = 0;
        OpenFile? f = _open.TryGetValue(handle, out OpenFile? known) ? known : Adopt(handle, nodeId);
        if (f is null || f.Ino != ToIno(nodeId)) return EBADF;
        long total = 0;
        foreach (ref readonly IoSegment s in destination) total += s.Length;
        int length = (int)Math.Min(total, int.MaxValue);
        int n = _recent.Read(_cache, f.Chunks, f.Size, offset, length, destination, references);
        if (n < 0) return -n;
        if (offset == 0) Dependencies?.OnFirstRead(f.Ino, f.Chunks, f.Size);
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

    public void Dispose() => _recent.Dispose();
}
