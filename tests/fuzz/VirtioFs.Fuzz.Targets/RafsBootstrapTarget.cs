using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Fuzz;

/// <summary>
/// RAFS v5/v6 bootstraps, which arrive from a registry and are untrusted: the bytes are written to a file, opened with
/// <see cref="RafsImage.Open(string)"/> and then read the way the image filesystem and <c>vfs-image check</c> read
/// them: walk every directory, then per inode attributes, link target, xattrs, chunk list and lookups by name, and the
/// whole-image check. The reader documents <see cref="RafsFormatException"/> for a corrupt image and errno results
/// for corrupt inodes; anything else escaping is a finding.
/// </summary>
public sealed class RafsBootstrapTarget : IFuzzTarget
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-fuzz-boot-").FullName;
    private readonly string _path;
    private readonly List<RafsChunk> _chunks = [];
    private readonly List<byte[]> _names = [];
    private readonly List<(byte[] Path, ulong Ino, RafsAttr Attr)> _entries = [];

    public RafsBootstrapTarget()
    {
        _path = Path.Combine(_dir, "input.boot");
    }

    public string Name => "rafs";

    public int MaxInput => 256 * 1024;

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        foreach (int version in new[] { 6, 5 })
        {
            string root = Path.Combine(_dir, $"seed-v{version}");
            TestImage image = TestImage.Build(root, version, version == 6 ? Compressor.Lz4Block : Compressor.Zstd);
            yield return ($"v{version}", File.ReadAllBytes(image.Bootstrap));
            Directory.Delete(root, recursive: true);
        }
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        using (var f = new FileStream(_path, FileMode.Create, FileAccess.Write))
        {
            f.Write(input);
        }
        RafsImage image;
        try
        {
            image = RafsImage.Open(_path, plainErofs: input.Length > 0 && (input[^1] & 1) != 0);
        }
        catch (RafsFormatException)
        {
            return;
        }
        using (image)
        {
            Explore(image);
            if (_entries.Any(e => e.Attr.Size / Math.Max(image.ChunkSize, 1u) > 1 << 16))
            {
                return; // the checker lists whole files: see the bound in Explore
            }
            try
            {
                _ = ImageChecker.Check(image, blobDir: null, trustedKey: null);
            }
            catch (RafsFormatException)
            {
                // The checker walks with ImageWalker, which refuses a corrupt tree this way.
            }
        }
    }

    private void Explore(RafsImage image)
    {
        _ = (image.Blobs.Count, image.PrefetchInodes.Count, image.RootDigest, image.Signature);
        foreach (ulong ino in image.PrefetchInodes.Take(64))
        {
            _ = image.GetAttr(ino, out _);
        }
        // The walker refuses a corrupt tree with RafsFormatException; what it yielded before is explored with the
        // per-inode calls, which must answer errno values and never throw.
        _entries.Clear();
        try
        {
            foreach (var entry in ImageWalker.Walk(image))
            {
                _entries.Add(entry);
                if (_entries.Count >= 4096)
                {
                    break;
                }
            }
        }
        catch (RafsFormatException)
        {
        }
        foreach (var (path, ino, attr) in _entries)
        {
            _ = image.GetAttr(ino, out _);
            if (attr.FileType == 0xA000)
            {
                _ = image.ReadLink(ino, out _);
            }
            _names.Clear();
            if (image.ListXattr(ino, _names) == 0)
            {
                foreach (byte[] name in _names)
                {
                    _ = image.GetXattr(ino, name, out _);
                }
            }
            _ = image.GetXattr(ino, "user.absent"u8, out _);
            _chunks.Clear();
            if (attr.Size / Math.Max(image.ChunkSize, 1u) <= 1 << 16)
            {
                // The whole-file list (the checker's, the merkle verifier's) is bounded by RafsImage's chunk limit per
                // file, 2^24 entries, which is past this harness's allocation cap: list whole files of up to 2^16.
                _ = image.GetChunks(ino, _chunks);
            }
            _chunks.Clear();
            _ = image.GetChunks(ino, attr.Size / 2, 4096, _chunks);
            if (attr.FileType == 0x4000)
            {
                _ = image.Lookup(ino, "absent"u8, out _);
                _ = image.ReadDir(ino, 1, (_, _, _, _) => true);
            }
            if (path.Length > 0)
            {
                _ = ImageWalker.Resolve(image, "/" + ImageWalker.Show(path), out _);
            }
            if (attr.Ino <= uint.MaxValue)
            {
                _ = image.GetInodeDigest((uint)attr.Ino).Length;
            }
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
