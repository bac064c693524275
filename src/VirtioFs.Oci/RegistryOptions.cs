using System.Net;
using System.Text;
using System.Text.Json;

namespace VirtioFs.Oci;

/// <summary>How to reach one repository of one registry (nydus's registry backend, api/src/config.rs); the connection
/// and retry settings are in <see cref="Transport"/>, shared with the object storage backends.</summary>
public sealed class RegistryOptions
{
    /// <summary><c>host[:port]</c> of the registry.</summary>
    public required string Host { get; init; }

    /// <summary>Repository name, e.g. <c>library/alpine</c>.</summary>
    public required string Repository { get; init; }

    /// <summary>"http" or "https"; null picks http for loopback hosts and https for everything else.</summary>
    public string? Scheme { get; init; }

    /// <summary>Username and password for Basic auth or for the token endpoint; null is anonymous.</summary>
    public RegistryCredentials? Credentials { get; init; }

    /// <summary>A bearer token to send as is (nydus <c>registry_token</c>); replaced by a fetched one when the registry
    /// rejects it with a challenge.</summary>
    public string? BearerToken { get; init; }

    /// <summary>Deadlines, retries, certificate check and forward proxy.</summary>
    public Http.HttpTransportOptions Transport { get; init; } = new();

    /// <summary>How long a blob's redirect target (a presigned storage URL) is reused before asking the registry again.</summary>
    public TimeSpan RedirectCacheTime { get; init; } = TimeSpan.FromMinutes(5);

    internal string EffectiveScheme => Scheme is { Length: > 0 } s ? s : IsLoopbackHost(Host) ? "http" : "https";

    public void Validate()
    {
        if (!OciReference.IsValidRepository(Repository)) throw new ArgumentException($"bad repository name '{Repository}'");
        if (string.IsNullOrEmpty(Host) || Host.Contains('/', StringComparison.Ordinal)) throw new ArgumentException($"bad registry host '{Host}'");
        if (EffectiveScheme is not ("http" or "https")) throw new ArgumentException($"scheme must be http or https, not '{Scheme}'");
        Transport.Validate();
    }

    /// <summary>True for localhost and loopback addresses, where plain http is the sensible default.</summary>
    public static bool IsLoopbackHost(string host)
    {
        string h = host;
        if (h.StartsWith('['))
        {
            int close = h.IndexOf(']', StringComparison.Ordinal);
            h = close > 0 ? h[1..close] : h;
        }
        else
        {
            int colon = h.LastIndexOf(':');
            if (colon > 0 && h.IndexOf(':', StringComparison.Ordinal) == colon) h = h[..colon];
        }
        if (h.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return true;
        return IPAddress.TryParse(h, out var ip) && IPAddress.IsLoopback(ip);
    }
}

/// <summary>A mirror or P2P proxy (Dragonfly dfdaemon) that serves the registry's /v2/ paths. Blob reads go through it
/// while it answers; with <see cref="Fallback"/> they go straight to the registry when it does not, and return to it once
/// <see cref="PingUrl"/> answers again (checked every <see cref="CheckInterval"/>).</summary>
public sealed class RegistryProxyOptions
{
    /// <summary>The proxy, used as an HTTP forward proxy for blob reads (nydus <c>proxy.url</c>).</summary>
    public required string Url { get; init; }

    /// <summary>Health endpoint, e.g. dfdaemon's <c>/server/ping</c> (nydus <c>ping_url</c>); a 2xx/3xx answer is healthy.</summary>
    public string? PingUrl { get; init; }

    /// <summary>Read from the registry directly while the proxy fails (nydus <c>fallback</c>, default true);
    /// when false a failing proxy fails the read.</summary>
    public bool Fallback { get; init; } = true;

    /// <summary>Period of the health check (nydus <c>check_interval</c>, default 5 s).</summary>
    public TimeSpan CheckInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Send https registry URLs to the proxy as http (nydus <c>use_http</c>), so it can serve them from its cache.</summary>
    public bool UseHttp { get; init; }

    /// <summary>No pings after this long without a blob request (nydus <c>check_pause_elapsed</c>, default 300 s).</summary>
    public TimeSpan CheckPauseElapsed { get; init; } = TimeSpan.FromSeconds(300);

    public void Validate()
    {
        if (!Uri.TryCreate(Url, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https"))
            throw new ArgumentException($"proxy url '{Url}' is not an http(s) URL");
        if (PingUrl is not null && (!Uri.TryCreate(PingUrl, UriKind.Absolute, out var pu) || pu.Scheme is not ("http" or "https")))
            throw new ArgumentException($"proxy ping_url '{PingUrl}' is not an http(s) URL");
        if (CheckInterval <= TimeSpan.Zero) throw new ArgumentException("proxy check_interval must be positive");
        if (CheckPauseElapsed <= TimeSpan.Zero) throw new ArgumentException("proxy check_pause_elapsed must be positive");
    }
}

/// <summary>Username and password for a registry.</summary>
public sealed record RegistryCredentials(string Username, string Password)
{
    /// <summary>Decodes the docker/nydus <c>auth</c> form: base64 of <c>user:password</c>.</summary>
    public static RegistryCredentials FromAuth(string base64)
    {
        string text;
        try { text = Encoding.UTF8.GetString(Convert.FromBase64String(base64.Trim())); }
        catch (FormatException) { throw new FormatException("registry auth is not base64 of user:password"); }
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0) throw new FormatException("registry auth is not base64 of user:password");
        return new RegistryCredentials(text[..colon], text[(colon + 1)..]);
    }

    internal string BasicHeaderValue => Convert.ToBase64String(Encoding.UTF8.GetBytes(Username + ":" + Password));

    // Never print the password.
    public override string ToString() => $"RegistryCredentials {{ Username = {Username} }}";
}

/// <summary>Reads credentials from a docker <c>config.json</c> (<c>{"auths": {"host": {"auth": base64}}}</c>).</summary>
public static class DockerConfig
{
    private const long MaxConfigBytes = 4 << 20;

    /// <summary>The config file docker would use: $DOCKER_CONFIG/config.json, else ~/.docker/config.json.</summary>
    public static string DefaultPath()
    {
        var dir = Environment.GetEnvironmentVariable("DOCKER_CONFIG");
        if (string.IsNullOrEmpty(dir)) dir = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".docker");
        return Path.Combine(dir, "config.json");
    }

    /// <summary>Credentials for <paramref name="host"/>, or null when the file or the entry is missing. Entries may be
    /// keyed by the bare host or by a URL (<c>https://host/v1/</c>), as docker login writes them.</summary>
    public static RegistryCredentials? Find(string host, string? path = null)
    {
        path ??= DefaultPath();
        if (!File.Exists(path)) return null;
        var info = new FileInfo(path);
        if (info.Length > MaxConfigBytes) throw new InvalidDataException($"{path} is larger than {MaxConfigBytes} bytes");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        if (!doc.RootElement.TryGetProperty("auths", out var auths) || auths.ValueKind != JsonValueKind.Object) return null;
        foreach (var entry in auths.EnumerateObject())
        {
            if (!HostMatches(entry.Name, host) || entry.Value.ValueKind != JsonValueKind.Object) continue;
            if (entry.Value.TryGetProperty("auth", out var a) && a.ValueKind == JsonValueKind.String && a.GetString() is { Length: > 0 } s)
                return RegistryCredentials.FromAuth(s);
            if (entry.Value.TryGetProperty("username", out var u) && entry.Value.TryGetProperty("password", out var p)
                && u.ValueKind == JsonValueKind.String && p.ValueKind == JsonValueKind.String)
                return new RegistryCredentials(u.GetString()!, p.GetString()!);
        }
        return null;
    }

    private static bool HostMatches(string key, string host)
    {
        string k = key;
        int scheme = k.IndexOf("://", StringComparison.Ordinal);
        if (scheme >= 0) k = k[(scheme + 3)..];
        int slash = k.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0) k = k[..slash];
        return k.Equals(host, StringComparison.OrdinalIgnoreCase);
    }
}
