using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.RafsFs;

// Failover and hot upgrade: the node ids and open handles the kernel holds, exported and adopted by a successor.
public sealed partial class RafsFileSystem
{
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
}
