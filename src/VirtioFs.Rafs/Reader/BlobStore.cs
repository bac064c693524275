using System.Buffers.Binary;
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

    /// <summary>Checks a blob's nydus metadata (CI array + header) against the chunks the bootstrap names.</summary>
    public string? CheckBlobMeta(uint blob, IReadOnlyDictionary<uint, RafsChunk> chunksByIndex)
    {
        var b = _image.Blobs[(int)blob];
        if (b.CiUncompressedSize == 0) return null; // blob without metadata (e.g. a chunk-dict blob from another tool)
        var h = Handle(blob);
        long len = RandomAccess.GetLength(h);
        if (b.ChunkCount > (1 << 24) || b.CiUncompressedSize != (ulong)b.ChunkCount * Layout.BlobChunkInfoV1Ondisk.Size)
            return $"blob {b.BlobId}: chunk information array size {b.CiUncompressedSize} does not match {b.ChunkCount} chunks";
        if (b.CiOffset > (ulong)len || b.CiCompressedSize > (ulong)len - b.CiOffset || (ulong)len - b.CiOffset - b.CiCompressedSize < Layout.BlobCompressionContextHeader.Size)
            return $"blob {b.BlobId}: chunk information array lies past the end of the blob";
        var header = new byte[Layout.BlobCompressionContextHeader.Size];
        RandomAccess.Read(h, header, (long)(b.CiOffset + b.CiCompressedSize));
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Layout.BlobCompressionContextHeader.Magic
            || BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(header.Length - 4)) != Layout.BlobCompressionContextHeader.Magic)
            return $"blob {b.BlobId}: bad blob metadata header magic";
        if (BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12)) != b.ChunkCount)
            return $"blob {b.BlobId}: blob metadata header counts {BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(12))} chunks, blob table {b.ChunkCount}";
        var comp = new byte[b.CiCompressedSize];
        RandomAccess.Read(h, comp, (long)b.CiOffset);
        var ci = new byte[b.CiUncompressedSize];
        if (!Codec.Decompress(b.CiCompressor, comp, ci)) return $"blob {b.BlobId}: chunk information array does not decompress";
        foreach (var (index, c) in chunksByIndex)
        {
            if (index >= b.ChunkCount) return $"blob {b.BlobId}: chunk index {index} beyond its {b.ChunkCount} chunks";
            var e = System.Runtime.InteropServices.MemoryMarshal.Read<Layout.BlobChunkInfoV1Ondisk>(ci.AsSpan((int)index * Layout.BlobChunkInfoV1Ondisk.Size));
            if (e.CompressedOffset != c.CompressedOffset || e.CompressedSize != c.CompressedSize || e.UncompressedOffset != c.UncompressedOffset || e.UncompressedSize != c.UncompressedSize)
                return $"blob {b.BlobId}: chunk {index} in the blob metadata disagrees with the bootstrap's chunk table";
        }
        return null;
    }

    public void Dispose()
    {
        foreach (var h in _open.Values) h.Dispose();
        _open.Clear();
    }
}
