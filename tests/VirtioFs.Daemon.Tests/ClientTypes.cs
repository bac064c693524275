using System.Text.Json;
using System.Text.Json.Serialization;

namespace VirtioFs.Daemon.Tests;

/// <summary>Strict decoding into the clients' types below (shared with the integration tests).</summary>
public static class ClientJson
{
    private static readonly JsonSerializerOptions Strict = new()
    {
        RespectRequiredConstructorParameters = true,
        RespectNullableAnnotations = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
        NumberHandling = JsonNumberHandling.Strict,
    };

    public static T Decode<T>(string json) => JsonSerializer.Deserialize<T>(json, Strict) ?? throw new JsonException("null document");
}

// The real clients' own types, field for field (json tag, Go/Rust type), to decode vfsd's answers into. Decoding is
// strict: a missing field, a null where the client has no null, a wrong type or a negative number where the client
// has an unsigned one fails the test. Extra fields are allowed, as the clients ignore them.

/// <summary>nydus-snapshotter pkg/daemon/types/types.go BuildTimeInfo; Kata nydusd.go BuildTimeInfo; runtime-rs
/// nydus_client.rs BuildTimeInfo (all strings).</summary>
public sealed record GoBuildTimeInfo(
    [property: JsonPropertyName("package_ver")] string PackageVer,
    [property: JsonPropertyName("git_commit")] string GitCommit,
    [property: JsonPropertyName("build_time")] string BuildTime,
    [property: JsonPropertyName("profile")] string Profile,
    [property: JsonPropertyName("rustc")] string Rustc);

/// <summary>nydus-snapshotter pkg/daemon/types/types.go DaemonInfo.</summary>
public sealed record SnapshotterDaemonInfo(
    [property: JsonPropertyName("id")] string ID,
    [property: JsonPropertyName("version")] GoBuildTimeInfo Version,
    [property: JsonPropertyName("state")] string State);

/// <summary>Kata src/runtime/virtcontainers/nydusd.go DaemonInfo: ID is a Go string, which takes JSON null as "".</summary>
public sealed record KataGoDaemonInfo(
    [property: JsonPropertyName("id")] string? ID,
    [property: JsonPropertyName("version")] GoBuildTimeInfo Version,
    [property: JsonPropertyName("state")] string State);

/// <summary>Kata src/runtime-rs/crates/resource/src/share_fs/nydus/nydus_client.rs DaemonInfo.</summary>
public sealed record RuntimeRsDaemonInfo(
    [property: JsonPropertyName("version")] GoBuildTimeInfo Version,
    [property: JsonPropertyName("id")] string? Id,
    [property: JsonPropertyName("supervisor")] string? Supervisor,
    [property: JsonPropertyName("state")] string State,
    [property: JsonPropertyName("backend_collection")] JsonElement? BackendCollection);

/// <summary>ErrorMessage of all three clients.</summary>
public sealed record ClientErrorMessage(
    [property: JsonPropertyName("code")] string Code,
    [property: JsonPropertyName("message")] string Message);

/// <summary>nydus-snapshotter pkg/daemon/types/types.go FsMetrics.</summary>
public sealed record SnapshotterFsMetrics(
    [property: JsonPropertyName("files_account_enabled")] bool FilesAccountEnabled,
    [property: JsonPropertyName("access_pattern_enabled")] bool AccessPatternEnabled,
    [property: JsonPropertyName("measure_latency")] bool MeasureLatency,
    [property: JsonPropertyName("id")] string ID,
    [property: JsonPropertyName("data_read")] ulong DataRead,
    [property: JsonPropertyName("block_count_read")] ulong[] BlockCountRead,
    [property: JsonPropertyName("fop_hits")] ulong[] FopHits,
    [property: JsonPropertyName("fop_errors")] ulong[] FopErrors,
    [property: JsonPropertyName("fop_cumulative_latency_total")] ulong[] FopCumulativeLatencyTotal,
    [property: JsonPropertyName("read_latency_dist")] ulong[] ReadLatencyDist,
    [property: JsonPropertyName("nr_opens")] ulong NrOpens);

/// <summary>nydus-snapshotter pkg/daemon/types/types.go InflightMetrics.Values element.</summary>
public sealed record SnapshotterInflightOp(
    [property: JsonPropertyName("inode")] ulong Inode,
    [property: JsonPropertyName("opcode")] uint Opcode,
    [property: JsonPropertyName("unique")] ulong Unique,
    [property: JsonPropertyName("timestamp_secs")] ulong TimestampSecs);

/// <summary>nydus-snapshotter pkg/daemon/types/types.go CacheMetrics.</summary>
public sealed record SnapshotterCacheMetrics(
    [property: JsonPropertyName("id")] string ID,
    [property: JsonPropertyName("underlying_files")] string[] UnderlyingFiles,
    [property: JsonPropertyName("store_path")] string StorePath,
    [property: JsonPropertyName("partial_hits")] ulong PartialHits,
    [property: JsonPropertyName("whole_hits")] ulong WholeHits,
    [property: JsonPropertyName("total")] ulong Total,
    [property: JsonPropertyName("entries_count")] ulong EntriesCount,
    [property: JsonPropertyName("prefetch_data_amount")] ulong PrefetchDataAmount,
    [property: JsonPropertyName("prefetch_requests_count")] ulong PrefetchRequestsCount,
    [property: JsonPropertyName("prefetch_workers")] ulong PrefetchWorkers,
    [property: JsonPropertyName("prefetch_unmerged_chunks")] ulong PrefetchUnmergedChunks,
    [property: JsonPropertyName("prefetch_cumulative_time_millis")] ulong PrefetchCumulativeTimeMillis,
    [property: JsonPropertyName("prefetch_begin_time_secs")] ulong PrefetchBeginTimeSecs,
    [property: JsonPropertyName("prefetch_begin_time_millis")] ulong PrefetchBeginTimeMillis,
    [property: JsonPropertyName("prefetch_end_time_secs")] ulong PrefetchEndTimeSecs,
    [property: JsonPropertyName("prefetch_end_time_millis")] ulong PrefetchEndTimeMillis,
    [property: JsonPropertyName("buffered_backend_size")] ulong BufferedBackendSize,
    [property: JsonPropertyName("data_all_ready")] bool DataAllReady);

