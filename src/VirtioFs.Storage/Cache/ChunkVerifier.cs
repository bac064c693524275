using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Storage.Cache;

/// <summary>
/// Decompresses chunks and checks them against their digest (the digest of the uncompressed data, with the blob's
/// digester; nydus storage/src/cache/mod.rs validates the same way). A mismatch is counted, logged and EIO: such data is
/// never written to the cache or returned.
/// </summary>
internal sealed class ChunkVerifier(CacheContext context)
{
    private const int EIO = Errno.EIO;

    /// <summary>Decompresses a chunk into <paramref name="plain"/> (its uncompressed size) and checks its digest.</summary>
    public int DecodeVerify(in RafsChunk chunk, BlobState blob, ReadOnlySpan<byte> stored, Span<byte> plain)
    {
        bool decoded = chunk.IsCompressed ? Codec.Decompress(chunk.Compressor, stored, plain) : stored.Length == plain.Length;
        if (!chunk.IsCompressed && decoded) stored.CopyTo(plain);
        if (!decoded)
        {
            Interlocked.Increment(ref context.Counters.DigestErrors);
            StorageLog.DecompressFailed(context.Logger, blob.Info.BlobId, chunk.ChunkIndex, Codec.Name(chunk.Compressor));
            return EIO;
        }
        return Verify(chunk, blob, plain);
    }

    /// <summary>Checks a chunk's plain data against its digest; logs and counts a mismatch.</summary>
    public int Verify(in RafsChunk chunk, BlobState blob, ReadOnlySpan<byte> plain)
    {
        string actual = "(wrong size)";
        if (plain.Length == (int)chunk.UncompressedSize && DigestMatches(chunk, blob, plain, out actual)) return 0;
        Interlocked.Increment(ref context.Counters.DigestErrors);
        var want = chunk.Digest;
        StorageLog.DigestMismatch(context.Logger, blob.Info.BlobId, chunk.ChunkIndex, actual, Convert.ToHexStringLower(want));
        return EIO;
    }

    /// <summary>True when <paramref name="data"/> hashes to the chunk's digest; <paramref name="actual"/> is the hex
    /// digest found when it does not.</summary>
    public static bool DigestMatches(in RafsChunk chunk, BlobState blob, ReadOnlySpan<byte> data, out string actual)
    {
        Span<byte> digest = stackalloc byte[Codec.DigestSize];
        Codec.Hash(blob.Info.Digester, data, digest);
        var want = chunk.Digest;
        bool matches = digest.SequenceEqual(want);
        actual = matches ? "" : Convert.ToHexStringLower(digest);
        return matches;
    }
}
