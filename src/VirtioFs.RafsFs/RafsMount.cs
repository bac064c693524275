using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Oci;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend;
using VirtioFs.Storage.Backend.Registry;
using VirtioFs.Storage.Cache;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.RafsFs;

/// <summary>Why an image cannot be served: a missing file, a bad bootstrap, or a root digest or signature that does
/// not match what the caller trusts. The message names the cause.</summary>
public sealed class RafsMountException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// One served image, composed from its parts and owning them: the mapped bootstrap, the blob backend, the chunk cache,
/// the <see cref="RafsFileSystem"/> over them and the background prefetch. <see cref="Open"/> checks trust before
/// anything is served; <see cref="Dispose"/> stops the prefetch and releases everything in reverse order.
/// </summary>
public sealed class RafsMount : IDisposable
{
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _prefetchCancel = new();
    private int _disposed;

    private RafsMount(RafsImage image, IBlobBackend backend, BlobCacheManager cache, RafsFileSystem fs, ILogger logger)
    {
        Image = image;
        Backend = backend;
        Cache = cache;
        FileSystem = fs;
        _logger = logger;
    }

    public RafsImage Image { get; }
    public IBlobBackend Backend { get; }
    public BlobCacheManager Cache { get; }
    public RafsFileSystem FileSystem { get; }

    /// <summary>The background prefetch (completed when there is none).</summary>
    public Task Prefetch { get; private set; } = Task.CompletedTask;

    /// <summary>Opens, checks and composes an image; starts its prefetch. Throws <see cref="RafsMountException"/>.</summary>
    public static RafsMount Open(RafsMountOptions options, ILoggerFactory? loggers = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        loggers ??= NullLoggerFactory.Instance;
        ILogger logger = loggers.CreateLogger("vfsd.rafs");
        RafsImage image;
        try
        {
            image = RafsImage.Open(options.Bootstrap);
        }
        catch (Exception e) when (e is RafsFormatException or IOException or UnauthorizedAccessException)
        {
            throw new RafsMountException($"cannot open bootstrap {options.Bootstrap}: {e.Message}", e);
        }

        IBlobBackend? backend = null;
        BlobCacheManager? cache = null;
        try
        {
            byte[]? root = CheckTrust(image, options, logger);
            backend = OpenBackend(image, options, loggers);
            var cacheOptions = new CacheOptions
            {
                CacheDir = options.CacheDir,
                Verify = options.Verify,
                AmplificationBytes = options.AmplificationBytes ?? new CacheOptions().AmplificationBytes,
            };
            cache = new BlobCacheManager(image.Blobs, backend, cacheOptions, loggers.CreateLogger("vfsd.storage"));
            var fs = new RafsFileSystem(image, cache, new RafsFsOptions { Timeout = options.Timeout, VerifyMerkle = options.VerifiesMerkle, DecodeAhead = options.CacheDir is null && options.DecodeAhead },
                loggers.CreateLogger("vfsd.rafs"));
            if (root is not null && fs.VerifyRoot(root) is { } why) throw new RafsMountException($"image {options.Bootstrap} refused: {why}");
            RafsFsLog.Serving(logger, (int)image.Version, options.Bootstrap, image.InodeCount, image.Blobs.Count, image.ChunkSize, options.VerifiesMerkle);
            var mount = new RafsMount(image, backend, cache, fs, logger);
            mount.StartNeighbourIndex(options);
            mount.StartPrefetch(options);
            mount.StartDependencyPrefetch(options);
            return mount;
        }
        catch (Exception e)
        {
            cache?.Dispose();
            backend?.Dispose();
            image.Dispose();
            if (e is RafsMountException) throw;
            if (e is IOException or UnauthorizedAccessException or ArgumentException or RafsFormatException)
                throw new RafsMountException($"cannot serve {options.Bootstrap}: {e.Message}", e);
            throw;
        }
    }

    /// <summary>Refuses an image whose root digest or signature is not the trusted one; returns the trusted root, or
    /// null when nothing pins it.</summary>
    private static byte[]? CheckTrust(RafsImage image, RafsMountOptions options, ILogger logger)
    {
        if (!options.VerifiesMerkle) return null;
        // Only the version 2 tree binds modes, owners, device numbers and xattrs; trusting a root that does not would
        // let whoever can rewrite the bootstrap add a setuid bit or security.capability without changing it.
        if (image.RootDigest is not { Length: Codec.DigestSize } root)
            throw new RafsMountException($"image {options.Bootstrap} refused: --root-digest/--trust-key need the VirtioFs merkle extension version {MerkleExtension.MetadataBoundVersion} or later (metadata-bound digests), "
                + (image.MerkleVersion == 0 ? "and this image has none (built by nydus or another tool?); rebuild it with vfs-image create"
                    : $"and this image has version {image.MerkleVersion}; rebuild it with this vfs-image"));
        string hex = Convert.ToHexStringLower(root);
        var how = new List<string>();
        if (options.RootDigest is { } want)
        {
            if (!root.AsSpan().SequenceEqual(want))
                throw new RafsMountException($"image {options.Bootstrap} refused: root digest {hex} is not the trusted {Convert.ToHexStringLower(want)}");
            how.Add("matches --root-digest");
        }
        if (options.TrustKey is { } key)
        {
            if (image.Signature is not { Length: 64 } sig)
                throw new RafsMountException($"image {options.Bootstrap} refused: it is not signed");
            bool ok;
            try
            {
                ok = Signing.Verify(key, root, sig);
            }
            catch (ArgumentException e)
            {
                throw new RafsMountException($"trust key is not an Ed25519 public key: {e.Message}", e);
            }
            if (!ok) throw new RafsMountException($"image {options.Bootstrap} refused: its signature does not verify with the trusted key");
            how.Add("signature verified");
        }
        RafsFsLog.Trusted(logger, hex, string.Join(", ", how));
        return root;
    }

    private static IBlobBackend OpenBackend(RafsImage image, RafsMountOptions options, ILoggerFactory loggers)
    {
        if (options.Registry is { } registry)
        {
            // Blobs live in the registry as layers named by their digest; a blob id that is not a sha256 hex can never
            // be fetched, so say so now rather than with EIO on the first read.
            foreach (var b in image.Blobs)
                if (RegistryBackend.DigestOf(b.BlobId) is null)
                    throw new RafsMountException($"blob id '{b.BlobId}' is not a sha256 digest, so it cannot be read from a registry");
            ILogger log = loggers.CreateLogger("vfsd.registry");
            return new RegistryBackend(new RegistryClient(registry, log), ownsClient: true, log);
        }
        if (options.ObjectStorage is { } bucket)
        {
            foreach (var b in image.Blobs)
                if (!VirtioFs.Storage.Backend.ObjectStorage.ObjectStorageBackend.IsValidBlobId(b.BlobId))
                    throw new RafsMountException($"blob id '{b.BlobId}' cannot name an object in a bucket");
            return new VirtioFs.Storage.Backend.ObjectStorage.ObjectStorageBackend(bucket, loggers.CreateLogger("vfsd.objectstorage"));
        }
        if (options.BlobFile is { } file)
        {
            // localfs blob_file: one blob. LocalDirectoryBackend finds blobs by id in a directory, so the file must
            // carry its blob id as its name (the image tool writes blobs that way).
            if (image.Blobs.Count != 1)
                throw new RafsMountException($"blob_file names one blob but the image has {image.Blobs.Count}; use a blob directory");
            if (Path.GetFileName(file) != image.Blobs[0].BlobId)
                throw new RafsMountException($"blob_file {file} must be named by the image's blob id {image.Blobs[0].BlobId}");
            return new LocalDirectoryBackend(Path.GetDirectoryName(Path.GetFullPath(file))!);
        }
        if (options.BlobDir is null)
        {
            if (image.Blobs.Count == 0) return new LocalDirectoryBackend(Path.GetDirectoryName(Path.GetFullPath(options.Bootstrap))!);
            throw new RafsMountException("a blob directory is required (--blob-dir, or device.backend.config.dir)");
        }
        return new LocalDirectoryBackend(options.BlobDir);
    }

    /// <summary>Building the blob-order chunk index (completed when there is none).</summary>
    private Task _neighbourIndex = Task.CompletedTask;

    /// <summary>
    /// With a chunk cache, indexes every chunk by its place in the blob in the background, so a miss at the end of a
    /// file can bring the next files' chunks in the same backend read (<see cref="BlobCacheManager.Neighbours"/>).
    /// Until it is built, reads amplify within their file only.
    /// </summary>
    private void StartNeighbourIndex(RafsMountOptions options)
    {
        if (options.CacheDir is null || options.AmplificationBytes is 0) return;
        var token = _prefetchCancel.Token;
        _neighbourIndex = Task.Run(() =>
        {
            try
            {
                Cache.Neighbours = BlobChunkIndex.Build(Image, BlobChunkIndex.DefaultMaxChunks, token);
            }
            catch (OperationCanceledException)
            {
            }
        }, CancellationToken.None);
    }

    private void StartDependencyPrefetch(RafsMountOptions options)
    {
        // Remote: a miss is a round trip (registry, bucket); a local blob directory is read where it lies.
        bool remote = Backend is RemoteBlobBackend;
        if (options.CacheDir is null || options.PrefetchLibraries == DependencyPrefetch.Off || (options.PrefetchLibraries == DependencyPrefetch.Remote && !remote)) return;
        FileSystem.Dependencies = new Dependencies.DependencyPrefetcher(Image, Cache, _logger, _prefetchCancel.Token);
        RafsFsLog.DependencyPrefetchOn(_logger);
    }

    private void StartPrefetch(RafsMountOptions options)
    {
        if (options.CacheDir is null || options.Prefetch == PrefetchSource.None) return;
        IEnumerable<IReadOnlyList<RafsChunk>> files;
        string what;
        switch (options.Prefetch)
        {
            case PrefetchSource.All:
                files = PrefetchPlan.All(Image);
                what = "every file";
                break;
            case PrefetchSource.Files:
                var missing = new List<string>();
                // Paths are resolved now (missing ones reported at once); chunk lists are still produced one file at a time.
                files = PrefetchPlan.FromPaths(Image, options.PrefetchFiles, missing);
                if (missing.Count > 0) RafsFsLog.PrefetchMissing(_logger, missing.Count, missing[0]);
                what = $"{options.PrefetchFiles.Count} listed path(s)";
                break;
            default:
                if (Image.PrefetchInodes.Count == 0) return;
                files = PrefetchPlan.FromPrefetchTable(Image);
                what = $"the image's prefetch table ({Image.PrefetchInodes.Count} entries)";
                break;
        }
        // A start-up list (the prefetch table, named files) races the workload for the same files; only the whole-image warm
        // stays out of the guest's way (PrefetchOptions.YieldToGuestReads).
        var po = new PrefetchOptions
        {
            MaxConcurrency = Math.Clamp(options.PrefetchThreads, 1, 64),
            BandwidthBytesPerSecond = Math.Max(0, options.PrefetchBandwidth),
            YieldToGuestReads = options.Prefetch == PrefetchSource.All,
        };
        RafsFsLog.PrefetchStarted(_logger, what, po.MaxConcurrency, po.BandwidthBytesPerSecond);
        var token = _prefetchCancel.Token;
        Prefetch = Task.Run(async () =>
        {
            try
            {
                await Cache.PrefetchAsync(files, po, token).ConfigureAwait(false);
                var m = Cache.Metrics;
                RafsFsLog.PrefetchFinished(_logger, m.PrefetchFilesDone, m.PrefetchChunks, m.PrefetchBytes, m.PrefetchErrors);
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e) when (e is IOException or RafsFormatException or InvalidOperationException)
            {
                RafsFsLog.PrefetchFailed(_logger, e.Message);
            }
        }, CancellationToken.None);
    }

    /// <summary>Logs the cache's counters (reads, hits, backend traffic); the daemon calls it at exit.</summary>
    public void LogMetrics()
    {
        var m = Cache.Metrics;
        RafsFsLog.Metrics(_logger, m.Reads, m.ReadErrors, m.CacheHits, m.CacheMisses, m.ChunksFetched, m.BackendReads, m.BackendBytes,
            m.DigestErrors, m.CacheRepairs, m.ReadyChunks, m.TotalChunks);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _prefetchCancel.Cancel();
        try
        {
            // Both walk the mapped image: it is unmapped below only once they have stopped.
            Task.WaitAll([Prefetch, _neighbourIndex], TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
        }
        FileSystem.Dependencies?.WaitIdle(TimeSpan.FromSeconds(10));
        FileSystem.Dispose();
        Cache.Dispose();
        Backend.Dispose();
        Image.Dispose();
        _prefetchCancel.Dispose();
    }
}
