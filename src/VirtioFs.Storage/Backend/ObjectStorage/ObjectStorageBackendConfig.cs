using System.Text.Json;
using VirtioFs.Oci.ObjectStorage;
using static VirtioFs.Storage.Backend.Registry.RegistryBackendConfig;

namespace VirtioFs.Storage.Backend.ObjectStorage;

/// <summary>
/// The nydus <c>s3</c> and <c>oss</c> backend configs (<c>device.backend.config</c>, nydus api/src/config.rs
/// <c>S3Config</c> / <c>OssConfig</c>): <c>scheme</c> (default https), <c>endpoint</c>, <c>region</c> (s3),
/// <c>bucket_name</c>, <c>object_prefix</c>, <c>access_key_id</c>, <c>access_key_secret</c>, <c>skip_verify</c>,
/// <c>ca_cert_files</c>, <c>timeout</c>, <c>connect_timeout</c>, <c>retry_limit</c> and <c>proxy</c>. Added here:
/// <c>session_token</c> (temporary credentials) and <c>path_style</c> (true: <c>endpoint/bucket/key</c>, nydus's s3
/// form and the default for s3; false: <c>bucket.endpoint/key</c>, nydus's oss form and the default for oss). Without
/// an access key in the config, the environment's is used (<see cref="ObjectStorageOptions.FromEnvironment"/>).
/// </summary>
public static class ObjectStorageBackendConfig
{
    private const int MaxConfigBytes = 1 << 20;

    public static ObjectStorageOptions Parse(string type, ReadOnlySpan<byte> json, Func<string, string?>? getenv = null)
    {
        if (json.Length > MaxConfigBytes) throw new FormatException($"{type} backend config is too large");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException e) { throw new FormatException($"{type} backend config is not JSON: {e.Message}"); }
        using (doc) return Parse(type, doc.RootElement, getenv);
    }

    public static ObjectStorageOptions Parse(string type, JsonElement c, Func<string, string?>? getenv = null)
    {
        var kind = type switch
        {
            "s3" => ObjectStorageKind.S3,
            "oss" => ObjectStorageKind.Oss,
            _ => throw new FormatException($"'{type}' is not an object storage backend (s3 or oss)"),
        };
        if (c.ValueKind != JsonValueKind.Object) throw new FormatException($"{type} backend config must be an object");
        string bucket = Str(c, "bucket_name") ?? throw new FormatException($"{type} backend config needs 'bucket_name'");
        string id = Str(c, "access_key_id") ?? "", secret = Str(c, "access_key_secret") ?? "";
        if ((id.Length == 0) != (secret.Length == 0)) throw new FormatException("'access_key_id' and 'access_key_secret' go together");
        ObjectStorageCredentials? creds = null;
        string source = "none";
        if (id.Length > 0)
        {
            creds = new ObjectStorageCredentials(id, secret, Str(c, "session_token") is { Length: > 0 } t ? t : null);
            source = "config";
        }
        else if (ObjectStorageOptions.FromEnvironment(kind, getenv) is { } env)
        {
            creds = env;
            source = "environment";
        }
        string? caFile = null;
        if (c.TryGetProperty("ca_cert_files", out var ca) && ca.ValueKind != JsonValueKind.Null)
        {
            if (ca.ValueKind != JsonValueKind.Array || ca.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
                throw new FormatException("'ca_cert_files' must be an array of paths");
            var files = ca.EnumerateArray().Select(e => e.GetString()!).Where(f => f.Length > 0).ToArray();
            if (files.Length > 1) throw new FormatException("'ca_cert_files' with more than one file is not supported; put the certificates in one PEM file");
            caFile = files.FirstOrDefault();
        }
        // nydus has no mirrors for object storage; a config that names some expects them honoured.
        if (c.TryGetProperty("mirrors", out var m) && m.ValueKind == JsonValueKind.Array && m.GetArrayLength() > 0)
            throw new FormatException($"'mirrors' is not supported for the {type} backend");
        var o = new ObjectStorageOptions
        {
            Kind = kind,
            Scheme = Str(c, "scheme") is { Length: > 0 } s ? s : "https",
            Endpoint = Str(c, "endpoint") ?? "",
            Region = Str(c, "region") ?? "",
            Bucket = bucket,
            ObjectPrefix = Str(c, "object_prefix") ?? "",
            Credentials = creds,
            CredentialSource = source,
            PathStyle = Bool(c, "path_style") ?? kind == ObjectStorageKind.S3,
            Transport = ParseTransport(c, caFile, ParseProxy(c)),
        };
        try { o.Validate(); }
        catch (ArgumentException e) { throw new FormatException(e.Message); }
        return o;
    }
}
