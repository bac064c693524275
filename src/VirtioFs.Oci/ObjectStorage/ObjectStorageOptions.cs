namespace VirtioFs.Oci.ObjectStorage;

/// <summary>Which object storage protocol a bucket speaks: Amazon S3 (and S3-compatible servers) or Alibaba OSS.</summary>
public enum ObjectStorageKind { S3, Oss }

/// <summary>An access key for a bucket; the secret and the session token are never printed.</summary>
public sealed record ObjectStorageCredentials(string AccessKeyId, string AccessKeySecret, string? SessionToken = null)
{
    public override string ToString() => $"ObjectStorageCredentials {{ AccessKeyId = {AccessKeyId} }}";
}

/// <summary>
/// How to reach one bucket, with nydus's names for the fields (api/src/config.rs, <c>S3Config</c> and <c>OssConfig</c>):
/// <c>scheme</c> (default https), <c>endpoint</c>, <c>region</c> (S3), <c>bucket_name</c>, <c>object_prefix</c>,
/// <c>access_key_id</c>, <c>access_key_secret</c>; the connection fields every nydus backend shares are in
/// <see cref="Transport"/>.
/// </summary>
public sealed class ObjectStorageOptions
{
    /// <summary>nydus's S3 default endpoint (storage/src/backend/s3.rs, S3_DEFAULT_ENDPOINT).</summary>
    public const string DefaultS3Endpoint = "s3.amazonaws.com";

    public ObjectStorageKind Kind { get; init; } = ObjectStorageKind.S3;

    /// <summary><c>host[:port]</c> of the service; empty means <see cref="DefaultS3Endpoint"/> for S3.</summary>
    public string Endpoint { get; init; } = "";

    /// <summary>"http" or "https" (nydus default: https).</summary>
    public string Scheme { get; init; } = "https";

    /// <summary>S3 region the requests are signed for; empty means us-east-1.</summary>
    public string Region { get; init; } = "";

    public required string Bucket { get; init; }

    /// <summary>Prepended to every blob id to make the object key (nydus <c>object_prefix</c>, e.g. <c>nydus/</c>).</summary>
    public string ObjectPrefix { get; init; } = "";

    /// <summary>The access key; null sends unsigned requests (a public bucket).</summary>
    public ObjectStorageCredentials? Credentials { get; init; }

    /// <summary>Where <see cref="Credentials"/> came from, for the log: "config", "environment" or "none".</summary>
    public string CredentialSource { get; init; } = "config";

    /// <summary>Path-style URLs (<c>endpoint/bucket/key</c>, as nydus builds S3 URLs) or virtual-host-style
    /// (<c>bucket.endpoint/key</c>, as nydus builds OSS URLs and AWS prefers).</summary>
    public bool PathStyle { get; init; } = true;

    /// <summary>Deadlines, retries, certificate check and the forward proxy for reads (routed as the registry backend
    /// routes it); <see cref="Http.HttpTransportOptions.TransferTimeout"/> bounds one upload attempt (a part, or a
    /// whole small object).</summary>
    public Http.HttpTransportOptions Transport { get; init; } = new();

    internal string EffectiveEndpoint => Endpoint is { Length: > 0 } e ? e : DefaultS3Endpoint;
    internal string EffectiveRegion => Region is { Length: > 0 } r ? r : "us-east-1";
    internal string ServiceName => Kind == ObjectStorageKind.S3 ? "s3" : "oss";

    public void Validate()
    {
        if (Scheme is not ("http" or "https")) throw new ArgumentException($"scheme must be http or https, not '{Scheme}'");
        if (Kind == ObjectStorageKind.Oss && Endpoint.Length == 0) throw new ArgumentException("oss needs an endpoint");
        if (EffectiveEndpoint.Contains('/', StringComparison.Ordinal) || Uri.CheckHostName(HostOf(EffectiveEndpoint)) == UriHostNameType.Unknown)
            throw new ArgumentException($"bad endpoint '{Endpoint}' (host[:port], without a scheme)");
        // S3 bucket naming rules (3-63 of lowercase letters, digits, '.', '-'); OSS's are a subset.
        if (Bucket.Length is < 3 or > 63 || !Bucket.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '.' or '-'))
            throw new ArgumentException($"bad bucket name '{Bucket}'");
        if (ObjectPrefix.Length > 512 || ObjectPrefix.Any(char.IsControl)) throw new ArgumentException("bad object_prefix");
        if (Credentials is { } c && (c.AccessKeyId.Length == 0 || c.AccessKeySecret.Length == 0))
            throw new ArgumentException("access_key_id and access_key_secret go together");
        Transport.Validate();
    }

    private static string HostOf(string endpoint)
    {
        if (endpoint.StartsWith('[')) return endpoint;
        int colon = endpoint.LastIndexOf(':');
        return colon > 0 ? endpoint[..colon] : endpoint;
    }

    /// <summary>
    /// The credentials a config without its own access key falls back to: <c>AWS_ACCESS_KEY_ID</c>,
    /// <c>AWS_SECRET_ACCESS_KEY</c> and <c>AWS_SESSION_TOKEN</c> for S3 (the AWS CLI's names), <c>OSS_ACCESS_KEY_ID</c>,
    /// <c>OSS_ACCESS_KEY_SECRET</c> and <c>OSS_SESSION_TOKEN</c> for OSS (the Alibaba Cloud SDKs' names). Null when unset.
    /// </summary>
    public static ObjectStorageCredentials? FromEnvironment(ObjectStorageKind kind, Func<string, string?>? getenv = null)
    {
        getenv ??= Environment.GetEnvironmentVariable;
        var (id, secret, token) = kind == ObjectStorageKind.S3
            ? ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
            : ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN");
        if (getenv(id) is not { Length: > 0 } k || getenv(secret) is not { Length: > 0 } s) return null;
        return new ObjectStorageCredentials(k, s, getenv(token) is { Length: > 0 } t ? t : null);
    }
}
