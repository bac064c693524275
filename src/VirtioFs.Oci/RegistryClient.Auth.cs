using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using VirtioFs.Oci.Http;

namespace VirtioFs.Oci;

// Registry authentication (RFC 7235 challenges; docker "token.md"): a request goes out with the current credentials,
// and a 401 with a Basic or Bearer challenge is answered once, with a token fetched from the realm and cached per scope.
public sealed partial class RegistryClient
{
    private const int MaxTokenResponseBytes = 1 << 20;

    private readonly Lock _authLock = new();
    private AuthChallenge? _challenge;                 // the registry's last Bearer/Basic challenge
    private readonly ConcurrentDictionary<string, (string Token, DateTime Expires)> _tokens = new(StringComparer.Ordinal);

    /// <summary>Sends a request with the current credentials; on a 401 with a challenge it authenticates once and
    /// sends it again. <paramref name="make"/> builds a fresh request each time (a request cannot be sent twice);
    /// a non-replayable body (a stream) is authenticated up front with a bodiless probe instead.</summary>
    private async Task<HttpResponseMessage> SendAsync(Func<HttpRequestMessage> make, string scope, CancellationToken ct, bool replayable = true,
        HttpClient? via = null)
    {
        var http = via ?? _pipeline.Direct;
        if (!replayable && _challenge is null && (Credentials is not null || _o.BearerToken is not null))
        {
            // Learn the challenge with a cheap GET /v2/ before streaming a body that cannot be sent twice.
            using var probe = await SendAsync(() => new HttpRequestMessage(HttpMethod.Get, "v2/"), scope, ct).ConfigureAwait(false);
        }
        var req = make();
        await AuthorizeAsync(req, scope, ct).ConfigureAwait(false);
        var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
        if (resp.StatusCode != HttpStatusCode.Unauthorized || !replayable) return _pipeline.ThrowIfTransient(resp);
        AuthChallenge? ch = null;
        foreach (var h in resp.Headers.WwwAuthenticate)
            if (AuthChallenge.TryParse(h.ToString(), out var c) && (c.IsBearer || c.IsBasic)) { ch = c; break; }
        if (ch is null) return _pipeline.ThrowIfTransient(resp);
        resp.Dispose();
        lock (_authLock) _challenge = ch;
        _tokens.TryRemove(scope, out _);             // a cached token was rejected: fetch a new one
        req = make();
        await AuthorizeAsync(req, scope, ct).ConfigureAwait(false);
        return _pipeline.ThrowIfTransient(await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false));
    }


    private async Task AuthorizeAsync(HttpRequestMessage req, string scope, CancellationToken ct)
    {
        AuthChallenge? ch;
        lock (_authLock) ch = _challenge;
        if (ch is null)
        {
            if (_o.BearerToken is { } t) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", t);
            return;
        }
        if (ch.IsBasic)
        {
            if (Credentials is { } c) req.Headers.Authorization = new AuthenticationHeaderValue("Basic", c.BasicHeaderValue);
            return;
        }
        string token = await GetTokenAsync(ch, scope, ct).ConfigureAwait(false);
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    /// <summary>A bearer token for <paramref name="scope"/> (space-separated scopes), from the cache while it has more
    /// than a tenth of its life (at least 5 s) left, else from the realm (docker "token.md": GET realm?service=&amp;scope=,
    /// Basic credentials when configured; the answer is JSON with token or access_token and expires_in, 60 s by default).</summary>
    private async Task<string> GetTokenAsync(AuthChallenge ch, string scope, CancellationToken ct)
    {
        if (_tokens.TryGetValue(scope, out var cached) && cached.Expires > DateTime.UtcNow) return cached.Token;
        if (ch.Realm is not { } realm || !Uri.TryCreate(realm, UriKind.Absolute, out var realmUri) || realmUri.Scheme is not ("http" or "https"))
            throw new RegistryException($"bearer challenge has no usable realm ('{ch.Realm}')", 401);
        var query = new List<string>();
        if (ch.Service is { } svc) query.Add("service=" + Uri.EscapeDataString(svc));
        foreach (var s in scope.Split(' ', StringSplitOptions.RemoveEmptyEntries)) query.Add("scope=" + Uri.EscapeDataString(s));
        var uri = HttpRequestPipeline.AddQuery(realmUri, string.Join('&', query));
        using var req = new HttpRequestMessage(HttpMethod.Get, uri);
        if (Credentials is { } c) req.Headers.Authorization = new AuthenticationHeaderValue("Basic", c.BasicHeaderValue);
        using var resp = _pipeline.ThrowIfTransient(await _pipeline.Direct.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false));
        if (!resp.IsSuccessStatusCode) throw StatusError(resp, "token request to " + realmUri.Host);
        var body = await _pipeline.ReadLimitedAsync(resp.Content, MaxTokenResponseBytes, ct).ConfigureAwait(false);
        string? token = null;
        int expiresIn = 60;
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            if (root.ValueKind == JsonValueKind.Object)
            {
                if (root.TryGetProperty("token", out var tk) && tk.ValueKind == JsonValueKind.String) token = tk.GetString();
                if (string.IsNullOrEmpty(token) && root.TryGetProperty("access_token", out var at) && at.ValueKind == JsonValueKind.String) token = at.GetString();
                if (root.TryGetProperty("expires_in", out var ei) && ei.TryGetInt32(out int e) && e > 0) expiresIn = Math.Min(e, 86400);
            }
        }
        // InvalidOperationException: a token string that is not valid Unicode (GetString checks it only then).
        catch (Exception ex) when (ex is JsonException or InvalidOperationException) { }
        if (string.IsNullOrEmpty(token)) throw new RegistryException("token endpoint answered without a token", (int)resp.StatusCode);
        var life = TimeSpan.FromSeconds(expiresIn);
        var margin = TimeSpan.FromSeconds(Math.Max(5, expiresIn / 10.0));
        _tokens[scope] = (token, DateTime.UtcNow + (life > margin ? life - margin : TimeSpan.Zero));
        OciLog.TokenFetched(_log, scope, realmUri.Host, expiresIn);
        return token;
    }

    private void EnsureSuccess(HttpResponseMessage resp, string what)
    {
        if (!resp.IsSuccessStatusCode) throw StatusError(resp, what);
    }

    private RegistryException StatusError(HttpResponseMessage resp, string what)
    {
        int code = (int)resp.StatusCode;
        bool transient = code >= 500 || code == 429;
        // Say which it is: a user seeing a bare 401 cannot tell "no credentials" from "wrong credentials".
        string hint = code is 401 or 403
            ? Credentials is null && _o.BearerToken is null
                ? " (the registry wants credentials and none were given: docker config.json, --docker-config, or auth in the config)"
                : " (the registry refused the credentials given)"
            : "";
        return new RegistryException($"{what}: HTTP {code} {resp.ReasonPhrase}{hint}", code, transient);
    }
}
