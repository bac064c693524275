namespace VirtioFs.RafsFs;

/// <summary>Knobs of a <see cref="RafsFileSystem"/>.</summary>
public sealed class RafsFsOptions
{
    /// <summary>Entry and attribute timeout. The image never changes, so a day (virtiofsd cache=always uses the same).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(86400);

    /// <summary>Check each inode's metadata and xattrs, and directory, file and symlink digests, against the image's
    /// merkle tree as they are first used (the caller has established that the root digest is trusted).</summary>
    public bool VerifyMerkle { get; init; }

    /// <summary>When a reader starts on a chunk, decode the next one on the thread pool so its fetch, digest check and
    /// decompression overlap with the reader (sequential reads in a guest wait on each chunk otherwise). Meant for
    /// read-through (no cache directory); with one, the background prefetch fills the cache instead.</summary>
    public bool DecodeAhead { get; init; }

    /// <summary>Most files open at once; further opens fail with ENFILE rather than growing without bound.</summary>
    public int MaxOpenFiles { get; init; } = 1 << 20;
}
