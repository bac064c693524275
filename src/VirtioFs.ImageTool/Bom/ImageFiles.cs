using System.Text;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.ImageTool.Bom;

/// <summary>Reads one chunk's uncompressed bytes, wherever the blobs are (a local blob directory or a registry).</summary>
public interface IChunkSource : IDisposable
{
    /// <summary>Fills <paramref name="dst"/> with the chunk's data, checked against its digest; null or an error text.</summary>
    string? ReadChunk(in RafsChunk chunk, Span<byte> dst);

    /// <summary>Blob bytes read so far (compressed, as stored).</summary>
    long BytesRead { get; }
}

/// <summary>Chunks from blob files in a directory, counting what was read.</summary>
public sealed class LocalChunkSource(RafsImage image, string blobDir) : IChunkSource
{
    private readonly BlobStore _store = new(image, blobDir);
    public long BytesRead { get; private set; }

    public string? ReadChunk(in RafsChunk chunk, Span<byte> dst)
    {
        var err = _store.ReadChunk(chunk, dst, verify: true);
        if (err is null && !chunk.IsHole) BytesRead += chunk.CompressedSize;
        return err;
    }

    public void Dispose() => _store.Dispose();
}

/// <summary>One regular file, directory, symlink or other inode of the image, by its absolute path.</summary>
public readonly record struct ImageEntry(string Path, ulong Nid, RafsAttr Attr)
{
    public bool IsFile => Attr.FileType == 0x8000;
    public bool IsDirectory => Attr.FileType == 0x4000;
    public bool IsSymlink => Attr.FileType == 0xA000;
}

/// <summary>A file's content digest and where it came from. <see cref="Value"/> is null when the bootstrap does not hold
/// the content digest and the caller asked not to read data; <see cref="ChunkDigests"/> then lists what the bootstrap has.</summary>
public readonly record struct FileDigest(Digester Algorithm, byte[]? Value, bool FromBootstrap, byte[][]? ChunkDigests = null);

/// <summary>
/// The file tree of a RAFS image for catalogers: every path from the bootstrap alone, and file contents read on
/// demand chunk by chunk (only the chunks that cover the requested range), so a cataloger that reads a package
/// database or an ELF header fetches just those chunks.
/// </summary>
public sealed class ImageFiles : IDisposable
{
    /// <summary>Largest file a cataloger may read whole (a package database; an ELF binary is read by ranges).</summary>
    public const long MaxWholeRead = 64L << 20;
    private const int MaxSymlinkHops = 40;

    private readonly Dictionary<string, ImageEntry> _byPath = new(StringComparer.Ordinal);
    private readonly List<ImageEntry> _entries = new();
    private readonly List<RafsChunk> _chunks = new();
    private readonly Dictionary<(uint, uint), byte[]> _recent = new();
    private readonly Dictionary<ulong, FileDigest> _digests = new();

    public RafsImage Image { get; }
    public IChunkSource Chunks { get; }

    /// <summary>Bytes of file content read while hashing files whose digest the bootstrap does not hold.</summary>
    public long HashedBytes { get; private set; }
    public int DigestsFromBootstrap { get; private set; }
    public int DigestsComputed { get; private set; }
    public int DigestsNotHeld { get; private set; }

    public ImageFiles(RafsImage image, IChunkSource chunks)
    {
        Image = image;
        Chunks = chunks;
        foreach (var (path, nid, attr) in ImageWalker.Walk(image))
        {
            var e = new ImageEntry("/" + Encoding.UTF8.GetString(path), nid, attr);
            _entries.Add(e);
            _byPath[e.Path] = e;
        }
    }

    /// <summary>Every entry in breadth-first order, the root ("/") first.</summary>
    public IReadOnlyList<ImageEntry> Entries => _entries;

    /// <summary>The entry at an absolute path, following symlinks in every component but the last (as lstat does).</summary>
    public bool TryGet(string path, out ImageEntry entry) => TryResolve(path, followLast: false, out entry);

    /// <summary>The entry at an absolute path, following symlinks in every component (as stat does).</summary>
    public bool TryStat(string path, out ImageEntry entry) => TryResolve(path, followLast: true, out entry);

    private bool TryResolve(string path, bool followLast, out ImageEntry entry)
    {
        entry = default;
        var pending = new Stack<string>(path.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        var parts = new List<string>();
        int hops = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part == ".") continue;
            if (part == "..") { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            parts.Add(part);
            var cur = "/" + string.Join('/', parts);
            if (!_byPath.TryGetValue(cur, out var e)) return false;
            if (e.IsSymlink && (pending.Count > 0 || followLast))
            {
                if (++hops > MaxSymlinkHops || Image.ReadLink(e.Nid, out var t) != 0) return false;
                var target = Encoding.UTF8.GetString(t);
                parts.RemoveAt(parts.Count - 1);
                if (target.StartsWith('/')) parts.Clear();
                foreach (var p in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse()) pending.Push(p);
            }
        }
        var final = "/" + string.Join('/', parts);
        return _byPath.TryGetValue(final, out entry);
    }

    /// <summary>Reads [offset, offset + length) of a regular file (clipped at its end), fetching only the chunks that cover it.</summary>
    public byte[] ReadRange(in ImageEntry file, ulong offset, int length)
    {
        if (!file.IsFile) throw new InvalidDataException($"{file.Path} is not a regular file");
        if (offset >= file.Attr.Size || length <= 0) return [];
        int len = (int)Math.Min((ulong)length, file.Attr.Size - offset);
        var result = new byte[len];
        _chunks.Clear();
        int rc = Image.GetChunks(file.Nid, offset, (ulong)len, _chunks);
        if (rc != 0) throw new InvalidDataException($"{file.Path}: chunk list unreadable (errno {rc})");
        foreach (var c in _chunks)
        {
            var data = Chunk(c, file.Path);
            // Copy the overlap of [c.FileOffset, + size) with [offset, offset + len).
            ulong from = Math.Max(c.FileOffset, offset), to = Math.Min(c.FileOffset + c.UncompressedSize, offset + (ulong)len);
            if (from >= to) continue;
            data.AsSpan((int)(from - c.FileOffset), (int)(to - from)).CopyTo(result.AsSpan((int)(from - offset)));
        }
        return result;
    }

    /// <summary>Reads a whole regular file (package databases, manifests), refusing one over <see cref="MaxWholeRead"/>.</summary>
    public byte[] ReadAll(in ImageEntry file)
    {
        if (file.Attr.Size > MaxWholeRead) throw new InvalidDataException($"{file.Path} is {file.Attr.Size} bytes, more than a metadata file may be ({MaxWholeRead})");
        return ReadRange(file, 0, (int)file.Attr.Size);
    }

    private byte[] Chunk(in RafsChunk c, string path)
    {
        if (c.IsHole) return new byte[c.UncompressedSize];
        if (_recent.TryGetValue((c.BlobIndex, c.ChunkIndex), out var hit)) return hit;
        if (c.UncompressedSize > (16u << 20)) throw new InvalidDataException($"{path}: chunk of {c.UncompressedSize} bytes exceeds the 16 MiB nydus limit");
        var data = new byte[c.UncompressedSize];
        var err = Chunks.ReadChunk(c, data);
        if (err is not null) throw new InvalidDataException($"{path}: {err}");
        // A cataloger often reads one chunk twice (an ELF header, then a section in the same chunk): keep a few.
        if (_recent.Count >= 8) _recent.Clear();
        _recent[(c.BlobIndex, c.ChunkIndex)] = data;
        return data;
    }

    /// <summary>
    /// The content digest of a regular file, in the digester of the image's blobs (BLAKE3 or SHA-256; what `b3sum` or
    /// `sha256sum` print). An image built by this vfs-image (merkle extension version 3) holds it for every regular file
    /// in the file's merkle row, bound into the merkle tree. Other images (nydus's, older ours) hold it only for a file
    /// stored as one chunk: a chunk's digest is the digester over the chunk's uncompressed bytes (nydus
    /// storage/src/meta and our Chunker), and that chunk is the whole file; their per-inode digests of a file of several
    /// chunks are digests over the chunk digests, so such a file is read and hashed.
    /// </summary>
    public FileDigest Digest(in ImageEntry file, bool readData = true)
    {
        if (_digests.TryGetValue(file.Nid, out var known)) return known;
        if (Image.GetFileDigest(file.Attr.Ino) is { Length: Codec.DigestSize } recorded)
        {
            DigestsFromBootstrap++;
            return _digests[file.Nid] = new FileDigest(Image.Digester, recorded.ToArray(), true);
        }
        _chunks.Clear();
        int rc = Image.GetChunks(file.Nid, _chunks);
        if (rc != 0) throw new InvalidDataException($"{file.Path}: chunk list unreadable (errno {rc})");
        FileDigest d;
        var digester = _chunks.Count > 0 && !_chunks[0].IsHole ? Image.Blobs[(int)_chunks[0].BlobIndex].Digester : Image.Digester;
        if (file.Attr.Size == 0)
        {
            var v = new byte[Codec.DigestSize];
            Codec.Hash(digester, [], v);
            d = new FileDigest(digester, v, true);
            DigestsFromBootstrap++;
        }
        else if (_chunks.Count == 1 && !_chunks[0].IsHole && _chunks[0].FileOffset == 0 && _chunks[0].UncompressedSize == file.Attr.Size)
        {
            var chunkDigest = _chunks[0].Digest;
            d = new FileDigest(digester, ((ReadOnlySpan<byte>)chunkDigest).ToArray(), true);
            DigestsFromBootstrap++;
        }
        else if (!readData)
        {
            d = new FileDigest(digester, null, false, _chunks.Select(c => { var cd = c.Digest; return ((ReadOnlySpan<byte>)cd).ToArray(); }).ToArray());
            DigestsNotHeld++;
        }
        else
        {
            var list = _chunks.ToArray();
            using var h = new Codec.Incremental(digester);
            foreach (var c in list)
            {
                h.Update(Chunk(c, file.Path));
                HashedBytes += c.UncompressedSize;
            }
            var v = new byte[Codec.DigestSize];
            h.Finish(v);
            d = new FileDigest(digester, v, false);
            DigestsComputed++;
        }
        _digests[file.Nid] = d;
        return d;
    }

    public void Dispose() => Chunks.Dispose();
}
