using System.Text.Json.Serialization;

namespace VirtioFs.Daemon.Api;

/// <summary>nydusd's ApiMountCmd as it arrives on the wire.</summary>
internal sealed class ApiMountCmd
{
    [JsonPropertyName("source")] public string? Source { get; set; }
    [JsonPropertyName("fs_type")] public string? FsType { get; set; }
    [JsonPropertyName("config")] public string? Config { get; set; }
    [JsonPropertyName("prefetch_files")] public List<string>? PrefetchFiles { get; set; }
}

/// <summary>nydusd's ErrorMessage.</summary>
internal sealed record ApiErrorMessage(
    [property: JsonPropertyName("code")] string Code,
    [property: JsonPropertyName("message")] string Message);

/// <summary>
/// Source-generated serializers: vfsd is published NativeAOT, where reflection-based System.Text.Json is unavailable.
/// </summary>
[JsonSourceGenerationOptions(GenerationMode = JsonSourceGenerationMode.Default, DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    AllowTrailingCommas = false, ReadCommentHandling = System.Text.Json.JsonCommentHandling.Disallow, MaxDepth = 32)]
[JsonSerializable(typeof(ApiMountCmd))]
[JsonSerializable(typeof(ApiErrorMessage))]
[JsonSerializable(typeof(DaemonInfo))]
[JsonSerializable(typeof(Dictionary<string, string>))]
internal sealed partial class ApiJsonContext : JsonSerializerContext;
