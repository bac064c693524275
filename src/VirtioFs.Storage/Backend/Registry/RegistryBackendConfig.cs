using System.Text.Json;
using VirtioFs.Oci;

namespace VirtioFs.Storage.Backend.Registry;

/// <summary>
/// The nydus registry backend config (<c>device.backend.type = "registry"</c>, <c>device.backend.config</c> in nydus
/// api/src/config.rs): <c>{"scheme","host","repo","auth","registry_token","skip_verify","timeout","connect_timeout",
/// "retry_limit","proxy":{"url","ping_url","fallback","check_interval","use_http","check_pause_elapsed"}}</c>, plus <c>ca_file</c> and
/// <c>docker_config</c> (a docker config.json to take credentials from when <c>auth</c> is absent). Times are seconds.
/// </summary>
public static class RegistryBackendConfig
{
    private const int MaxConfigBytes = 1 << 20;

    /// <summary>Parses the backend's JSON config object into client options; bad fields throw <see cref="FormatException"/>.</summary>
    public static RegistryOptions Parse(ReadOnlySpan<byte> json)
    {
        if (json.Length > MaxConfigBytes) throw new FormatException("registry backend config is too large");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException e) { throw new FormatException($"registry backend config is not JSON: {e.Message}"); }
        using (doc) return Parse(doc.RootElement);
    }

    public static RegistryOptions Parse(JsonElement config)
    {
        if (config.ValueKind != JsonValueKind.Object) throw new FormatException("registry backend config must be an object");
        string host = Str(config, "host") ?? throw new FormatException("registry backend config needs 'host'");
        string repo = Str(config, "repo") ?? throw new FormatException("registry backend config needs 'repo'");
        if (!OciReference.IsValidRepository(repo)) throw new FormatException($"bad repo '{repo}'");
        RegistryCredentials? creds = null;
        if (Str(config, "auth") is { Length: > 0 } auth) creds = RegistryCredentials.FromAuth(auth);
        else if (Str(config, "docker_config") is { Length: > 0 } dockerConfigPath) creds = DockerConfig.Find(host, dockerConfigPath);
        RegistryProxyOptions? proxy = null;
        if (config.TryGetProperty("proxy", out var proxyElement) && proxyElement.ValueKind == JsonValueKind.Object && Str(proxyElement, "url") is { Length: > 0 } url)
        {
            proxy = new RegistryProxyOptions
            {
                Url = url,
                PingUrl = Str(proxyElement, "ping_url") is { Length: > 0 } pingUrl ? pingUrl : null,
                Fallback = Bool(proxyElement, "fallback") ?? true,
                CheckInterval = Seconds(proxyElement, "check_interval") ?? TimeSpan.FromSeconds(5),
                UseHttp = Bool(proxyElement, "use_http") ?? false,
                CheckPauseElapsed = Seconds(proxyElement, "check_pause_elapsed") ?? TimeSpan.FromSeconds(300),
            };
        }
        var scheme = Str(config, "scheme");
        var options = new RegistryOptions
        {
            Host = host,
            Repository = repo,
            Scheme = string.IsNullOrEmpty(scheme) ? null : scheme,
            Credentials = creds,
            BearerToken = Str(config, "registry_token") is { Length: > 0 } token ? token : null,
            SkipVerify = Bool(config, "skip_verify") ?? false,
            CaFile = Str(config, "ca_file"),
            Timeout = Seconds(config, "timeout") ?? TimeSpan.FromSeconds(5),
            ConnectTimeout = Seconds(config, "connect_timeout") ?? TimeSpan.FromSeconds(5),
            RetryLimit = Int(config, "retry_limit") ?? 3,
            Proxy = proxy,
        };
        try { options.Validate(); }
        catch (ArgumentException e) { throw new FormatException(e.Message); }
        return options;
    }

    private static string? Str(JsonElement element, string name)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind == JsonValueKind.String ? value.GetString() : throw new FormatException($"'{name}' must be a string");
    }

    private static bool? Bool(JsonElement element, string name)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new FormatException($"'{name}' must be true or false"),
        };
    }

    private static int? Int(JsonElement element, string name)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.TryGetInt32(out int number) && number >= 0 ? number : throw new FormatException($"'{name}' must be a non-negative integer");
    }

    private static TimeSpan? Seconds(JsonElement element, string name)
    {
        if (!element.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (!value.TryGetDouble(out double seconds) || !(seconds > 0) || seconds > 86400) throw new FormatException($"'{name}' must be a number of seconds in (0, 86400]");
        return TimeSpan.FromSeconds(seconds);
    }
}
