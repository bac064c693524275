using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.Images;

/// <summary>Image serving messages of the daemon; event ids 5200-5299 (the daemon's band is 5000-5999).</summary>
internal static partial class ImageLog
{
    [LoggerMessage(5200, LogLevel.Information, "vfsd {Version} serving image {Bootstrap} over {Transport} (blobs {BlobDir}, cache {CacheDir}, verify {Verify})")]
    public static partial void Serving(ILogger logger, string version, string bootstrap, string transport, string blobDir, string cacheDir, string verify);

    [LoggerMessage(5201, LogLevel.Information, "mounted image at {MountPoint}; waiting for unmount or SIGTERM")]
    public static partial void Mounted(ILogger logger, string mountPoint);

    [LoggerMessage(5202, LogLevel.Information, "{MountPoint} was unmounted; exiting")]
    public static partial void Unmounted(ILogger logger, string mountPoint);

    [LoggerMessage(5203, LogLevel.Information, "unmounting {MountPoint}")]
    public static partial void Unmounting(ILogger logger, string mountPoint);

    [LoggerMessage(5204, LogLevel.Information, "resolving image {Reference} for {Platform}")]
    public static partial void Resolving(ILogger logger, string reference, string platform);

    [LoggerMessage(5205, LogLevel.Information, "image {Reference} is manifest {Digest}; bootstrap {Bootstrap}")]
    public static partial void Resolved(ILogger logger, string reference, string digest, string bootstrap);

    [LoggerMessage(5206, LogLevel.Warning, "registry unreachable ({Error}); serving image {Reference} from its cached bootstrap {Bootstrap} (manifest {Digest}); chunks not in the cache fail with EIO until it answers")]
    public static partial void ResolvedFromCache(ILogger logger, string reference, string digest, string bootstrap, string error);
}
