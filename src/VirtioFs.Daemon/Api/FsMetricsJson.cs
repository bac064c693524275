using System.Text.Json.Nodes;
using VirtioFs.Fuse;
using VirtioFs.Oci;
using VirtioFs.RafsFs;
using VirtioFs.Storage.Backend.Registry;

namespace VirtioFs.Daemon.Api;

/// <summary>
/// The documents of GET /api/v1/metrics and /api/v1/metrics/inflight in nydusd's shapes: its FsIoStats serialisation
/// (nydus-utils src/metrics.rs) and its list of FuseOp (service/src/fusedev.rs), which nydus-snapshotter decodes into
/// types.FsMetrics and types.InflightMetrics (pkg/daemon/types/types.go) and indexes by StatsFop
/// (pkg/metrics/collector/fs.go reads fop_hits[Read]; pkg/metrics/data/fs.go wants 8 entries in block_count_read and
/// read_latency_dist).
/// </summary>
internal static class FsMetricsJson
{
    public static JsonObject Render(FsIoStatsSnapshot s, string id) => new()
    {
        ["files_account_enabled"] = false,
        ["access_pattern_enabled"] = false,
        ["record_latest_read_files_enabled"] = false,
        ["measure_latency"] = true,
        ["id"] = id,
        ["nr_opens"] = s.NrOpens,
        ["data_read"] = s.DataRead,
        ["block_count_read"] = Array(s.BlockCountRead),
        ["fop_hits"] = Array(s.FopHits),
        ["fop_errors"] = Array(s.FopErrors),
        ["fop_cumulative_latency_total"] = Array(s.FopCumulativeLatencyTotal),
        ["read_latency_dist"] = Array(s.ReadLatencyDist),
    };

    /// <summary>
    /// The daemon-wide document: nydus's fields from the FUSE server's counters, then (as extra fields) what vfsd's Vfs
    /// adds when it has one: every opcode's count, errors and latency histogram, bytes written, uptime.
    /// </summary>
    public static JsonObject Global(FsIoStats stats, Vfs.VfsMetrics? vfs)
    {
        JsonObject doc = Render(stats.Snapshot(), "/");
        if (vfs is null) return doc;
        foreach ((string key, JsonNode? value) in Vfs.VfsMetricsJson.Global(vfs))
        {
            if (!doc.ContainsKey(key)) doc[key] = value?.DeepClone();
        }
        return doc;
    }

    /// <summary>The requests in flight as nydusd lists them, or null when there are none (nydusd answers 204 then).</summary>
    public static JsonArray? Inflight(FsIoStats stats)
    {
        IReadOnlyList<InflightOp> ops = stats.Inflight();
        if (ops.Count == 0) return null;
        var list = new JsonArray();
        foreach (InflightOp op in ops)
        {
            list.Add((JsonNode)new JsonObject
            {
                ["inode"] = op.Inode,
                ["opcode"] = op.Opcode,
                ["unique"] = op.Unique,
                ["timestamp_secs"] = op.TimestampSecs,
            });
        }
        return list;
    }

    private static JsonArray Array(long[] values)
    {
        var a = new JsonArray();
        foreach (long v in values) a.Add((JsonNode)JsonValue.Create(v));
        return a;
    }
}

/// <summary>
/// PUT /api/v1/config: nydusd's run-time settings (nydus-utils src/config.rs, keys registry_auth, proxy_url,
/// dragonfly_scheduler_endpoint). nydus-snapshotter sends <c>{"registry_auth": base64(user:password)}</c> with
/// <c>?id=</c> the instance's mountpoint when a registry password rotates (pkg/daemon/daemon.go UpdateAuthConfig);
/// the image's registry client then authenticates with the new pair without a restart.
/// </summary>
internal static class ConfigUpdate
{
    public const string RegistryAuth = "registry_auth";

    public static ApiResult Apply(RafsMount image, string mountPoint, IReadOnlyDictionary<string, string> values)
    {
        // Everything is checked before anything changes, so a refused request leaves the image as it was.
        RegistryCredentials? credentials = null;
        foreach ((string key, string value) in values)
        {
            switch (key)
            {
                case RegistryAuth:
                    if (image.Backend is not RegistryBackend)
                    {
                        return ApiResult.Fail(ApiErrorKind.BadRequest, $"{mountPoint} is not read from a registry: registry_auth does not apply");
                    }
                    try
                    {
                        credentials = RegistryCredentials.FromAuth(value);
                    }
                    catch (FormatException e)
                    {
                        return ApiResult.Fail(ApiErrorKind.BadRequest, e.Message);
                    }
                    break;
                case "proxy_url" or "dragonfly_scheduler_endpoint":
                    return ApiResult.Fail(ApiErrorKind.Unsupported, $"{key} cannot be changed at run time by vfsd (set the proxy in the mount's config)");
                default:
                    return ApiResult.Fail(ApiErrorKind.BadRequest, $"unknown configuration key '{key}'");
            }
        }
        if (credentials is not null) ((RegistryBackend)image.Backend).Client.UpdateCredentials(credentials);
        return ApiResult.Success;
    }
}
