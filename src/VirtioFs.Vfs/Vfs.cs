// Vfs: several filesystems behind one FUSE session, the way nydusd serves Kata's "virtio-fs-nydus" mode.
//
// The guest mounts one virtio-fs device. Its root is a small read-only pseudo filesystem of directories; filesystems
// are mounted on paths inside it at run time (Kata: a passthrough at /containers, one RAFS image per container at
// /rafs/<cid>/lowerdir) and removed while the guest keeps using the others. Like fuse-backend-rs' `api/vfs`, every node
// id and handle the kernel sees carries its filesystem in its top bits:
//
//     node id / handle = slot << 48 | inner id        slot 0 = the pseudo filesystem, slots 1..65535 = mounts
//
// so a request is routed by its node id alone and no table lookup is needed per request. A mounted filesystem's root
// (inner id FUSE_ROOT_ID) is what a lookup of the mountpoint's name returns: the mountpoint directory itself is hidden.
// Slots are handed out fresh first and only reused once the kernel holds no lookup or handle of the old mount, so a
// stale node id never reaches a filesystem it was not issued by.
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

/// <summary>Why a mount-table change was refused.</summary>
public enum VfsMountError
{
    None = 0,
    /// <summary>Not an absolute path of non-empty, NUL-free components without "." or ".." (and not "/").</summary>
    InvalidPath,
    /// <summary>A filesystem is already mounted at this path.</summary>
    AlreadyMounted,
    /// <summary>The path lies inside another mount, or other mounts lie below it.</summary>
    Nested,
    /// <summary>Nothing is mounted at this path.</summary>
    NotMounted,
    /// <summary>All 65535 slots hold a mount or node ids the kernel still uses.</summary>
    TooManyMounts,
    /// <summary>The filesystem's Init (FUSE already negotiated) returned an error.</summary>
    InitFailed,
}

/// <summary>Thrown by <see cref="Vfs.Mount"/> and <see cref="Vfs.Umount"/>.</summary>
public sealed class VfsMountException : Exception
{
    public VfsMountException() : this(VfsMountError.InvalidPath, "") { }
    public VfsMountException(string message) : base(message) { }
    public VfsMountException(string message, Exception inner) : base(message, inner) { }

    public VfsMountException(VfsMountError error, string path)
        : base($"{path}: {error}") => Error = error;

    public VfsMountError Error { get; }
}

/// <summary>One entry of the mount table.</summary>
public sealed record VfsMountInfo(string Path, IFileSystem FileSystem, int Slot, DateTimeOffset MountedAt);

public sealed class VfsOptions
{
    /// <summary>
    /// How long the guest may cache a name in a pseudo directory. Short, because the name's meaning changes when a
    /// filesystem is mounted or unmounted there (fuse_dentry_revalidate relooks it up once this expires).
    /// </summary>
    public TimeSpan PseudoEntryTimeout { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan PseudoAttrTimeout { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>How long <see cref="Vfs.Umount"/> waits for requests in flight on the filesystem before going on.</summary>
    public TimeSpan UmountDrainTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

public sealed partial class Vfs : IFileSystem, IDisposable
{
    internal const int SlotShift = 48;
    internal const ulong InnerMask = (1UL << SlotShift) - 1;
    internal const int MaxSlots = 1 << (64 - SlotShift);
    /// <summary>ESTALE: the node id or handle belongs to a filesystem that has been unmounted.</summary>
    public const int ESTALE = Errno.ESTALE;

    /// <summary>A mounted filesystem and the bookkeeping that lets it be removed under load.</summary>
    internal sealed class MountEntry
    {
        public MountEntry(ushort slot, string path, IFileSystem fs, PseudoNode node)
        {
            Slot = slot;
            Path = path;
            Fs = fs;
            Node = node;
            MountedAt = DateTimeOffset.UtcNow;
        }

        public readonly ushort Slot;
        public readonly string Path;
        public readonly IFileSystem Fs;
        public readonly PseudoNode Node;
        public readonly DateTimeOffset MountedAt;
        /// <summary>Requests currently inside <see cref="Fs"/>; Umount waits for it to drop to zero.</summary>
        public int Active;
        /// <summary>Set once unmounted: new requests get ESTALE.</summary>
        public volatile bool Detached;
        /// <summary>Lookups plus open handles the kernel holds: the slot is reusable only at zero after unmount.</summary>
        public long KernelRefs;
        public bool Initialized;
        /// <summary>This mount's counters (GET /api/v1/metrics?id=mountpoint).</summary>
        public readonly FsIoStats Stats = new();
    }

    private readonly VfsOptions _options;
    private readonly ILogger _logger;
    private readonly Lock _mountLock = new();
    private readonly PseudoTree _pseudo;
    private readonly ReadDirPlusRelay _relay;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private MountEntry?[] _table = new MountEntry?[16];
    private int _nextFreshSlot = 1;
    private int _reuseCursor = 1;
    private bool _initialized;
    private FuseInitFlags _negotiated;

    public Vfs(VfsOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options;
        _logger = logger;
        _pseudo = new PseudoTree(options);
        _relay = new ReadDirPlusRelay(logger);
        Metrics = new VfsMetrics();
    }

    /// <summary>Per-opcode counts, errors and latency of every request that reached this filesystem.</summary>
    public VfsMetrics Metrics { get; }

    /// <summary>Current mounts, ordered by path.</summary>
    public IReadOnlyList<VfsMountInfo> Mounts
    {
        get
        {
            lock (_mountLock)
            {
                var list = new List<VfsMountInfo>();
                foreach (MountEntry? m in _table)
                {
                    if (m is { Detached: false }) list.Add(new VfsMountInfo(m.Path, m.Fs, m.Slot, m.MountedAt));
                }
                list.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
                return list;
            }
        }
    }

    /// <summary>The filesystem mounted at <paramref name="path"/>, if any.</summary>
    public IFileSystem? Find(string path)
    {
        if (!PseudoTree.TrySplit(path, out string[]? parts)) return null;
        lock (_mountLock)
        {
            return _pseudo.Find(parts)?.Mount?.Fs;
        }
    }

    /// <summary>The nydus-style I/O statistics of the filesystem mounted at <paramref name="path"/> (nydusd keeps one
    /// FsIoStats per mounted RAFS, named by its mountpoint), or null when nothing is mounted there.</summary>
    public FsIoStats? StatsOf(string path)
    {
        if (!PseudoTree.TrySplit(path, out string[]? parts)) return null;
        lock (_mountLock)
        {
            return _pseudo.Find(parts)?.Mount?.Stats;
        }
    }

    // ---- mount table --------------------------------------------------------------------------------------------

    /// <summary>Mounts <paramref name="fs"/> at <paramref name="path"/>; throws <see cref="VfsMountException"/>.</summary>
    public void Mount(string path, IFileSystem fs)
    {
        VfsMountError e = TryMount(path, fs);
        if (e != VfsMountError.None) throw new VfsMountException(e, path);
    }

    /// <summary>
    /// Mounts <paramref name="fs"/> at <paramref name="path"/> (an absolute path; missing intermediate directories are
    /// created in the pseudo filesystem). When FUSE is already negotiated the filesystem gets Init with those flags first.
    /// </summary>
    public VfsMountError TryMount(string path, IFileSystem fs)
    {
        ArgumentNullException.ThrowIfNull(fs);
        if (!PseudoTree.TrySplit(path, out string[]? parts) || parts.Length == 0) return VfsMountError.InvalidPath;
        string canonical = "/" + string.Join('/', parts);
        lock (_mountLock)
        {
            VfsMountError check = _pseudo.CanMount(parts);
            if (check != VfsMountError.None) return check;
            int slot = AllocateSlot();
            if (slot < 0) return VfsMountError.TooManyMounts;
            if (_initialized)
            {
                int err = fs.Init(_negotiated);
                if (err != 0)
                {
                    VfsLog.InitFailed(_logger, canonical, err);
                    return VfsMountError.InitFailed;
                }
            }
            PseudoNode node = _pseudo.CreatePath(parts);
            var m = new MountEntry((ushort)slot, canonical, fs, node) { Initialized = _initialized };
            EnsureCapacity(slot);
            Volatile.Write(ref _table[slot], m);
            node.Mount = m;
            VfsLog.Mounted(_logger, canonical, slot);
            return VfsMountError.None;
        }
    }

    /// <summary>Unmounts the filesystem at <paramref name="path"/> and returns it; throws when nothing is mounted there.</summary>
    public IFileSystem Umount(string path)
    {
        VfsMountError e = TryUmount(path, out IFileSystem? fs);
        return e == VfsMountError.None ? fs! : throw new VfsMountException(e, path);
    }

    /// <summary>
    /// Removes the mount at <paramref name="path"/>. Requests already inside the filesystem complete (this waits for
    /// them, up to <see cref="VfsOptions.UmountDrainTimeout"/>); later ones on its node ids get ESTALE. The filesystem
    /// then gets Destroy (it will never see the kernel's forgets for what it handed out) and is returned, so the
    /// caller can dispose it.
    /// </summary>
    public VfsMountError TryUmount(string path, out IFileSystem? fs)
    {
        fs = null;
        if (!PseudoTree.TrySplit(path, out string[]? parts) || parts.Length == 0) return VfsMountError.InvalidPath;
        MountEntry m;
        lock (_mountLock)
        {
            PseudoNode? node = _pseudo.Find(parts);
            if (node?.Mount is null) return VfsMountError.NotMounted;
            m = node.Mount;
            m.Detached = true;
            node.Mount = null;
            _pseudo.Prune(node);
        }
        Drain(m);
        if (m.Initialized)
        {
            m.Fs.Destroy();
        }
        VfsLog.Unmounted(_logger, m.Path, m.Slot);
        fs = m.Fs;
        return VfsMountError.None;
    }

    /// <summary>
    /// Replaces the filesystem at <paramref name="path"/> with <paramref name="fs"/> (nydusd's remount). Node ids the
    /// guest holds under the old one become stale. Returns the old filesystem (Destroyed) for the caller to dispose.
    /// </summary>
    public VfsMountError TryRemount(string path, IFileSystem fs, out IFileSystem? old)
    {
        ArgumentNullException.ThrowIfNull(fs);
        old = null;
        if (Find(path) is null) return VfsMountError.NotMounted;
        VfsMountError e = TryUmount(path, out old);
        return e != VfsMountError.None ? e : TryMount(path, fs);
    }

    private void Drain(MountEntry m)
    {
        long deadline = _clock.ElapsedMilliseconds + (long)_options.UmountDrainTimeout.TotalMilliseconds;
        var spin = new SpinWait();
        while (Volatile.Read(ref m.Active) > 0)
        {
            if (_clock.ElapsedMilliseconds > deadline)
            {
                VfsLog.DrainTimedOut(_logger, m.Path, Volatile.Read(ref m.Active));
                return;
            }
            spin.SpinOnce(sleep1Threshold: 20);
        }
    }

    /// <summary>A fresh slot while any remain, then one whose old mount the kernel has entirely forgotten.</summary>
    private int AllocateSlot()
    {
        if (_nextFreshSlot < MaxSlots)
        {
            return _nextFreshSlot++;
        }
        for (int i = 0; i < MaxSlots - 1; i++)
        {
            int s = _reuseCursor;
            _reuseCursor = s + 1 >= MaxSlots ? 1 : s + 1;
            MountEntry? old = _table[s];
            if (old is null || (old.Detached && Volatile.Read(ref old.KernelRefs) <= 0))
            {
                return s;
            }
        }
        return -1;
    }

    private void EnsureCapacity(int slot)
    {
        if (slot < _table.Length) return;
        int size = _table.Length;
        while (size <= slot) size *= 2;
        var bigger = new MountEntry?[Math.Min(size, MaxSlots)];
        Array.Copy(_table, bigger, _table.Length);
        Volatile.Write(ref _table, bigger);
    }

    // ---- routing ------------------------------------------------------------------------------------------------

    internal static ushort SlotOf(ulong id) => (ushort)(id >> SlotShift);
    internal static ulong InnerOf(ulong id) => id & InnerMask;
    internal static ulong Encode(ushort slot, ulong inner) => ((ulong)slot << SlotShift) | inner;

    /// <summary>The mount owning slot <paramref name="slot"/> whether detached or not (for forget/release accounting).</summary>
    private MountEntry? EntryOf(ushort slot)
    {
        MountEntry?[] table = Volatile.Read(ref _table);
        return slot < table.Length ? Volatile.Read(ref table[slot]) : null;
    }

    /// <summary>Pins the live mount of a non-zero slot for the duration of one request; pair with <see cref="Exit"/>.</summary>
    private bool TryEnter(ushort slot, out MountEntry m)
    {
        MountEntry? e = EntryOf(slot);
        if (e is null)
        {
            m = null!;
            return false;
        }
        Interlocked.Increment(ref e.Active);
        if (e.Detached)
        {
            Interlocked.Decrement(ref e.Active);
            m = null!;
            return false;
        }
        m = e;
        return true;
    }

    private static void Exit(MountEntry m) => Interlocked.Decrement(ref m.Active);

    /// <summary>
    /// Makes an entry an inner filesystem returned namespaced, and counts the lookup. An inner id too wide for the
    /// namespace is handed back (forgotten) and refused with EIO rather than aliased.
    /// </summary>
    private int Export(in FuseContext ctx, MountEntry m, ref FuseEntry e)
    {
        if (e.NodeId == 0) return 0; // negative entry: nothing to translate, nothing counted
        if (e.NodeId > InnerMask)
        {
            m.Fs.Forget(ctx, e.NodeId, 1);
            VfsLog.IdTooWide(_logger, m.Path, e.NodeId);
            return Errno.EIO;
        }
        e.NodeId = Encode(m.Slot, e.NodeId);
        Interlocked.Increment(ref m.KernelRefs);
        return 0;
    }

    private int ExportHandle(in FuseContext ctx, MountEntry m, ulong innerNode, ref FuseOpenResult r, bool dir)
    {
        if (r.Handle > InnerMask)
        {
            if (dir) m.Fs.ReleaseDir(ctx, innerNode, r.Handle, 0);
            else m.Fs.Release(ctx, innerNode, r.Handle, 0, 0, 0);
            VfsLog.IdTooWide(_logger, m.Path, r.Handle);
            return Errno.EIO;
        }
        r.Handle = Encode(m.Slot, r.Handle);
        Interlocked.Increment(ref m.KernelRefs);
        return 0;
    }

    /// <summary>The inner handle, or false when the handle was issued by another filesystem than the node's.</summary>
    private static bool TryInnerHandle(ushort slot, ulong handle, out ulong inner)
    {
        inner = InnerOf(handle);
        return SlotOf(handle) == slot;
    }

    public void Dispose() => _relay.Dispose();
}
