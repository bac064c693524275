using System.Runtime.InteropServices;

// The builder's in-memory tree. Every source (a host directory, OCI tar layers) produces this model; the
// chunker fills in chunk lists, the merkle pass fills in digests, and the v5/v6 writers lay it out.
namespace VirtioFs.Rafs.Builder;

/// <summary>Where a regular file's bytes live: a host file, or a range of a spool file (tar layers).</summary>
public readonly record struct FileData(string Path, long Offset, long Length);

/// <summary>One inode of the build tree; hard links are several directory entries naming the same object.</summary>
public sealed class BuildInode
{
    public uint Mode;
    public uint Uid;
    public uint Gid;
    public long MtimeSec;
    public uint MtimeNsec;
    public ulong Rdev;
    public ulong Size;
    public byte[]? SymlinkTarget;
    public FileData? Data;
    /// <summary>Extended attributes, sorted by name bytes before layout.</summary>
    public List<KeyValuePair<byte[], byte[]>> Xattrs = new();
    /// <summary>Directory entries (directories only), sorted by name bytes before layout.</summary>
    public List<BuildEntry>? Children;
    public uint Nlink;
    /// <summary>Chunks of a regular file, in file order.</summary>
    public ChunkRecord[] Chunks = [];
    /// <summary>The digest a RAFS v5 inode record carries (nydus's tree: <see cref="Merkle.Compute"/>).</summary>
    public byte[] Digest = [];
    /// <summary>Merkle extension digests and the metadata the inode digest binds (<see cref="Merkle"/>).</summary>
    public byte[] ContentDigest = [];
    public byte[] InodeDigest = [];
    /// <summary>Regular files: the digest of the whole content (what b3sum / sha256sum print), filled by the chunker
    /// as the data streams through it (<see cref="Chunker"/>); the merkle row stores it.</summary>
    public byte[] FileDigest = [];
    public Layout.BoundMeta Meta;
    /// <summary>Sequential inode number (1 = root) assigned at layout time.</summary>
    public uint Ino;
    /// <summary>Byte offset of the inode record in the bootstrap (v6) assigned at layout time.</summary>
    public long MetaOffset = -1;
    public bool Visited;

    public bool IsDir => (Mode & 0xF000) == 0x4000;
    public bool IsReg => (Mode & 0xF000) == 0x8000;
    public bool IsSymlink => (Mode & 0xF000) == 0xA000;
    public bool IsDevice => (Mode & 0xF000) is 0x2000 or 0x6000;

    public static BuildInode NewDir(uint mode = 0x41ED) => new() { Mode = mode, Children = new() };

    public void SetXattr(byte[] name, byte[] value)
    {
        for (int i = 0; i < Xattrs.Count; i++)
        {
            if (Xattrs[i].Key.AsSpan().SequenceEqual(name)) { Xattrs[i] = new(name, value); return; }
        }
        Xattrs.Add(new(name, value));
    }
}

/// <summary>A name in a directory.</summary>
public sealed class BuildEntry
{
    public BuildEntry(byte[] name, BuildInode inode) { Name = name; Inode = inode; }
    public byte[] Name;
    public BuildInode Inode;
}

/// <summary>A stored chunk: its digest and where it sits in which blob.</summary>
public sealed class ChunkRecord
{
    public byte[] Digest = new byte[Codec.DigestSize];
    public uint BlobIndex;
    public uint Index;
    public ChunkFlags Flags;
    public uint CompressedSize;
    public uint UncompressedSize;
    public ulong CompressedOffset;
    public ulong UncompressedOffset;
}

/// <summary>Tree-wide helpers: name order, path lookup, validation before layout.</summary>
public static class BuildTree
{
    /// <summary>Byte-wise name order (what EROFS binary search and nydus's sort use).</summary>
    public static int CompareNames(byte[] a, byte[] b) => a.AsSpan().SequenceCompareTo(b);

    public static BuildEntry? Find(BuildInode dir, ReadOnlySpan<byte> name)
    {
        if (dir.Children is null) return null;
        foreach (var e in dir.Children)
        {
            if (e.Name.AsSpan().SequenceEqual(name)) return e;
        }
        return null;
    }

    /// <summary>Sorts every directory and the xattrs, assigns nlink and inode numbers (breadth first, root = 1),
    /// and returns the unique inodes in that order. Rejects cycles and bad names.</summary>
    public static List<BuildInode> Finalize(BuildInode root)
    {
        var order = new List<BuildInode>();
        var queue = new Queue<BuildInode>();
        ClearMarks(root);
        root.Visited = true;
        queue.Enqueue(root);
        var linkCount = new Dictionary<BuildInode, uint>(ReferenceEqualityComparer.Instance);
        while (queue.Count > 0)
        {
            var n = queue.Dequeue();
            order.Add(n);
            n.Ino = checked((uint)order.Count);
            n.Xattrs.Sort((x, y) => CompareNames(x.Key, y.Key));
            if (n.Children is null) continue;
            n.Children.Sort((x, y) => CompareNames(x.Name, y.Name));
            uint subdirs = 0;
            for (int i = 0; i < n.Children.Count; i++)
            {
                var e = n.Children[i];
                ValidateName(e.Name);
                if (i > 0 && n.Children[i - 1].Name.AsSpan().SequenceEqual(e.Name))
                    throw new RafsFormatException($"duplicate name '{Show(e.Name)}' in a directory");
                var c = e.Inode;
                if (c.IsDir)
                {
                    if (c.Visited) throw new RafsFormatException($"directory '{Show(e.Name)}' is linked twice (cycle or directory hard link)");
                    subdirs++;
                }
                else
                {
                    linkCount[c] = linkCount.GetValueOrDefault(c) + 1;
                }
                if (!c.Visited)
                {
                    c.Visited = true;
                    queue.Enqueue(c);
                }
            }
            n.Nlink = 2 + subdirs;
        }
        foreach (var (n, count) in linkCount) n.Nlink = count;
        return order;
    }

    private static void ClearMarks(BuildInode root)
    {
        var stack = new Stack<BuildInode>();
        stack.Push(root);
        root.Visited = false;
        var seen = new HashSet<BuildInode>(ReferenceEqualityComparer.Instance) { root };
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            n.Visited = false;
            if (n.Children is null) continue;
            foreach (var e in n.Children)
            {
                if (seen.Add(e.Inode)) stack.Push(e.Inode);
            }
        }
    }

    public static void ValidateName(ReadOnlySpan<byte> name)
    {
        if (name.Length == 0 || name.Length > 255) throw new RafsFormatException($"file name length {name.Length} is outside 1..255");
        if (name.IndexOf((byte)'/') >= 0 || name.IndexOf((byte)0) >= 0) throw new RafsFormatException($"file name '{Show(name)}' contains '/' or NUL");
        if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) throw new RafsFormatException("file name '.' or '..' in a directory listing");
    }

    public static string Show(ReadOnlySpan<byte> name) => System.Text.Encoding.UTF8.GetString(name);
}
