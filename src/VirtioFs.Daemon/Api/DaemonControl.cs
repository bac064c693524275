using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Images;
using VirtioFs.Fuse;
using VirtioFs.Oci;
using VirtioFs.Passthrough;
using VirtioFs.RafsFs;
using VirtioFs.Vfs;

namespace VirtioFs.Daemon.Api;

/// <summary>
/// The daemon behind the nydusd API: mount requests become a passthrough or a <see cref="RafsMount"/> mounted into the
/// <see cref="Vfs.Vfs"/> that the one virtio-fs device serves, so Kata can add each container's image while the guest
/// keeps using the others. Whatever a mount owns (the image, its cache and backend, the passthrough's fds) is disposed
/// once the Vfs has drained the requests in flight on it.
/// </summary>
internal sealed class DaemonControl(Vfs.Vfs vfs, DaemonOptions defaults, ILoggerFactory loggers, Action exit, FsIoStats? stats = null)
    : IDaemonControl, IDisposable
{
    /// <summary>The FUSE server's counters (the process's own unless a test gives its own).</summary>
    private readonly FsIoStats _stats = stats ?? DaemonHost.FsStats;

    private sealed record Owned(IDisposable Owner, RafsMount? Image, string Type, string MountPoint, string Config, DateTimeOffset MountedAt);

    private readonly ConcurrentDictionary<IFileSystem, Owned> _owned = new(ReferenceEqualityComparer.Instance);

    public DaemonInfo GetInfo()
    {
        var collection = new Dictionary<string, FsBackendDescriptor>(StringComparer.Ordinal);
        foreach (Owned o in _owned.Values)
        {
            collection[o.MountPoint] = new FsBackendDescriptor(o.Type, o.MountPoint, o.MountedAt, ParseOrNull(o.Config));
        }
        return new DaemonInfo(
            BuildInfo.Current,
            Id: defaults.DaemonId, Supervisor: null, State: "RUNNING", collection);
    }

    public ApiResult Mount(MountRequest request)
    {
        ApiResult opened = Open(request, out IFileSystem? fs, out Owned? owned);
        if (!opened.Ok)
        {
            return opened;
        }
        // Recorded before it becomes reachable, so an unmount racing with this request always finds its owner.
        _owned[fs!] = owned!;
        VfsMountError error = vfs.TryMount(request.MountPoint, fs!);
        if (error != VfsMountError.None)
        {
            Release(fs);
            return ApiResult.Fail(ApiErrorKind.BadRequest, $"cannot mount at {request.MountPoint}: {error}");
        }
        return ApiResult.Success;
    }

    public ApiResult Remount(MountRequest request)
    {
        ApiResult opened = Open(request, out IFileSystem? fs, out Owned? owned);
        if (!opened.Ok)
        {
            return opened;
        }
        _owned[fs!] = owned!;
        VfsMountError error = vfs.TryRemount(request.MountPoint, fs!, out IFileSystem? old);
        if (error != VfsMountError.None)
        {
            Release(fs);
            return ApiResult.Fail(ApiErrorKind.BadRequest, $"cannot remount {request.MountPoint}: {error}");
        }
        Release(old);
        return ApiResult.Success;
    }

    public ApiResult Umount(string mountPoint)
    {
        VfsMountError error = vfs.TryUmount(mountPoint, out IFileSystem? fs);
        if (error != VfsMountError.None)
        {
            return ApiResult.Fail(ApiErrorKind.BadRequest, $"nothing to unmount at {mountPoint}: {error}");
        }
        Release(fs);
        return ApiResult.Success;
    }

    public JsonNode? GetMetrics(MetricsKind kind, string? id)
    {
        switch (kind)
        {
            case MetricsKind.Global:
                // As nydusd: the daemon's counters without an id, one mount's counters with its mountpoint as id.
                if (id is null or "/") return FsMetricsJson.Global(_stats, vfs.Metrics);
                return vfs.StatsOf(id) is { } mount ? FsMetricsJson.Render(mount.Snapshot(), id) : null;
            case MetricsKind.InFlight:
                return FsMetricsJson.Inflight(_stats);
            case MetricsKind.Files:
                // Per-file accounting is off, as in nydusd by default: an empty map.
                return id is null or "/" || vfs.StatsOf(id) is not null ? new JsonObject() : null;
            case MetricsKind.Pattern:
                return id is null or "/" || vfs.StatsOf(id) is not null ? new JsonArray() : null;
            case MetricsKind.Backend or MetricsKind.BlobCache:
                // nydusd (nydus-utils metrics.rs export_blobcache_metrics): the named one, or without an id the only one.
                var images = _owned.Values.Where(o => o.Image is not null).ToList();
                Owned? pick = id is null ? (images.Count == 1 ? images[0] : null) : images.FirstOrDefault(o => o.MountPoint == id);
                if (pick is null) return null;
                var m = ImageMetrics.Of(pick.MountPoint, pick.Image!);
                return kind == MetricsKind.Backend ? m.BackendJson() : m.CacheJson();
            default:
                return null;
        }
    }

    public ApiResult UpdateConfig(string? id, IReadOnlyDictionary<string, string> values)
    {
        if (id is null) return ApiResult.Fail(ApiErrorKind.BadRequest, "'id' (the image's mountpoint) should be specified in query string");
        Owned? owned = _owned.Values.FirstOrDefault(o => o.MountPoint == id && o.Image is not null);
        if (owned is null) return ApiResult.Fail(ApiErrorKind.NotFound, $"no image is mounted at {id}");
        return ConfigUpdate.Apply(owned.Image!, id, values);
    }

    public string GetPrometheusMetrics()
    {
        var owned = _owned.Values.ToList();
        var images = owned.Where(o => o.Image is not null).OrderBy(o => o.MountPoint, StringComparer.Ordinal)
            .Select(o => ImageMetrics.Of(o.MountPoint, o.Image!)).ToList();
        var types = owned.GroupBy(o => o.Type, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        return MetricsExposition.Render(vfs.Metrics, images, types);
    }

    public void Exit() => exit();

    public void Dispose()
    {
        foreach (Owned o in _owned.Values)
        {
            o.Owner.Dispose();
        }
        _owned.Clear();
    }

    private ApiResult Open(MountRequest request, out IFileSystem? fs, out Owned? owned)
    {
        fs = null;
        owned = null;
        var now = DateTimeOffset.UtcNow;
        if (request.FsType == FsBackendType.PassthroughFs)
        {
            if (!Directory.Exists(request.Source))
            {
                return ApiResult.Fail(ApiErrorKind.BadRequest, $"passthrough source {request.Source} is not a directory");
            }
            var passthrough = new PassthroughFileSystem(new PassthroughOptions
            {
                SharedDir = Path.GetFullPath(request.Source),
                ReadOnly = defaults.ReadOnly,
                Xattr = defaults.Xattr,
                AnnounceSubmounts = defaults.AnnounceSubmounts,
                AllowDirectIo = defaults.AllowDirectIo,
                PreserveNoatime = defaults.PreserveNoatime,
                Cache = defaults.Cache switch
                {
                    CacheMode.Never => CachePolicy.Never,
                    CacheMode.Metadata => CachePolicy.Metadata,
                    CacheMode.Always => CachePolicy.Always,
                    _ => CachePolicy.Auto,
                },
            }, loggers.CreateLogger("vfsd.passthrough"));
            fs = passthrough;
            owned = new Owned(passthrough, null, "passthroughfs", request.MountPoint, request.Config, now);
            return ApiResult.Success;
        }

        var options = new RafsMountOptions { Bootstrap = request.Source };
        try
        {
            // nydusd's mount API has only fs_type, source, config and prefetch_files, so an image in a registry is
            // named by its reference in "source" (when that is not an existing file); the config then tunes the
            // registry backend and names the cache directory where the bootstrap is kept.
            if (RegistryImage.IsReference(request.Source, out OciReference? reference))
            {
                NydusConfig.Apply(RegistryImage.RegistryConfig(request.Config, reference), options);
                RegistryImage.Resolve(reference, defaults.Platform, options, loggers.CreateLogger("vfsd.image"));
            }
            else if (!string.IsNullOrWhiteSpace(request.Config))
            {
                NydusConfig.Apply(request.Config, options);
            }
            if (request.PrefetchFiles.Count > 0)
            {
                options.Prefetch = PrefetchSource.Files;
                options.PrefetchFiles = request.PrefetchFiles;
            }
            RafsMount image = RafsMount.Open(options, loggers);
            fs = image.FileSystem;
            owned = new Owned(image, image, "rafs", request.MountPoint, request.Config, now);
            return ApiResult.Success;
        }
        catch (NydusConfig.ConfigException e)
        {
            return ApiResult.Fail(ApiErrorKind.BadRequest, $"config: {e.Message}");
        }
        catch (RafsMountException e)
        {
            return ApiResult.Fail(ApiErrorKind.BadRequest, e.Message);
        }
    }

    private void Release(IFileSystem? fs)
    {
        if (fs is not null && _owned.TryRemove(fs, out Owned? o))
        {
            o.Owner.Dispose();
        }
    }

    private static JsonNode? ParseOrNull(string config)
    {
        if (string.IsNullOrWhiteSpace(config))
        {
            return null;
        }
        try
        {
            return JsonNode.Parse(config);
        }
        catch (System.Text.Json.JsonException)
        {
            return null;
        }
    }
}
