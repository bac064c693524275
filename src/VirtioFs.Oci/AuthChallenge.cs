using VirtioFs.Oci.Http;

namespace VirtioFs.Oci;

/// <summary>
/// One <c>WWW-Authenticate</c> challenge (RFC 7235 section 4.1): a scheme and its auth-params. A registry answers 401 with
/// <c>Basic realm="..."</c> or, for token auth (docker "token.md"), <c>Bearer realm="https://auth/token",service="reg",
/// scope="repository:foo:pull"</c>. The parser is pure: bad input gives false, never an exception.
/// </summary>
public sealed record AuthChallenge(string Scheme, IReadOnlyDictionary<string, string> Parameters)
{
    private const int MaxHeaderLength = 8192;

    public string? Realm => Parameters.GetValueOrDefault("realm");
    public string? Service => Parameters.GetValueOrDefault("service");
    public string? Scope => Parameters.GetValueOrDefault("scope");
    public bool IsBearer => Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase);
    public bool IsBasic => Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase);

    /// <summary>Parses the first challenge of a header value (a registry sends one).</summary>
    public static bool TryParse(string header, out AuthChallenge challenge)
    {
        challenge = null!;
        if (string.IsNullOrWhiteSpace(header) || header.Length > MaxHeaderLength) return false;
        int i = 0;
        SkipSpaces(header, ref i);
        int start = i;
        while (i < header.Length && IsTokenChar(header[i])) i++;
        if (i == start) return false;
        string scheme = header[start..i];
        var ps = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        while (true)
        {
            SkipSpaces(header, ref i);
            if (i >= header.Length) break;
            int ns = i;
            while (i < header.Length && IsTokenChar(header[i])) i++;
            if (i == ns) return false;
            string name = header[ns..i];
            SkipSpaces(header, ref i);
            if (i >= header.Length || header[i] != '=')
            {
                // A second challenge starts (scheme followed by a space): stop at the first one.
                break;
            }
            i++;
            SkipSpaces(header, ref i);
            string value;
            if (i < header.Length && header[i] == '"')
            {
                i++;
                var sb = new System.Text.StringBuilder();
                bool closed = false;
                while (i < header.Length)
                {
                    char c = header[i++];
                    if (c == '\\' && i < header.Length) { sb.Append(header[i++]); continue; }
                    if (c == '"') { closed = true; break; }
                    sb.Append(c);
                }
                if (!closed) return false;
                value = sb.ToString();
            }
            else
            {
                int vs = i;
                while (i < header.Length && header[i] != ',' && header[i] != ' ') i++;
                value = header[vs..i];
            }
            ps[name] = value;
            SkipSpaces(header, ref i);
            if (i < header.Length)
            {
                if (header[i] != ',') return false;
                i++;
            }
        }
        challenge = new AuthChallenge(scheme, ps);
        return true;
    }

    private static void SkipSpaces(string s, ref int i)
    {
        while (i < s.Length && (s[i] == ' ' || s[i] == '\t')) i++;
    }

    private static bool IsTokenChar(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal);
}

/// <summary>A registry operation failed. <see cref="RemoteStorageException.Transient"/> says whether trying again may
/// help (connection errors, timeouts, truncated bodies, 5xx, 429); <see cref="RemoteStorageException.StatusCode"/> is the
/// HTTP status when there was one.</summary>
public sealed class RegistryException(string message, int statusCode = 0, bool transient = false, Exception? inner = null)
    : RemoteStorageException(message, statusCode, transient, inner);
