using System.Security.Cryptography;
using System.Text;

namespace VirtioFs.Oci.ObjectStorage;

/// <summary>
/// The OSS header signature (Alibaba Cloud OSS API reference, "Include signatures in the Authorization header"; nydus
/// storage/src/backend/oss.rs signs reads the same way): <c>Authorization: OSS AccessKeyId:Signature</c> with
/// Signature = base64(HMAC-SHA1(secret, VERB \n Content-MD5 \n Content-Type \n Date \n CanonicalizedOSSHeaders
/// CanonicalizedResource)). The OSS headers are the <c>x-oss-</c> ones, lowercased, sorted, one <c>name:value\n</c> each;
/// the resource is <c>/bucket/key</c> plus the sub-resources of the query, sorted. Pure: the date is an argument.
/// </summary>
public static class OssSignature
{
    /// <summary>Query parameters that are part of the signed resource (the OSS reference lists them; others are not signed).</summary>
    private static readonly HashSet<string> SubResources = new(StringComparer.Ordinal)
    {
        "acl", "uploads", "location", "cors", "logging", "website", "referer", "lifecycle", "delete", "append", "tagging",
        "objectMeta", "uploadId", "partNumber", "security-token", "position", "img", "style", "styleName", "replication",
        "replicationProgress", "replicationLocation", "cname", "bucketInfo", "comp", "qos", "live", "status", "vod",
        "startTime", "endTime", "symlink", "x-oss-process", "response-content-type", "response-content-language",
        "response-expires", "response-cache-control", "response-content-disposition", "response-content-encoding",
        "udf", "udfName", "udfImage", "udfId", "udfImageDesc", "udfApplication", "udfApplicationLog", "restore",
        "callback", "callback-var", "policy", "stat", "encryption", "versions", "versioning", "versionId",
    };

    public static string StringToSign(string verb, string contentMd5, string contentType, string date,
        IEnumerable<KeyValuePair<string, string>> headers, string bucket, string objectKey, string query)
    {
        var sb = new StringBuilder();
        sb.Append(verb).Append('\n').Append(contentMd5).Append('\n').Append(contentType).Append('\n').Append(date).Append('\n');
        var oss = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in headers)
        {
            string key = name.ToLowerInvariant();
            if (key.StartsWith("x-oss-", StringComparison.Ordinal)) oss[key] = value.Trim();
        }
        foreach (var (k, v) in oss) sb.Append(k).Append(':').Append(v).Append('\n');
        sb.Append(CanonicalizedResource(bucket, objectKey, query));
        return sb.ToString();
    }

    /// <summary><c>/bucket/key</c> (or <c>/bucket/</c>) and the signed sub-resources of <paramref name="query"/>
    /// (raw, without '?'), sorted by name, <c>name=value</c> or a bare name, joined with '&amp;'.</summary>
    public static string CanonicalizedResource(string bucket, string objectKey, string query)
    {
        string resource = bucket.Length == 0 ? "/" : $"/{bucket}/{objectKey}";
        if (string.IsNullOrEmpty(query)) return resource;
        var subs = new List<(string Name, string? Value)>();
        foreach (var part in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            string name = Uri.UnescapeDataString(eq < 0 ? part : part[..eq]);
            if (!SubResources.Contains(name)) continue;
            string? value = eq < 0 ? null : Uri.UnescapeDataString(part[(eq + 1)..]);
            subs.Add((name, value is { Length: > 0 } ? value : null));
        }
        if (subs.Count == 0) return resource;
        subs.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return resource + "?" + string.Join('&', subs.Select(s => s.Value is null ? s.Name : s.Name + "=" + s.Value));
    }

    public static string Signature(string secret, string stringToSign) =>
        Convert.ToBase64String(HMACSHA1.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes(stringToSign)));

    public static string Authorization(string accessKeyId, string secret, string stringToSign) =>
        $"OSS {accessKeyId}:{Signature(secret, stringToSign)}";
}
