using System.Text;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.RafsFs.Dependencies;

/// <summary>
/// Path resolution inside an image, as the kernel would do it in a container whose root is the image (path_resolution(7)):
/// symbolic links are followed, absolute ones from the image's root, "." and ".." as usual ("/.." is "/"), with at most
/// <see cref="MaxLinks"/> links per path (the kernel's ELOOP limit), so a hostile image cannot loop.
/// </summary>
internal static class ImagePaths
{
    public const int MaxLinks = 40;
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFLNK = 0xA000;

    /// <summary>The inode <paramref name="path"/> (absolute) ends at, links followed, or null.</summary>
    public static ulong? Resolve(RafsImage image, string path)
    {
        var dirs = new List<ulong> { image.RootIno }; // the directories walked so far, for ".."
        var pending = new Stack<string>();
        Push(pending, path);
        int links = 0;
        ulong current = image.RootIno;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".") continue;
            if (part == "..")
            {
                if (dirs.Count > 1) dirs.RemoveAt(dirs.Count - 1);
                current = dirs[^1];
                continue;
            }
            if (image.Lookup(dirs[^1], Encoding.UTF8.GetBytes(part), out ulong ino) != 0 || image.GetAttr(ino, out var attr) != 0) return null;
            if ((attr.Mode & S_IFMT) == S_IFLNK)
            {
                if (++links > MaxLinks || image.ReadLink(ino, out var target) != 0 || target.Length == 0) return null;
                string to = Encoding.UTF8.GetString(target);
                if (to[0] == '/') dirs.RemoveRange(1, dirs.Count - 1);
                Push(pending, to);
                current = dirs[^1];
                continue;
            }
            current = ino;
            if ((attr.Mode & S_IFMT) == S_IFDIR) dirs.Add(ino);
            else if (pending.Count > 0) return null; // a file in the middle of a path: ENOTDIR
        }
        return current;
    }

    /// <summary>Pushes a path's components so that the first is popped first.</summary>
    private static void Push(Stack<string> pending, string path)
    {
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (int i = parts.Length - 1; i >= 0; i--) pending.Push(parts[i]);
    }
}
