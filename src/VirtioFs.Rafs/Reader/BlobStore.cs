using Microsoft.Win32.SafeHandles;

namespace VirtioFs.Rafs.Reader;

/// <summary>Reads chunks from blob files in a directory (named by blob id, as nydus's localfs backend does),
/// decompresses them and optionally checks their digest.</summary>
public sealed class BlobStore : IDisposable
{
    private readonly string _dir;
    private readonly RafsImage _image;
    private readonly Dictionary<uint, SafeFileHandle> _open = new();
    private readonly List<RafsChunk> _chunks = new();
    private byte[]? _buffer;

    public BlobStore(RafsImage image, string blobDir)
    {
        _image = image;
        _dir = blobDir;
    }

    private SafeFileHandle Handle(uint blob)
    {
        if (!_open.TryGetValue(blob, out var h))
        {
            var id = _image.Blobs[(int)blob].BlobId;
            var path = Path.Combine(_dir, id);
            if (!File.Exists(path)) throw new RafsFormatException($"blob {id} not found in '{_dir}'");
            h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            _open[blob] = h;
        }
        return h;
    }

    /// <summary>Fills <paramref name="dst"/> (UncompressedSize bytes) with a chunk's data; returns null or an error text.</summary>
    public string? ReadChunk(in RafsChunk c, Span<byte> dst, bool verify)
    {
        if (c.IsHole) { dst.Clear(); return null; }
        if (dst.Length != c.UncompressedSize) return "destination size mismatch";
        var h = Handle(c.BlobIndex);
        long len = RandomAccess.GetLength(h);
        if (c.CompressedOffset > (ulong)len || c.CompressedSize > (ulong)len - c.CompressedOffset)
            return $"chunk {c.ChunkIndex} of blob {_image.Blobs[(int)c.BlobIndex].BlobId} lies past the end of the blob ({len} bytes)";
        var src = new byte[c.CompressedSize];
        int got = 0;
        while (got < src.Length)
        {
            int r = RandomAccess.Read(h, src.AsSpan(got), (long)c.CompressedOffset + got);
            if (r <= 0) return "short read from blob";
            got += r;
        }
        if (c.IsCompressed)
        {
            if (!Codec.Decompress(c.Compressor, src, dst)) return $"chunk {c.ChunkIndex} of blob {_image.Blobs[(int)c.BlobIndex].BlobId} does not decompress";
        }
        else
        {
            if (src.Length != dst.Length) return "uncompressed chunk size mismatch";
            src.CopyTo(dst);
        }
        if (verify)
        {
            Span<byte> d = stackalloc byte[Codec.DigestSize];
            Codec.Hash(_image.Blobs[(int)c.BlobIndex].Digester, dst, d);
            var want = c.Digest;
            if (!d.SequenceEqual(want)) return $"chunk {c.ChunkIndex} of blob {_image.Blobs[(int)c.BlobIndex].BlobId} has digest {Convert.ToHexStringLower(d)}, expected {Convert.ToHexStringLower(want)}";
        }
        return null;
    }

    /// <summary>Copies a whole file's data to <paramref name="output"/>; holes are skipped when output is seekable.</summary>
    public string? CopyFile(ulong ino, Stream output, bool verify)
    {
        var chunks = _chunks;
        chunks.Clear();
        int rc = _image.GetChunks(ino, chunks);
        if (rc != 0) return $"chunk list unreadable (errno {rc})";
        if (chunks.Count == 0) return null;
        var buf = _buffer ??= new byte[_image.ChunkSize];
        foreach (var c in chunks)
        {
            var dst = buf.AsSpan(0, (int)Math.Min(c.UncompressedSize, (uint)buf.Length));
            if (c.UncompressedSize > buf.Length) return "chunk larger than the chunk size";
            var err = ReadChunk(c, dst, verify);
            if (err is not null) return err;
            if (output.CanSeek && dst.IndexOfAnyExcept((byte)0) < 0) output.Seek(dst.Length, SeekOrigin.Current);
            else output.Write(dst);
        }
        if (output.CanSeek) output.SetLength(output.Position);
        return null;
    }

    public void Dispose()
    {
        foreach (var h in _open.Values) h.Dispose();
        _open.Clear();
    }
}
