using System.Diagnostics.CodeAnalysis;
using System.Text;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

/// <summary>A directory of the pseudo filesystem: the root, a mountpoint, or a directory leading to one.</summary>
internal sealed class PseudoNode
{
    public PseudoNode(ulong id, string name, PseudoNode? parent)
    {
        Id = id;
        Name = name;
        Parent = parent;
    }

    /// <summary>Node id in slot 0; never reused, so a pruned node's id can only go stale.</summary>
    public ulong Id { get; }
    public string Name { get; }
    public PseudoNode? Parent { get; set; }
    /// <summary>Children in creation order (ids ascend), which makes the id a stable READDIR cookie.</summary>
    public SortedList<ulong, PseudoNode> ById { get; } = new();
    public Dictionary<string, PseudoNode> ByName { get; } = new(StringComparer.Ordinal);
    public Vfs.MountEntry? Mount { get; set; }
    public bool Attached { get; set; } = true;
}

/// <summary>
/// The pseudo filesystem's directory tree. All members are called under the Vfs's lock except the lookups, which
/// take the tree's own reader lock so guest requests never wait behind a mount's Init.
/// </summary>
internal sealed class PseudoTree
{
    private readonly VfsOptions _options;
    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    private readonly Dictionary<ulong, PseudoNode> _byId = new();
    private readonly ulong _time = (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private ulong _nextId = FuseConstants.RootId + 1;

    public PseudoTree(VfsOptions options)
    {
        _options = options;
        Root = new PseudoNode(FuseConstants.RootId, "", null);
        _byId[Root.Id] = Root;
    }

    public PseudoNode Root { get; }

    /// <summary>Splits an absolute path into components; refuses ".", "..", NUL, over-long names and relative paths.</summary>
    public static bool TrySplit(string? path, [NotNullWhen(true)] out string[]? parts)
    {
        parts = null;
        if (string.IsNullOrEmpty(path) || path[0] != '/' || path.Length > 4096 || path.Contains('\0', StringComparison.Ordinal)) return false;
        string[] p = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        foreach (string c in p)
        {
            if (c is "." or ".." || Encoding.UTF8.GetByteCount(c) > 255) return false;
        }
        parts = p;
        return true;
    }

    public PseudoNode? Find(string[] parts)
    {
        _lock.EnterReadLock();
        try
        {
            PseudoNode n = Root;
            foreach (string c in parts)
            {
                if (n.Mount is not null || !n.ByName.TryGetValue(c, out PseudoNode? child)) return null;
                n = child;
            }
            return n;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    public VfsMountError CanMount(string[] parts)
    {
        _lock.EnterReadLock();
        try
        {
            PseudoNode n = Root;
            foreach (string c in parts)
            {
                if (n.Mount is not null) return VfsMountError.Nested;
                if (!n.ByName.TryGetValue(c, out PseudoNode? child)) return VfsMountError.None;
                n = child;
            }
            if (n.Mount is not null) return VfsMountError.AlreadyMounted;
            return n.ById.Count > 0 ? VfsMountError.Nested : VfsMountError.None;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    public PseudoNode CreatePath(string[] parts)
    {
        _lock.EnterWriteLock();
        try
        {
            PseudoNode n = Root;
            foreach (string c in parts)
            {
                if (!n.ByName.TryGetValue(c, out PseudoNode? child))
                {
                    child = new PseudoNode(_nextId++, c, n);
                    n.ByName.Add(c, child);
                    n.ById.Add(child.Id, child);
                    _byId.Add(child.Id, child);
                }
                n = child;
            }
            return n;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>Removes <paramref name="node"/> and then each ancestor left empty, so /rafs does not fill with dead dirs.</summary>
    public void Prune(PseudoNode node)
    {
        _lock.EnterWriteLock();
        try
        {
            PseudoNode? n = node;
            while (n is not null && n != Root && n.Mount is null && n.ById.Count == 0)
            {
                PseudoNode parent = n.Parent!;
                parent.ByName.Remove(n.Name);
                parent.ById.Remove(n.Id);
                _byId.Remove(n.Id);
                n.Attached = false;
                n = parent;
            }
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    // ---- guest-facing queries -----------------------------------------------------------------------------------

    /// <summary>Outcome of a name lookup in a pseudo directory.</summary>
    public enum LookupKind { NotFound, Stale, Directory, MountRoot }

    public LookupKind Lookup(ulong parentId, ReadOnlySpan<byte> name, out PseudoNode? node, out Vfs.MountEntry? mount)
    {
        node = null;
        mount = null;
        if (name.Length > 255 || !System.Text.Unicode.Utf8.IsValid(name)) return LookupKind.NotFound;
        Span<char> chars = stackalloc char[256];
        int n = Encoding.UTF8.GetChars(name, chars);
        _lock.EnterReadLock();
        try
        {
            if (!_byId.TryGetValue(parentId, out PseudoNode? parent)) return LookupKind.Stale;
            if (parent.Mount is not null) return LookupKind.Stale; // hidden by a mount: the guest should not hold it
            PseudoNode? child;
            if (name.SequenceEqual("."u8)) child = parent;
            else if (name.SequenceEqual(".."u8)) child = parent.Parent ?? parent;
            else if (!parent.ByName.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(chars[..n], out child)) return LookupKind.NotFound;
            node = child;
            mount = child.Mount;
            return mount is null ? LookupKind.Directory : LookupKind.MountRoot;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    public bool TryGet(ulong id, [NotNullWhen(true)] out PseudoNode? node)
    {
        _lock.EnterReadLock();
        try
        {
            return _byId.TryGetValue(id, out node) && node.Mount is null;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    public FuseAttr Attr(PseudoNode n)
    {
        int subdirs;
        _lock.EnterReadLock();
        try
        {
            subdirs = n.ById.Count;
        }
        finally
        {
            _lock.ExitReadLock();
        }
        return new FuseAttr
        {
            ino = n.Id,
            mode = 0x4000 | 0x1ED, // S_IFDIR | 0755
            nlink = (uint)Math.Min(2L + subdirs, uint.MaxValue),
            size = 4096,
            blocks = 8,
            blksize = 4096,
            atime = _time,
            mtime = _time,
            ctime = _time,
        };
    }

    public FuseEntry Entry(PseudoNode n) => new()
    {
        NodeId = n.Id,
        Attr = Attr(n),
        EntryTimeout = _options.PseudoEntryTimeout,
        AttrTimeout = _options.PseudoAttrTimeout,
    };

    /// <summary>
    /// Children after cookie <paramref name="offset"/> (0 = start; 1 = after "."; 2 = after ".."; 2 + id = after that
    /// child), copied out so the guest's READDIR runs without the lock.
    /// </summary>
    public int Children(PseudoNode dir, ulong offset, Span<(ulong Cookie, PseudoNode Node)> into)
    {
        _lock.EnterReadLock();
        try
        {
            int count = 0;
            IList<ulong> keys = dir.ById.Keys;
            // Binary search for the first child whose cookie (id + 2) is past the offset.
            int lo = 0, hi = keys.Count;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (keys[mid] + 2 <= offset) lo = mid + 1;
                else hi = mid;
            }
            IList<PseudoNode> values = dir.ById.Values;
            for (int i = lo; i < keys.Count && count < into.Length; i++)
            {
                into[count++] = (keys[i] + 2, values[i]);
            }
            return count;
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }
}
