using VirtioFs.Oci;
using VirtioFs.Storage.Cache;

namespace VirtioFs.RafsFs;

/// <summary>Which files to warm the cache with after mounting.</summary>
public enum PrefetchSource
{
    /// <summary>The bootstrap's prefetch table when it has one, otherwise nothing (nydus's default with fs_prefetch on).</summary>
    ImageTable,
    /// <summary>No prefetch.</summary>
    None,
    /// <summary>The paths of <see cref="RafsMountOptions.PrefetchFiles"/>.</summary>
    Files,
    /// <summary>Every regular file of the image.</summary>
    All,
}

/// <summary>When to fetch a program's shared libraries as soon as the program is first read
/// (<see cref="Dependencies.DependencyPrefetcher"/>).</summary>
public enum DependencyPrefetch
{
    /// <summary>With a chunk cache in front of a registry or a bucket: where a miss costs a round trip.</summary>
    Remote,
    /// <summary>Never (<c>--no-prefetch-libs</c>).</summary>
    Off,
    /// <summary>With any chunk cache, a local blob directory too (tests).</summary>
    Always,
}

/// <summary>Everything needed to serve one image: the flags of <c>vfsd --bootstrap</c> or a nydusd JSON config.</summary>
public sealed class RafsMountOptions
{
    /// <summary>The RAFS bootstrap (metadata) file.</summary>
    public required string Bootstrap { get; set; }

    /// <summary>Directory of the data blobs, each named by its blob id (nydus localfs <c>dir</c>).</summary>
    public string? BlobDir { get; set; }

    /// <summary>One data blob file (nydus localfs <c>blob_file</c>): the image must have exactly one blob.</summary>
    public string? BlobFile { get; set; }

    /// <summary>Read blobs from this OCI registry repository instead of a directory (nydus <c>device.backend.type =
    /// registry</c>): each blob is the layer whose digest is <c>sha256:</c> + its blob id.</summary>
    public RegistryOptions? Registry { get; set; }

    /// <summary>Read blobs from an S3 or OSS bucket (nydus <c>device.backend.type = s3 | oss</c>): each blob is the
    /// object <c>object_prefix</c> + its blob id.</summary>
    public VirtioFs.Oci.ObjectStorage.ObjectStorageOptions? ObjectStorage { get; set; }

    /// <summary>Persistent chunk cache directory (nydus blobcache <c>work_dir</c>); null reads through without caching.</summary>
    public string? CacheDir { get; set; }

    public VerifyMode Verify { get; set; } = VerifyMode.Fetch;

    /// <summary>Without a cache: decode a file's next chunk in the background when a reader starts on a chunk
    /// (<see cref="RafsFsOptions.DecodeAhead"/>).</summary>
    public bool DecodeAhead { get; set; } = true;

    /// <summary>nydus <c>amplify_io</c>: a cache miss fetches this many following bytes of the same file too.</summary>
    public int? AmplificationBytes { get; set; }

    public PrefetchSource Prefetch { get; set; } = PrefetchSource.ImageTable;

    public DependencyPrefetch PrefetchLibraries { get; set; } = DependencyPrefetch.Remote;

    /// <summary>Absolute image paths for <see cref="PrefetchSource.Files"/>.</summary>
    public IReadOnlyList<string> PrefetchFiles { get; set; } = [];

    public int PrefetchThreads { get; set; } = 2;

    /// <summary>Backend bytes per second prefetch may use; 0 = unlimited.</summary>
    public long PrefetchBandwidth { get; set; }

    /// <summary>Refuse the image unless its root digest is this (32 bytes).</summary>
    public byte[]? RootDigest { get; set; }

    /// <summary>Refuse the image unless its root digest carries a valid Ed25519 signature by this public key (32 bytes).</summary>
    public byte[]? TrustKey { get; set; }

    /// <summary>Entry/attribute timeout handed to the filesystem.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(86400);

    /// <summary>Digests are checked lazily whenever the root is pinned by a digest or a key.</summary>
    public bool VerifiesMerkle => RootDigest is not null || TrustKey is not null;
}
