// The nydusd-compatible HTTP API (nydus api/src/http.rs, http_handler.rs, http_endpoint_v1.rs): a small REST surface on
// the --apisock Unix socket that Kata's "virtio-fs-nydus" mode drives. Kata checks GET /api/v1/daemon for state RUNNING,
// then mounts a passthrough at /containers and each container's RAFS image at /rafs/<cid>/lowerdir with
// POST /api/v1/mount?mountpoint=..., and removes them with DELETE. Success without a body is 204, with a body 200;
// failures carry {"code": ..., "message": ...} with 400 (bad request), 404 (no route / no counter), 500, 501 or 503.
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace VirtioFs.Daemon.Api;

/// <summary>What a mount request names in <c>fs_type</c>.</summary>
public enum FsBackendType
{
    /// <summary>"rafs": <see cref="MountRequest.Source"/> is a bootstrap (image metadata) file.</summary>
    Rafs,
    /// <summary>"passthrough_fs" (also "passthrough", "passthroughfs"): <see cref="MountRequest.Source"/> is a host directory.</summary>
    PassthroughFs,
}

/// <summary>A validated POST/PUT /api/v1/mount request.</summary>
/// <param name="MountPoint">The <c>mountpoint</c> query parameter, e.g. "/rafs/c1/lowerdir".</param>
/// <param name="Source">Bootstrap path (RAFS) or shared directory (passthrough).</param>
/// <param name="Config">The <c>config</c> string as sent: nydusd's JSON configuration (backend, cache); may be empty.</param>
/// <param name="PrefetchFiles">Paths to prefetch inside the image, possibly empty.</param>
public sealed record MountRequest(string MountPoint, FsBackendType FsType, string Source, string Config, IReadOnlyList<string> PrefetchFiles);

/// <summary>How an API operation failed; decides the HTTP status like nydusd's translate_status_code.</summary>
public enum ApiErrorKind
{
    /// <summary>500.</summary>
    Internal,
    /// <summary>400: the request itself is wrong (bad path, bad config, unknown fs_type, nothing mounted there).</summary>
    BadRequest,
    /// <summary>404: e.g. no such metrics counter / id.</summary>
    NotFound,
    /// <summary>501: the daemon does not support this.</summary>
    Unsupported,
    /// <summary>503: the daemon is not ready.</summary>
    NotReady,
}

/// <summary>Outcome of a control operation: success, or a kind and a message for the client.</summary>
public readonly record struct ApiResult(bool Ok, ApiErrorKind Kind, string Message)
{
    public static ApiResult Success => new(true, ApiErrorKind.Internal, "");
    public static ApiResult Fail(ApiErrorKind kind, string message) => new(false, kind, message);
}

/// <summary>The metrics endpoints.</summary>
public enum MetricsKind
{
    /// <summary>/api/v1/metrics: global FUSE operation counts and latency.</summary>
    Global,
    /// <summary>/api/v1/metrics/files.</summary>
    Files,
    /// <summary>/api/v1/metrics/pattern (access patterns).</summary>
    Pattern,
    /// <summary>/api/v1/metrics/backend.</summary>
    Backend,
    /// <summary>/api/v1/metrics/blobcache.</summary>
    BlobCache,
    /// <summary>/api/v1/metrics/inflight.</summary>
    InFlight,
}

/// <summary>nydusd's BuildTimeInfo.</summary>
public sealed record BuildInfo(
    [property: JsonPropertyName("package_ver")] string PackageVersion,
    [property: JsonPropertyName("git_commit")] string GitCommit,
    [property: JsonPropertyName("build_time")] string BuildTime,
    [property: JsonPropertyName("profile")] string Profile,
    [property: JsonPropertyName("rustc")] string Compiler)
{
    /// <summary>This vfsd (the compiler field carries the .NET runtime, where nydusd names its rustc).</summary>
    public static BuildInfo Current => new(Program.Version, "", "", "release", $".NET {Environment.Version}");
}

/// <summary>One entry of backend_collection (nydusd's FsBackendDescriptor).</summary>
public sealed record FsBackendDescriptor(
    [property: JsonPropertyName("backend_type")] string BackendType,
    [property: JsonPropertyName("mountpoint")] string MountPoint,
    [property: JsonPropertyName("mounted_time")] DateTimeOffset MountedTime,
    [property: JsonPropertyName("config")] JsonNode? Config);

/// <summary>GET /api/v1/daemon. <see cref="State"/> is "RUNNING" once serving (Kata waits for that).</summary>
public sealed record DaemonInfo(
    [property: JsonPropertyName("version")] BuildInfo Version,
    [property: JsonPropertyName("id")] string? Id,
    [property: JsonPropertyName("supervisor")] string? Supervisor,
    [property: JsonPropertyName("state")] string State,
    [property: JsonPropertyName("backend_collection")] IReadOnlyDictionary<string, FsBackendDescriptor> BackendCollection);

/// <summary>
/// The daemon as the API sees it; the composition root implements it over the Vfs and the image factory.
/// Methods may be called concurrently from several connections.
/// </summary>
public interface IDaemonControl
{
    DaemonInfo GetInfo();

    /// <summary>POST /api/v1/mount.</summary>
    ApiResult Mount(MountRequest request);

    /// <summary>PUT /api/v1/mount: replace what is mounted at the mountpoint.</summary>
    ApiResult Remount(MountRequest request);

    /// <summary>DELETE /api/v1/mount.</summary>
    ApiResult Umount(string mountPoint);

    /// <summary>
    /// A metrics document, or null when there is no such counter (404). <paramref name="id"/> is the optional
    /// <c>id</c> query parameter (nydusd: a mountpoint / filesystem id).
    /// </summary>
    JsonNode? GetMetrics(MetricsKind kind, string? id);

    /// <summary>
    /// GET /metrics: every counter as a Prometheus text exposition (format 0.0.4), or null when this daemon has none
    /// (404). See <see cref="MetricsExposition"/>.
    /// </summary>
    string? GetPrometheusMetrics() => null;

    /// <summary>
    /// PUT /api/v1/config?id=ID: run-time settings for the filesystem mounted at <paramref name="id"/> (nydusd's
    /// string-to-string map; see <see cref="ConfigUpdate"/>).
    /// </summary>
    ApiResult UpdateConfig(string? id, IReadOnlyDictionary<string, string> values) =>
        ApiResult.Fail(ApiErrorKind.Unsupported, "this daemon has no run-time configuration");

    /// <summary>PUT /api/v1/daemon/exit: called after the 204 reply has been sent.</summary>
    void Exit();

    /// <summary>PUT /api/v1/daemon/fuse/sendfd: hand the /dev/fuse fd and the daemon's state to the supervisor.</summary>
    ApiResult SendFd() => ApiResult.Fail(ApiErrorKind.Unsupported, "failover needs a /dev/fuse mount (vfsd mount) started with --supervisor");

    /// <summary>PUT /api/v1/daemon/fuse/takeover: fetch the fd and state from the supervisor and restore them (INIT to READY).</summary>
    ApiResult TakeOver() => ApiResult.Fail(ApiErrorKind.Unsupported, "failover needs a /dev/fuse mount (vfsd mount) started with --supervisor");

    /// <summary>PUT /api/v1/daemon/start: serve the taken-over session (READY to RUNNING).</summary>
    ApiResult Start() => ApiResult.Fail(ApiErrorKind.Unsupported, "this daemon starts serving by itself");
}
