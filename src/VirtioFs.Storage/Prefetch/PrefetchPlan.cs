using System.Text;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Storage.Prefetch;

/// <summary>
/// Turns what to prefetch into chunk lists for <see cref="Cache.BlobCacheManager.PrefetchAsync"/>: named paths
/// (<c>--prefetch-files</c>), the image's own prefetch table, or every file (<c>--prefetch-all</c>). A directory stands
/// for every regular file below it (nydus treats prefetch-table directories the same way). Chunk lists are produced
/// lazily, one file at a time, and each regular file is listed once even if named twice or hard-linked.
/// </summary>
public static class PrefetchPlan
{
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000;

    /// <summary>Files named by absolute image paths ("/usr/bin/sh"); names that do not resolve are added to
    /// <paramref name="missing"/> (when given) and skipped.</summary>
    public static IEnumerable<IReadOnlyList<RafsChunk>> FromPaths(RafsImage image, IEnumerable<string> paths, ICollection<string>? missing = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(paths);
        var roots = new List<ulong>();
        foreach (var p in paths)
        {
            if (Resolve(image, p) is { } ino) roots.Add(ino);
            else missing?.Add(p);
        }
        return Files(image, roots);
    }

    /// <summary>The inodes of the bootstrap's prefetch table.</summary>
    public static IEnumerable<IReadOnlyList<RafsChunk>> FromPrefetchTable(RafsImage image) => Files(image, image.PrefetchInodes);

    /// <summary>Every regular file of the image, in directory order.</summary>
    public static IEnumerable<IReadOnlyList<RafsChunk>> All(RafsImage image) => Files(image, [image.RootIno]);

    private static ulong? Resolve(RafsImage image, string path)
    {
        ulong ino = image.RootIno;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            if (image.Lookup(ino, Encoding.UTF8.GetBytes(part), out ino) != 0) return null;
        }
        return ino;
    }

    private static IEnumerable<IReadOnlyList<RafsChunk>> Files(RafsImage image, IEnumerable<ulong> roots)
    {
        var seen = new HashSet<ulong>();
        var stack = new Stack<ulong>();
        var children = new List<ulong>();
        foreach (var root in roots)
        {
            stack.Push(root);
            while (stack.Count > 0)
            {
                ulong ino = stack.Pop();
                // Each inode once: hard links, a path named twice, and a corrupt image whose directories loop.
                if (!seen.Add(ino) || image.GetAttr(ino, out var attr) != 0) continue;
                if ((attr.Mode & S_IFMT) == S_IFDIR)
                {
                    children.Clear();
                    image.ReadDir(ino, 0, (name, child, _, _) =>
                    {
                        if (!name.SequenceEqual("."u8) && !name.SequenceEqual(".."u8)) children.Add(child);
                        return true;
                    });
                    for (int i = children.Count - 1; i >= 0; i--) stack.Push(children[i]);
                }
                else if ((attr.Mode & S_IFMT) == S_IFREG && attr.Size > 0)
                {
                    var chunks = new List<RafsChunk>();
                    if (image.GetChunks(ino, chunks) == 0) yield return chunks;
                }
            }
        }
    }
}
