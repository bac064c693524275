using System.Text.Json;
using System.Text.Json.Nodes;

namespace VirtioFs.Daemon.Api;

/// <summary>A response ready to write: status, JSON body (empty for 204), and what to do once it is on the wire.</summary>
public sealed record HttpResponse(int StatusCode, byte[] Body, Action? AfterSent = null)
{
    /// <summary>The body's media type: JSON for the nydusd API, Prometheus text for /metrics.</summary>
    public string ContentType { get; init; } = "application/json";

    public static string ReasonPhrase(int code) => code switch
    {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    };
}

/// <summary>
/// Maps requests to <see cref="IDaemonControl"/> calls the way nydusd's HTTP_ROUTES do: exact path match on /api/v1/...,
/// method and body presence checked per endpoint (a wrong combination is 400 BadRequest, an unknown path 404 NoRoute),
/// errors as {"code": "UNDEFINED", "message": ...}.
/// </summary>
public sealed class ApiRouter
{
    private const string Root = "/api/v1";
    private readonly IDaemonControl _control;

    public ApiRouter(IDaemonControl control)
    {
        ArgumentNullException.ThrowIfNull(control);
        _control = control;
    }

    public HttpResponse Handle(HttpRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        try
        {
            return Route(request);
        }
#pragma warning disable CA1031 // A failing control operation is a 500 for this client, never a dead API server.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return Error(500, $"Internal({ex.GetType().Name}: {ex.Message})");
        }
    }

    private HttpResponse Route(HttpRequest r)
    {
        string path = r.Path.Length > 1 ? r.Path.TrimEnd('/') : r.Path;
        bool get = r.Method == "GET", put = r.Method == "PUT";
        switch (path)
        {
            case "/metrics":
                return Prometheus(r);
            case Root + "/daemon":
                if (get && !r.HasBody) return Json(200, JsonSerializer.SerializeToUtf8Bytes(_control.GetInfo(), ApiJsonContext.Default.DaemonInfo));
                return BadRequest();
            case Root + "/daemon/exit":
                if (put && !r.HasBody) return new HttpResponse(204, [], _control.Exit);
                return BadRequest();
            case Root + "/mount":
                return Mount(r);
            // Failover and hot upgrade (nydus-snapshotter pkg/daemon/client.go: PUT with no body, 204 expected).
            case Root + "/daemon/fuse/sendfd":
                return put && !r.HasBody ? FromResult(_control.SendFd(), "DaemonAbnormal") : BadRequest();
            case Root + "/daemon/fuse/takeover":
                return put && !r.HasBody ? FromResult(_control.TakeOver(), "DaemonAbnormal") : BadRequest();
            case Root + "/daemon/start":
                return put && !r.HasBody ? FromResult(_control.Start(), "DaemonAbnormal") : BadRequest();
            case Root + "/metrics":
                return Metrics(r, MetricsKind.Global);
            case Root + "/metrics/files":
                return Metrics(r, MetricsKind.Files);
            case Root + "/metrics/pattern":
                return Metrics(r, MetricsKind.Pattern);
            case Root + "/metrics/backend":
                return Metrics(r, MetricsKind.Backend);
            case Root + "/metrics/blobcache":
                return Metrics(r, MetricsKind.BlobCache);
            case Root + "/metrics/inflight":
                return Metrics(r, MetricsKind.InFlight);
            case Root + "/config":
                return Config(r);
            default:
                return Error(404, "NoRoute");
        }
    }

    private HttpResponse Mount(HttpRequest r)
    {
        string? mountPoint = r.QueryParameter("mountpoint");
        if (mountPoint is null) return Error(400, "QueryString(\"'mountpoint' should be specified in query string\")");
        switch (r.Method)
        {
            case "POST" or "PUT" when r.HasBody:
            {
                if (!TryParseMount(r.Body, mountPoint, out MountRequest? req, out HttpResponse? bad)) return bad!;
                ApiResult res = r.Method == "POST" ? _control.Mount(req!) : _control.Remount(req!);
                return FromResult(res, "Mount");
            }
            case "DELETE" when !r.HasBody:
                return FromResult(_control.Umount(mountPoint), "Mount");
            default:
                return BadRequest();
        }
    }

    private static bool TryParseMount(byte[] body, string mountPoint, out MountRequest? request, out HttpResponse? bad)
    {
        request = null;
        bad = null;
        ApiMountCmd? cmd;
        try
        {
            cmd = JsonSerializer.Deserialize(body, ApiJsonContext.Default.ApiMountCmd);
        }
        catch (JsonException ex)
        {
            bad = Error(400, $"ParseBody({ex.Message})");
            return false;
        }
        if (cmd?.Source is null)
        {
            bad = Error(400, "ParseBody(missing field `source`)");
            return false;
        }
        FsBackendType type;
        switch (cmd.FsType ?? "rafs")
        {
            case "rafs":
                type = FsBackendType.Rafs;
                break;
            case "passthrough" or "passthroughfs" or "passthrough_fs":
                type = FsBackendType.PassthroughFs;
                break;
            default:
                bad = Error(400, $"Mount(InvalidArguments(\"only 'rafs' and 'passthrough_fs' are supported, but {cmd.FsType} was specified\"))");
                return false;
        }
        request = new MountRequest(mountPoint, type, cmd.Source, cmd.Config ?? "", cmd.PrefetchFiles ?? []);
        return true;
    }

    private HttpResponse Metrics(HttpRequest r, MetricsKind kind)
    {
        if (r.Method != "GET" || r.HasBody) return BadRequest();
        JsonNode? doc = _control.GetMetrics(kind, r.QueryParameter("id"));
        // nydusd answers 204 when nothing is in flight (nydus-snapshotter's GetInflightMetrics expects that).
        if (doc is null && kind == MetricsKind.InFlight) return new HttpResponse(204, []);
        if (doc is null) return Error(404, "Metrics(Stats(NoCounter))");
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            doc.WriteTo(w);
        }
        return Json(200, buffer.WrittenSpan.ToArray());
    }

    /// <summary>PUT /api/v1/config?id=ID with nydusd's string-to-string map (nydus api/src/http_endpoint_v1.rs ConfigHandler).</summary>
    private HttpResponse Config(HttpRequest r)
    {
        if (r.Method != "PUT" || !r.HasBody) return BadRequest();
        Dictionary<string, string>? values;
        try
        {
            values = JsonSerializer.Deserialize(r.Body, ApiJsonContext.Default.DictionaryStringString);
        }
        catch (JsonException ex)
        {
            return Error(400, $"ParseBody({ex.Message})");
        }
        if (values is null) return Error(400, "ParseBody(expected a JSON object of strings)");
        return FromResult(_control.UpdateConfig(r.QueryParameter("id"), values), "Configure");
    }

    /// <summary>GET /metrics (outside /api/v1, where Prometheus scrapes by default).</summary>
    private HttpResponse Prometheus(HttpRequest r)
    {
        if (r.Method != "GET" || r.HasBody) return BadRequest();
        string? text = _control.GetPrometheusMetrics();
        if (text is null) return Error(404, "NoRoute");
        return new HttpResponse(200, System.Text.Encoding.UTF8.GetBytes(text)) { ContentType = PrometheusWriter.ContentType };
    }

    private static HttpResponse FromResult(ApiResult res, string what)
    {
        if (res.Ok) return new HttpResponse(204, []);
        int status = res.Kind switch
        {
            ApiErrorKind.BadRequest => 400,
            ApiErrorKind.NotFound => 404,
            ApiErrorKind.Unsupported => 501,
            ApiErrorKind.NotReady => 503,
            _ => 500,
        };
        return Error(status, $"{what}({res.Message})");
    }

    private static HttpResponse Json(int status, byte[] body) => new(status, body);

    private static HttpResponse BadRequest() => Error(400, "BadRequest");

    /// <summary>nydusd's error body: code "UNDEFINED" and the error's debug text.</summary>
    public static HttpResponse Error(int status, string message) =>
        new(status, JsonSerializer.SerializeToUtf8Bytes(new ApiErrorMessage("UNDEFINED", message), ApiJsonContext.Default.ApiErrorMessage));
}
