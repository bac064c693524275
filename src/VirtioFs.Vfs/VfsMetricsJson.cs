using System.Text.Json.Nodes;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

/// <summary>
/// Renders <see cref="VfsMetrics"/> as the JSON documents of nydusd's /api/v1/metrics and /api/v1/metrics/inflight,
/// built node by node (no reflection, so NativeAOT-safe). Field names follow nydusd's global I/O stats where they mean
/// the same thing; per-opcode detail is under "fops".
/// </summary>
public static class VfsMetricsJson
{
    public static JsonObject Global(VfsMetrics metrics, string id = "/")
    {
        ArgumentNullException.ThrowIfNull(metrics);
        var fops = new JsonObject();
        long hits = 0, errors = 0;
        double totalLatency = 0;
        foreach (VfsOpStats s in metrics.Snapshot())
        {
            hits += s.Count;
            errors += s.Errors;
            totalLatency += s.TotalLatencyMicros;
            var buckets = new JsonArray();
            foreach (long b in s.LatencyBuckets) buckets.Add((JsonNode)JsonValue.Create(b));
            fops[Name(s.Opcode)] = new JsonObject
            {
                ["count"] = s.Count,
                ["errors"] = s.Errors,
                ["inflight"] = s.InFlight,
                ["cumulative_latency_us"] = Math.Round(s.TotalLatencyMicros, 1),
                ["max_latency_us"] = Math.Round(s.MaxLatencyMicros, 1),
                ["latency_dist"] = buckets,
            };
        }
        var bounds = new JsonArray();
        foreach (long b in VfsMetrics.LatencyBucketBoundsMicros) bounds.Add((JsonNode)JsonValue.Create(b));
        return new JsonObject
        {
            ["id"] = id,
            ["measure_latency"] = true,
            ["data_read"] = metrics.BytesRead,
            ["data_written"] = metrics.BytesWritten,
            ["fop_hits_total"] = hits,
            ["fop_errors_total"] = errors,
            ["fop_cumulative_latency_total_us"] = Math.Round(totalLatency, 1),
            ["latency_dist_bounds_us"] = bounds,
            ["uptime_secs"] = (long)metrics.Uptime.TotalSeconds,
            ["fops"] = fops,
        };
    }

    /// <summary>Requests inside a filesystem right now: [{"opcode": "read", "count": n}, ...].</summary>
    public static JsonArray InFlight(VfsMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        var list = new JsonArray();
        foreach ((FuseOpcode op, long count) in metrics.InFlight())
        {
            list.Add((JsonNode)new JsonObject { ["opcode"] = Name(op), ["count"] = count });
        }
        return list;
    }

    private static string Name(FuseOpcode op) => op.ToString().ToLowerInvariant();
}
