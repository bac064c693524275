using System.Collections.Concurrent;
using System.Text;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs.Tests;

/// <summary>
/// A tiny in-memory filesystem (root 1: "file" = 2, "dir" = 3 holding "x" = 4) that records what reaches it:
/// lookups still owed a forget, forgets, handles, Init and Destroy. Read can be held at a gate.
/// </summary>
internal sealed class FakeFs : IFileSystem
{
    private static readonly (string Name, ulong Id, ulong Parent, bool Dir)[] Tree =
        [("file", 2, 1, false), ("dir", 3, 1, true), ("x", 4, 3, false)];

    public FakeFs(string tag) => Tag = tag;

    public string Tag { get; }
    public ConcurrentDictionary<ulong, long> Lookups { get; } = new();
    public ConcurrentQueue<(ulong Node, ulong N)> Forgets { get; } = new();
    public ConcurrentDictionary<ulong, ulong> OpenHandles { get; } = new();
    public FuseInitFlags? InitFlags;
    public int Destroys;
    public ManualResetEventSlim? ReadGate;
    public ManualResetEventSlim ReadEntered { get; } = new();
    private long _nextHandle = 100;

    public long Outstanding => Lookups.Values.Sum();

    public int Init(FuseInitFlags negotiated)
    {
        InitFlags = negotiated;
        return 0;
    }

    public void Destroy()
    {
        Interlocked.Increment(ref Destroys);
        Lookups.Clear();
        OpenHandles.Clear();
    }

    private static FuseAttr AttrOf(ulong id) => new()
    {
        ino = 1000 + id,
        mode = id is 1 or 3 ? 0x41EDu : 0x81A4u,
        nlink = 1,
        size = 5,
    };

    private FuseEntry EntryOf(ulong id)
    {
        Lookups.AddOrUpdate(id, 1, (_, n) => n + 1);
        return new FuseEntry { NodeId = id, Attr = AttrOf(id), EntryTimeout = TimeSpan.FromSeconds(2), AttrTimeout = TimeSpan.FromSeconds(3) };
    }

    public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        string n = Encoding.UTF8.GetString(name);
        foreach (var t in Tree)
        {
            if (t.Parent == parent && t.Name == n)
            {
                entry = EntryOf(t.Id);
                return 0;
            }
        }
        return Errno.ENOENT;
    }

    public void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup)
    {
        Forgets.Enqueue((nodeId, nlookup));
        Lookups.AddOrUpdate(nodeId, -(long)nlookup, (_, n) => n - (long)nlookup);
    }

    public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = AttrOf(nodeId);
        timeout = TimeSpan.FromSeconds(3);
        return nodeId is >= 1 and <= 4 ? 0 : Errno.ENOENT;
    }

    public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry)
    {
        entry = EntryOf(3);
        return 0;
    }

    public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
    {
        ulong h = (ulong)Interlocked.Increment(ref _nextHandle);
        OpenHandles[h] = nodeId;
        result = new FuseOpenResult { Handle = h };
        return 0;
    }

    public int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result) => Open(ctx, nodeId, flags, 0, out result);

    public unsafe int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        bytesRead = 0;
        if (!OpenHandles.TryGetValue(handle, out ulong node) || node != nodeId) return Errno.EBADF;
        ReadEntered.Set();
        ReadGate?.Wait(TimeSpan.FromSeconds(30));
        byte[] data = Encoding.UTF8.GetBytes(Tag);
        // SAFETY: the server hands us its reply segments; we write at most each segment's length.
        var dest = new Span<byte>(destination[0].Pointer, destination[0].Length);
        int n = Math.Min(data.Length, dest.Length);
        data.AsSpan(0, n).CopyTo(dest);
        bytesRead = n;
        return 0;
    }

    public int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner) =>
        OpenHandles.TryRemove(handle, out _) ? 0 : Errno.EBADF;

    public int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags) => Release(ctx, nodeId, handle, flags, 0, 0);

    public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        if (!OpenHandles.ContainsKey(handle)) return Errno.EBADF;
        var list = new List<(string Name, ulong Id, bool Dir)> { (".", nodeId, true), ("..", 1, true) };
        foreach (var t in Tree)
        {
            if (t.Parent == nodeId) list.Add((t.Name, t.Id, t.Dir));
        }
        for (int i = (int)offset; i < list.Count; i++)
        {
            var (name, id, dir) = list[i];
            byte[] nb = Encoding.UTF8.GetBytes(name);
            uint type = dir ? 4u : 8u;
            if (!writer.IsPlus || name is "." or "..")
            {
                if (!writer.TryAdd(1000 + id, (ulong)i + 1, type, nb)) return 0;
                continue;
            }
            if (!writer.Fits(nb.Length)) return 0;
            if (!writer.TryAddPlus(EntryOf(id), (ulong)i + 1, type, nb)) return 0;
        }
        return 0;
    }

    public int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        stat = new FuseKstatfs { bsize = 512, blocks = 42 };
        return 0;
    }
}
