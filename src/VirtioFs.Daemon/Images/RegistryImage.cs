using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using VirtioFs.Oci;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.RafsFs;

namespace VirtioFs.Daemon.Images;

/// <summary>
/// Serving an image named by a registry reference (<c>vfsd --image</c>, or an API mount whose source is a reference):
/// the nydusd config, if any, is rewritten so its backend is that reference's registry (keeping the
/// <c>device.backend.config</c> fields that tune it: auth, proxy, timeouts, retry_limit, ca_file, skip_verify), the
/// reference is resolved to a bootstrap in the cache directory (<see cref="NydusImageResolver"/>), and the result is
/// the same <see cref="RafsMountOptions"/> a <c>--bootstrap</c> with a registry config would give. A config whose
/// backend is s3 or oss keeps it: the image was converted with <c>--backend-type s3|oss</c> (nydusify
/// docs/nydusify.md), so the registry holds the bootstrap only and the data blobs are read from the bucket.
/// </summary>
internal static class RegistryImage
{
    /// <summary>Longest a reference may take to resolve (manifests plus the bootstrap download).</summary>
    public static readonly TimeSpan ResolveDeadline = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Returns <paramref name="json"/> (a nydusd config, or null/blank for none) with <c>device.backend</c> set to the
    /// registry backend of <paramref name="reference"/>. A config naming localfs, or another host or repo, is an error:
    /// the reference says where the image is. A config naming s3 or oss is returned as it is (blobs from the bucket;
    /// <see cref="Resolve"/> takes the bootstrap from the registry). Without <c>auth</c>, <c>registry_token</c> or
    /// <c>docker_config</c>, credentials come from the docker config.json (<c>$DOCKER_CONFIG</c> or ~/.docker), as
    /// <c>vfs-image</c> and docker take them. Throws <see cref="NydusConfig.ConfigException"/>.
    /// </summary>
    public static string RegistryConfig(string? json, OciReference reference)
    {
        ArgumentNullException.ThrowIfNull(reference);
        JsonObject root;
        if (string.IsNullOrWhiteSpace(json))
        {
            root = [];
        }
        else
        {
            if (json.Length > NydusConfig.MaxSize) throw new NydusConfig.ConfigException($"config is larger than {NydusConfig.MaxSize} bytes");
            JsonNode? parsed;
            try
            {
                parsed = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 16, AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            }
            catch (JsonException e)
            {
                throw new NydusConfig.ConfigException($"config is not valid JSON: {e.Message}");
            }
            root = parsed as JsonObject ?? throw new NydusConfig.ConfigException("config must be a JSON object");
            // Some callers wrap a v1 config as {"config": {...}} (NydusConfig accepts both; keep the inner one).
            if (root["device"] is null && root["config"] is JsonObject inner)
            {
                root = inner;
            }
        }
        JsonObject device = Child(root, "device", "device");
        JsonObject backend = Child(device, "backend", "device.backend");
        string? type = String(backend, "type", "device.backend.type");
        if (type is "s3" or "oss")
        {
            return root.ToJsonString();
        }
        if (type is not null && type != "registry")
        {
            throw new NydusConfig.ConfigException($"device.backend.type '{type}' does not apply to an image reference: its blobs are read from the registry");
        }
        backend["type"] = "registry";
        JsonObject config = Child(backend, "config", "device.backend.config");
        CheckSame(config, "host", reference.Host, reference);
        CheckSame(config, "repo", reference.Repository, reference);
        config["host"] = reference.Host;
        config["repo"] = reference.Repository;
        if (config["auth"] is null && config["registry_token"] is null && config["docker_config"] is null)
        {
            config["docker_config"] = DockerConfig.DefaultPath();
        }
        return root.ToJsonString();
    }

    /// <summary>
    /// Resolves <paramref name="reference"/> into <paramref name="options"/>.<see cref="RafsMountOptions.Bootstrap"/>,
    /// using the registry settings and cache directory already in <paramref name="options"/> (from
    /// <see cref="RegistryConfig"/> and the flags). With an object storage backend the bootstrap comes from the
    /// reference's registry with default settings and the docker config.json's credentials, and the blobs stay in the
    /// bucket. Throws <see cref="RafsMountException"/> naming the cause.
    /// </summary>
    public static ResolvedNydusImage Resolve(OciReference reference, OciPlatform platform, RafsMountOptions options, ILogger logger)
    {
        RegistryOptions registry = options.Registry
            ?? (options.ObjectStorage is not null ? BootstrapRegistry(reference)
                : throw new RafsMountException($"{reference}: no registry backend configured"));
        if (options.CacheDir is not { Length: > 0 } cacheDir)
        {
            throw new RafsMountException($"{reference}: an image reference needs a cache directory (--cache-dir, or device.cache.config.work_dir) to keep its bootstrap in");
        }
        ImageLog.Resolving(logger, reference.ToString(), platform.ToString());
        ResolvedNydusImage resolved;
        // Every registry request has its own deadline, but a whole-blob transfer's is long (it may be large); this
        // bounds the start-up (or the API request) as a whole, so a registry that trickles bytes cannot stall it.
        using var deadline = new CancellationTokenSource(ResolveDeadline);
        try
        {
            resolved = NydusImageResolver.ResolveAsync(reference, platform, registry, cacheDir, CheckBootstrap, logger, deadline.Token).GetAwaiter().GetResult();
        }
        catch (ImageResolveException e)
        {
            throw new RafsMountException(e.Message, e);
        }
        catch (OperationCanceledException e)
        {
            throw new RafsMountException($"{reference}: not resolved within {ResolveDeadline.TotalSeconds:0} s", e);
        }
        if (resolved.FromCache)
        {
            ImageLog.ResolvedFromCache(logger, reference.ToString(), resolved.ManifestDigest, resolved.BootstrapPath, resolved.OfflineReason ?? "");
        }
        else
        {
            ImageLog.Resolved(logger, reference.ToString(), resolved.ManifestDigest, resolved.BootstrapPath);
        }
        options.Bootstrap = resolved.BootstrapPath;
        return resolved;
    }

    /// <summary>
    /// True when an API mount's <c>source</c> names an image in a registry rather than a bootstrap file: it is not an
    /// existing path and its first component is a registry host (has a '.' or ':' or is <c>localhost</c>, the rule
    /// docker uses to tell a registry from a Docker Hub namespace), so a mistyped relative path is not sent to a registry.
    /// </summary>
    public static bool IsReference(string source, out OciReference reference)
    {
        reference = null!;
        if (string.IsNullOrEmpty(source) || source.StartsWith('/') || source.StartsWith('.') || File.Exists(source) || Directory.Exists(source))
        {
            return false;
        }
        int slash = source.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0) return false;
        string host = source[..slash];
        if (!host.Contains('.', StringComparison.Ordinal) && !host.Contains(':', StringComparison.Ordinal) && host != "localhost") return false;
        return OciReference.TryParse(source, out reference, out _);
    }

    /// <summary>The registry a bootstrap-only image (blobs in a bucket) is pulled from: the reference's, with the
    /// credentials docker would use.</summary>
    private static RegistryOptions BootstrapRegistry(OciReference reference)
    {
        RegistryCredentials? credentials;
        try
        {
            credentials = DockerConfig.Find(reference.Host);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or FormatException or InvalidDataException)
        {
            throw new RafsMountException($"{reference}: docker config {DockerConfig.DefaultPath()}: {e.Message}", e);
        }
        return new RegistryOptions { Host = reference.Host, Repository = reference.Repository, Credentials = credentials };
    }

    private static void CheckBootstrap(string path)
    {
        try
        {
            using var image = RafsImage.Open(path);
        }
        catch (RafsFormatException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }

    private static JsonObject Child(JsonObject parent, string name, string path)
    {
        switch (parent[name])
        {
            case null:
                var created = new JsonObject();
                parent[name] = created;
                return created;
            case JsonObject o:
                return o;
            default:
                throw new NydusConfig.ConfigException($"{path} must be an object");
        }
    }

    private static string? String(JsonObject obj, string name, string path) => obj[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new NydusConfig.ConfigException($"{path} must be a string"),
    };

    private static void CheckSame(JsonObject config, string name, string want, OciReference reference)
    {
        if (String(config, name, "device.backend.config." + name) is { Length: > 0 } got && got != want)
        {
            throw new NydusConfig.ConfigException($"device.backend.config.{name} '{got}' contradicts the image reference {reference}");
        }
    }
}
