using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace VirtioFs.Oci.ObjectStorage;

/// <summary>
/// AWS Signature Version 4 for S3 requests with the signature in the Authorization header (Amazon S3 API Reference,
/// "Signature Calculations for the Authorization Header: Transferring Payload in a Single Chunk"; nydus
/// storage/src/backend/s3.rs signs the same way). The canonical request is method, URI-encoded path, sorted query,
/// the lowercase sorted signed headers, their names, and the payload hash; the string to sign hashes it under the
/// date/region/service scope; the key is HMAC-SHA256 chained from "AWS4"+secret over date, region, service, "aws4_request".
/// Pure functions: the time is an argument, so the published examples can be replayed.
/// </summary>
public static class AwsSignatureV4
{
    /// <summary>SHA-256 of an empty body, the payload hash of GET and HEAD.</summary>
    public const string EmptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// <summary>The payload hash that leaves a body out of the signature (S3 accepts it for header-signed requests).</summary>
    public const string UnsignedPayload = "UNSIGNED-PAYLOAD";

    public const string Algorithm = "AWS4-HMAC-SHA256";

    /// <summary>The <c>x-amz-date</c> form of a time: <c>yyyyMMddTHHmmssZ</c> in UTC.</summary>
    public static string AmzDate(DateTime utc) => utc.ToUniversalTime().ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);

    /// <summary>
    /// The Authorization header value for a request. <paramref name="canonicalPath"/> is the path exactly as sent
    /// (already URI-encoded, see <see cref="EncodePath"/>); <paramref name="query"/> is the raw query without '?'
    /// (its pairs are sorted and encoded here); <paramref name="headers"/> are the headers to sign, which must include
    /// host, x-amz-date and x-amz-content-sha256.
    /// </summary>
    public static string Authorization(string method, string canonicalPath, string query, IEnumerable<KeyValuePair<string, string>> headers,
        string payloadHash, string accessKeyId, string secret, string region, DateTime utc, string service = "s3")
    {
        string canonical = CanonicalRequest(method, canonicalPath, query, headers, payloadHash, out string signedHeaders);
        string scope = $"{utc:yyyyMMdd}/{region}/{service}/aws4_request";
        string toSign = StringToSign(canonical, utc, scope);
        byte[] key = SigningKey(secret, utc, region, service);
        string signature = Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(toSign)));
        return $"{Algorithm} Credential={accessKeyId}/{scope},SignedHeaders={signedHeaders},Signature={signature}";
    }

    public static string CanonicalRequest(string method, string canonicalPath, string query, IEnumerable<KeyValuePair<string, string>> headers,
        string payloadHash, out string signedHeaders)
    {
        var sorted = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in headers)
        {
            string key = name.ToLowerInvariant();
            string v = string.Join(' ', value.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries));   // sequential spaces become one
            sorted[key] = sorted.TryGetValue(key, out var prior) ? prior + "," + v : v;
        }
        signedHeaders = string.Join(';', sorted.Keys);
        var sb = new StringBuilder();
        sb.Append(method).Append('\n').Append(canonicalPath.Length == 0 ? "/" : canonicalPath).Append('\n');
        sb.Append(CanonicalQuery(query)).Append('\n');
        foreach (var (k, v) in sorted) sb.Append(k).Append(':').Append(v).Append('\n');
        sb.Append('\n').Append(signedHeaders).Append('\n').Append(payloadHash);
        return sb.ToString();
    }

    public static string StringToSign(string canonicalRequest, DateTime utc, string scope) =>
        $"{Algorithm}\n{AmzDate(utc)}\n{scope}\n{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonicalRequest)))}";

    public static byte[] SigningKey(string secret, DateTime utc, string region, string service)
    {
        byte[] k = HMACSHA256.HashData(Encoding.UTF8.GetBytes("AWS4" + secret), Encoding.UTF8.GetBytes(utc.ToString("yyyyMMdd", CultureInfo.InvariantCulture)));
        k = HMACSHA256.HashData(k, Encoding.UTF8.GetBytes(region));
        k = HMACSHA256.HashData(k, Encoding.UTF8.GetBytes(service));
        return HMACSHA256.HashData(k, "aws4_request"u8);
    }

    /// <summary>Query pairs sorted by name (then value), each name and value URI-encoded; a name without '=' gets an
    /// empty value (<c>?uploads</c> signs as <c>uploads=</c>).</summary>
    public static string CanonicalQuery(string query)
    {
        if (string.IsNullOrEmpty(query)) return "";
        var pairs = new List<(string Name, string Value)>();
        foreach (var part in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            string name = Uri.UnescapeDataString(eq < 0 ? part : part[..eq]);
            string value = eq < 0 ? "" : Uri.UnescapeDataString(part[(eq + 1)..]);
            pairs.Add((Encode(name, keepSlash: false), Encode(value, keepSlash: false)));
        }
        pairs.Sort((a, b) => a.Name != b.Name ? string.CompareOrdinal(a.Name, b.Name) : string.CompareOrdinal(a.Value, b.Value));
        return string.Join('&', pairs.Select(p => p.Name + "=" + p.Value));
    }

    /// <summary>An object key as it goes into a URL path and the canonical request: every byte but the unreserved
    /// characters (A-Z a-z 0-9 - . _ ~) and '/' percent-encoded with uppercase hex (S3 encodes the path once).</summary>
    public static string EncodePath(string path) => Encode(path, keepSlash: true);

    private static string Encode(string s, bool keepSlash)
    {
        var sb = new StringBuilder(s.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(s))
        {
            char c = (char)b;
            if (char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' or '~' || (keepSlash && c == '/')) sb.Append(c);
            else sb.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
