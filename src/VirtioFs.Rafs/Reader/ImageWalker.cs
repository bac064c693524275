namespace VirtioFs.Rafs.Reader;

/// <summary>Traversals over an image that refuse directory cycles and bound their work by the inode count.</summary>
public static class ImageWalker
{
    /// <summary>Every (path, nid, attr) in breadth-first order; each directory visited once.</summary>
    public static IEnumerable<(byte[] Path, ulong Ino, RafsAttr Attr)> Walk(RafsImage image)
    {
        var seenDirs = new HashSet<ulong>();
        var queue = new Queue<(byte[], ulong)>();
        int rc0 = image.GetAttr(image.RootIno, out var rootAttr);
        if (rc0 != 0) throw new RafsFormatException($"root inode unreadable (errno {rc0})");
        yield return ([], image.RootIno, rootAttr);
        queue.Enqueue(([], image.RootIno));
        seenDirs.Add(image.RootIno);
        // Every directory entry occupies at least 8 bytes of the bootstrap (v5 inode table slot / v6 dirent),
        // so more entries than that means a cycle or corruption; this bounds work by the file, not by a field.
        ulong budget = (ulong)image.BootstrapSize / 4 + 16;
        var entries = new List<(byte[] Name, ulong Ino)>();
        while (queue.Count > 0)
        {
            var (path, dir) = queue.Dequeue();
            entries.Clear();
            int rc = image.ReadDir(dir, 0, (name, ino, _, _) =>
            {
                if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) return true;
                if (budget-- == 0) return false;
                entries.Add((name.ToArray(), ino));
                return true;
            });
            if (rc != 0) throw new RafsFormatException($"directory '/{Show(path)}' is corrupt (errno {rc})");
            if (budget == 0) throw new RafsFormatException("more directory entries than the inode count allows (cycle?)");
            foreach (var (name, ino) in entries)
            {
                var p = path.Length == 0 ? name : [.. path, (byte)'/', .. name];
                rc = image.GetAttr(ino, out var a);
                if (rc != 0) throw new RafsFormatException($"inode of '/{Show(p)}' (nid {ino}) is corrupt (errno {rc})");
                yield return (p, ino, a);
                if ((a.Mode & 0xF000) == 0x4000)
                {
                    if (!seenDirs.Add(ino)) throw new RafsFormatException($"directory cycle: '/{Show(p)}' links to an already visited directory");
                    queue.Enqueue((p, ino));
                }
            }
        }
    }

    /// <summary>Unique inodes (hard links once).</summary>
    public static IEnumerable<(ulong Ino, RafsAttr Attr)> Inodes(RafsImage image)
    {
        var seen = new HashSet<ulong>();
        foreach (var (_, ino, a) in Walk(image))
        {
            if (seen.Add(ino)) yield return (ino, a);
        }
    }

    /// <summary>Resolves an absolute path inside the image (no symlink following).</summary>
    public static int Resolve(RafsImage image, string path, out ulong ino)
    {
        ino = image.RootIno;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            int rc = image.Lookup(ino, System.Text.Encoding.UTF8.GetBytes(part), out ino);
            if (rc != 0) return rc;
        }
        return 0;
    }

    public static string Show(ReadOnlySpan<byte> b) => System.Text.Encoding.UTF8.GetString(b);
}
