using System.Text.Json;
using VirtioFs.Oci;
using VirtioFs.Oci.Http;

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

    public static RegistryOptions Parse(JsonElement c)
    {
        if (c.ValueKind != JsonValueKind.Object) throw new FormatException("registry backend config must be an object");
        string host = Str(c, "host") ?? throw new FormatException("registry backend config needs 'host'");
        string repo = Str(c, "repo") ?? throw new FormatException("registry backend config needs 'repo'");
        if (!OciReference.IsValidRepository(repo)) throw new FormatException($"bad repo '{repo}'");
        RegistryCredentials? creds = null;
        if (Str(c, "auth") is { Length: > 0 } auth) creds = RegistryCredentials.FromAuth(auth);
        else if (Str(c, "docker_config") is { Length: > 0 } dc) creds = DockerConfig.Find(host, dc);
        RegistryProxyOptions? proxy = ParseProxy(c);
        var scheme = Str(c, "scheme");
        var o = new RegistryOptions
        {
            Host = host,
            Repository = repo,
            Scheme = string.IsNullOrEmpty(scheme) ? null : scheme,
            Credentials = creds,
            BearerToken = Str(c, "registry_token") is { Length: > 0 } t ? t : null,
            Transport = ParseTransport(c, Str(c, "ca_file"), proxy),
        };
        try { o.Validate(); }
        catch (ArgumentException e) { throw new FormatException(e.Message); }
        return o;
    }


    /// <summary>The connection keys every nydus HTTP backend shares (registry, oss, s3).</summary>
    internal static HttpTransportOptions ParseTransport(JsonElement c, string? caFile, RegistryProxyOptions? proxy) => new()
    {
        SkipVerify = Bool(c, "skip_verify") ?? false,
        CaFile = caFile,
        Timeout = Seconds(c, "timeout") ?? TimeSpan.FromSeconds(5),
        ConnectTimeout = Seconds(c, "connect_timeout") ?? TimeSpan.FromSeconds(5),
        RetryLimit = Int(c, "retry_limit") ?? 3,
        Proxy = proxy,
    };

    /// <summary>The <c>proxy</c> object every nydus HTTP backend shares (registry, oss, s3), or null without a url.</summary>
    internal static RegistryProxyOptions? ParseProxy(JsonElement c)
    {
        if (!c.TryGetProperty("proxy", out var p) || p.ValueKind != JsonValueKind.Object || Str(p, "url") is not { Length: > 0 } url) return null;
        return new RegistryProxyOptions
        {
            Url = url,
            PingUrl = Str(p, "ping_url") is { Length: > 0 } pu ? pu : null,
            Fallback = Bool(p, "fallback") ?? true,
            CheckInterval = Seconds(p, "check_interval") ?? TimeSpan.FromSeconds(5),
            UseHttp = Bool(p, "use_http") ?? false,
            CheckPauseElapsed = Seconds(p, "check_pause_elapsed") ?? TimeSpan.FromSeconds(300),
        };
    }

    internal static string? Str(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new FormatException($"'{name}' must be a string");
    }

    internal static bool? Bool(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new FormatException($"'{name}' must be true or false"),
        };
    }

    internal static int? Int(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.TryGetInt32(out int i) && i >= 0 ? i : throw new FormatException($"'{name}' must be a non-negative integer");
    }

    internal static TimeSpan? Seconds(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (!v.TryGetDouble(out double s) || !(s > 0) || s > 86400) throw new FormatException($"'{name}' must be a number of seconds in (0, 86400]");
        return TimeSpan.FromSeconds(s);
    }
}
