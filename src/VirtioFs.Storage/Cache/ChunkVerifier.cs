using System.Collections.Concurrent;
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
        // Zero runs are common (preallocated files, sparse images stored as data): their digest depends only on the
        // length, so it is hashed once per length, as the builder's chunker does. The scan stops at the first non-zero
        // byte, so other data costs next to nothing here.
        if (data.IndexOfAnyExcept((byte)0) < 0 && ZeroDigest(blob.Info.Digester, data.Length) is { } zeroDigest) zeroDigest.CopyTo(digest);
        else Codec.Hash(blob.Info.Digester, data, digest);
        var want = chunk.Digest;
        bool matches = digest.SequenceEqual(want);
        actual = matches ? "" : Convert.ToHexStringLower(digest);
        return matches;
    }

    /// <summary>Zero-run digests by (digester, length); an image decides the lengths, so only so many are kept.</summary>
    private static readonly ConcurrentDictionary<(Digester, int), byte[]> ZeroDigests = new();
    private const int MaxZeroDigests = 64;

    /// <summary>The digest of <paramref name="length"/> zero bytes, or null when the table is full (hash the data).</summary>
    private static byte[]? ZeroDigest(Digester digester, int length) =>
        ZeroDigests.TryGetValue((digester, length), out var known) ? known
        : ZeroDigests.Count >= MaxZeroDigests ? null
        : ZeroDigests.GetOrAdd((digester, length), static key =>
        {
            var digest = new byte[Codec.DigestSize];
            Codec.Hash(key.Item1, new byte[key.Item2], digest);
            return digest;
        });
}
