using System.Text.Json.Nodes;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;

namespace VirtioFs.Daemon.Api;

/// <summary>
/// The API of a daemon started with one image (<c>--bootstrap</c> or <c>--image</c>) and <c>--apisock</c>, the way
/// nydus-snapshotter runs a dedicated nydusd: it polls GET /api/v1/daemon for RUNNING and reads the image's backend and
/// cache metrics. The image is the whole filesystem (mountpoint "/"), so mounting more at run time is refused with 501;
/// a daemon that mounts at run time is started with <c>--apisock</c> alone.
/// </summary>
internal sealed class SingleImageControl(RafsMount image, string source, Action exit, string? daemonId = null, FsIoStats? stats = null)
    : IDaemonControl
{
    private readonly FsIoStats _stats = stats ?? DaemonHost.FsStats;

    public const string MountPoint = "/";
    private readonly DateTimeOffset _mountedAt = DateTimeOffset.UtcNow;

    public DaemonInfo GetInfo() => new(
        BuildInfo.Current,
        Id: daemonId, Supervisor: null, State: "RUNNING",
        new Dictionary<string, FsBackendDescriptor>(StringComparer.Ordinal)
        {
            [MountPoint] = new FsBackendDescriptor("rafs", MountPoint, _mountedAt, new JsonObject { ["source"] = source }),
        });

    public ApiResult Mount(MountRequest request) => Refused;

    public ApiResult Remount(MountRequest request) => Refused;

    public ApiResult Umount(string mountPoint) => Refused;

    private static ApiResult Refused => ApiResult.Fail(ApiErrorKind.Unsupported,
        "this vfsd serves one image (--bootstrap/--image); start it with --apisock alone to mount filesystems at run time");

    public JsonNode? GetMetrics(MetricsKind kind, string? id)
    {
        // The image is the only filesystem: no id or its mountpoint "/" names it (nydus-snapshotter asks a dedicated
        // daemon without an id, pkg/metrics/serve.go).
        if (id is not (null or MountPoint)) return null;
        switch (kind)
        {
            case MetricsKind.Global:
                return FsMetricsJson.Render(_stats.Snapshot(), MountPoint);
            case MetricsKind.InFlight:
                return FsMetricsJson.Inflight(_stats);
            case MetricsKind.Files:
                return new JsonObject();
            case MetricsKind.Pattern:
                return new JsonArray();
            case MetricsKind.Backend or MetricsKind.BlobCache:
                var m = ImageMetrics.Of(MountPoint, image);
                return kind == MetricsKind.Backend ? m.BackendJson() : m.CacheJson();
            default:
                return null;
        }
    }

    public ApiResult UpdateConfig(string? id, IReadOnlyDictionary<string, string> values) =>
        id is null or MountPoint ? ConfigUpdate.Apply(image, MountPoint, values) : ApiResult.Fail(ApiErrorKind.NotFound, $"no image is mounted at {id}");

    public string GetPrometheusMetrics() =>
        MetricsExposition.Render(null, [ImageMetrics.Of(MountPoint, image)], new Dictionary<string, int>(StringComparer.Ordinal) { ["rafs"] = 1 });

    public void Exit() => exit();
}
