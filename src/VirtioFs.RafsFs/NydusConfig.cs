using System.Text.Json;
using VirtioFs.Storage.Backend.Registry;
using VirtioFs.Storage.Cache;

namespace VirtioFs.RafsFs;

/// <summary>
/// Reads the nydusd RAFS configuration (JSON, "v1" shape, nydus docs/nydusd.md and api/src/config.rs) into
/// <see cref="RafsMountOptions"/>. Understood: <c>device.backend.type</c> = localfs with <c>config.dir</c> or
/// <c>config.blob_file</c>, or registry with nydus's registry fields (see <see cref="RegistryBackendConfig"/>), or s3/oss with nydus's object
/// storage fields (see <see cref="VirtioFs.Storage.Backend.ObjectStorage.ObjectStorageBackendConfig"/>); <c>device.cache.type</c> = blobcache (or filecache) with <c>config.work_dir</c>, or
/// empty/dummycache for no cache; <c>digest_validate</c> (true re-verifies cached chunks on every read);
/// <c>amplify_io</c>; <c>fs_prefetch.enable</c>, <c>threads_count</c>, <c>bandwidth_rate</c>, <c>prefetch_all</c>.
/// Keys nydus has that change nothing here (mode, iostats_files, enable_xattr, latest_read_files, access_pattern,
/// merging_size, ...) are accepted and ignored; a wrong type or an unsupported backend is an error naming the key.
/// Parsed with <see cref="JsonDocument"/> (no reflection, NativeAOT-safe); input is capped at 1 MiB.
/// </summary>
public static class NydusConfig
{
    public const int MaxSize = 1 << 20;

    public sealed class ConfigException(string message) : Exception(message);

    /// <summary>Applies the JSON config <paramref name="json"/> to <paramref name="options"/> (the bootstrap path comes
    /// from elsewhere: the command line or the mount request).</summary>
    public static void Apply(string json, RafsMountOptions options)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentNullException.ThrowIfNull(options);
        if (json.Length > MaxSize) throw new ConfigException($"config is larger than {MaxSize} bytes");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16, AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new ConfigException($"config is not valid JSON: {e.Message}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ConfigException("config must be a JSON object");
            // The mount API wraps a v1 config as {"config": {...}} in some callers; accept both.
            if (Get(root, "device") is null && Get(root, "config") is { ValueKind: JsonValueKind.Object } inner) root = inner;

            if (Get(root, "device") is { } device)
            {
                Obj(device, "device");
                if (Get(device, "backend") is { } backend)
                {
                    Obj(backend, "device.backend");
                    string type = Str(backend, "type", "device.backend.type") ?? "localfs";
                    switch (type)
                    {
                        case "localfs":
                            if (Get(backend, "config") is { } bc)
                            {
                                Obj(bc, "device.backend.config");
                                if (Str(bc, "dir", "device.backend.config.dir") is { } dir) options.BlobDir = dir;
                                if (Str(bc, "blob_file", "device.backend.config.blob_file") is { Length: > 0 } file) options.BlobFile = file;
                            }
                            break;
                        case "registry":
                            if (Get(backend, "config") is not { } rc) throw new ConfigException("device.backend.type registry needs device.backend.config");
                            try
                            {
                                options.Registry = RegistryBackendConfig.Parse(rc);
                            }
                            catch (FormatException e)
                            {
                                throw new ConfigException($"device.backend.config: {e.Message}");
                            }
                            break;
                        case "s3" or "oss":
                            if (Get(backend, "config") is not { } oc) throw new ConfigException($"device.backend.type {type} needs device.backend.config");
                            try
                            {
                                options.ObjectStorage = VirtioFs.Storage.Backend.ObjectStorage.ObjectStorageBackendConfig.Parse(type, oc);
                            }
                            catch (FormatException e)
                            {
                                throw new ConfigException($"device.backend.config: {e.Message}");
                            }
                            break;
                        default:
                            throw new ConfigException($"device.backend.type '{type}' is not supported (localfs, registry, s3 or oss)");
                    }
                }
                if (Get(device, "cache") is { } cache)
                {
                    Obj(cache, "device.cache");
                    string type = Str(cache, "type", "device.cache.type") ?? "";
                    switch (type)
                    {
                        case "blobcache" or "filecache":
                            if (Get(cache, "config") is { } cc)
                            {
                                Obj(cc, "device.cache.config");
                                if (Str(cc, "work_dir", "device.cache.config.work_dir") is { } wd) options.CacheDir = wd;
                            }
                            if (options.CacheDir is null) throw new ConfigException("device.cache.type blobcache needs device.cache.config.work_dir");
                            break;
                        case "" or "dummycache" or "dummy":
                            options.CacheDir = null;
                            break;
                        default:
                            throw new ConfigException($"device.cache.type '{type}' is not supported (blobcache, filecache or dummycache)");
                    }
                }
            }
            if (Bool(root, "digest_validate") is { } dv) options.Verify = dv ? VerifyMode.Always : VerifyMode.Fetch;
            if (Int(root, "amplify_io", 0, CacheOptions.MaxMergedRead) is { } amp) options.AmplificationBytes = (int)amp;
            if (Get(root, "fs_prefetch") is { } pf)
            {
                Obj(pf, "fs_prefetch");
                bool enable = Bool(pf, "enable", "fs_prefetch.enable") ?? false;
                bool all = Bool(pf, "prefetch_all", "fs_prefetch.prefetch_all") ?? false;
                if (Int(pf, "threads_count", 1, 64, "fs_prefetch.threads_count") is { } t) options.PrefetchThreads = (int)t;
                if (Int(pf, "bandwidth_rate", 0, long.MaxValue, "fs_prefetch.bandwidth_rate") is { } bw) options.PrefetchBandwidth = bw;
                if (!enable) options.Prefetch = PrefetchSource.None;
                else if (all) options.Prefetch = PrefetchSource.All;
                else if (options.Prefetch == PrefetchSource.None) options.Prefetch = PrefetchSource.ImageTable;
            }
        }
    }

    private static JsonElement? Get(JsonElement obj, string name) =>
        obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static void Obj(JsonElement e, string path)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new ConfigException($"{path} must be an object");
    }

    private static string? Str(JsonElement obj, string name, string path)
    {
        if (Get(obj, name) is not { } v) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ConfigException($"{path} must be a string");
    }

    private static bool? Bool(JsonElement obj, string name, string? path = null)
    {
        if (Get(obj, name) is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ConfigException($"{path ?? name} must be true or false"),
        };
    }

    private static long? Int(JsonElement obj, string name, long min, long max, string? path = null)
    {
        if (Get(obj, name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long n) || n < min || n > max)
            throw new ConfigException($"{path ?? name} must be an integer from {min} to {max}");
        return n;
    }
}
