using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.Storage.Cache;

/// <summary>
/// Every chunk of an image by (blob, chunk index), gathered once from all of its files. A file's chunk list only says
/// what follows within that file; this says what follows in the blob, so a cache miss can also bring the chunks of the
/// next files the builder laid out after it (nydus amplify_io reaches across files the same way). Files of one
/// directory sit next to each other in the blob, so a container start that opens a few of them pays one round trip
/// instead of one per file. Images with more chunks than the cap get no index (amplification then stays within files).
/// </summary>
public sealed class BlobChunkIndex
{
    /// <summary>Most chunks indexed (about 100 bytes each, so at most ~26 MB; a 1 GiB image of 1 MiB chunks has ~1,000).</summary>
    public const long DefaultMaxChunks = 1 << 18;

    private readonly RafsChunk?[][] _byBlob;

    private BlobChunkIndex(RafsChunk?[][] byBlob) => _byBlob = byBlob;

    /// <summary>Walks every regular file of <paramref name="image"/>; null when the image has more than
    /// <paramref name="maxChunks"/> chunks in all (or a blob claims more chunks than that).</summary>
    public static BlobChunkIndex? Build(RafsImage image, long maxChunks = DefaultMaxChunks, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(image);
        long total = 0;
        foreach (var blob in image.Blobs) total += blob.ChunkCount;
        if (total > maxChunks) return null;
        var byBlob = new RafsChunk?[image.Blobs.Count][];
        for (int i = 0; i < byBlob.Length; i++) byBlob[i] = new RafsChunk?[image.Blobs[i].ChunkCount];
        foreach (var file in PrefetchPlan.All(image))
        {
            ct.ThrowIfCancellationRequested();
            foreach (var c in file)
            {
                // Out-of-range indexes are the image's lie to report on read, not here: leave them out.
                if (c.IsHole || c.BlobIndex >= byBlob.Length || c.ChunkIndex >= byBlob[c.BlobIndex].Length) continue;
                byBlob[c.BlobIndex][c.ChunkIndex] ??= c;
            }
        }
        return new BlobChunkIndex(byBlob);
    }

    /// <summary>The chunk at <paramref name="chunkIndex"/> of blob <paramref name="blobIndex"/>, if a file uses it.</summary>
    public bool TryGet(uint blobIndex, uint chunkIndex, out RafsChunk chunk)
    {
        chunk = default;
        if (blobIndex >= _byBlob.Length || chunkIndex >= _byBlob[blobIndex].Length || _byBlob[blobIndex][chunkIndex] is not { } c) return false;
        chunk = c;
        return true;
    }
}
