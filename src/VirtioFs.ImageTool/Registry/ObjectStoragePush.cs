using VirtioFs.Oci.ObjectStorage;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Backend.ObjectStorage;

namespace VirtioFs.ImageTool.Registry;

/// <summary>
/// <c>vfs-image push BOOTSTRAP --blob-dir DIR --backend-type s3|oss --backend-config FILE</c>: uploads an image's data
/// blobs to a bucket, each as the object <c>object_prefix</c> + blob id, as nydus-image and nydusify
/// (<c>--backend-type</c>) store them for nydusd's s3/oss backends; the bootstrap stays where it is, to be mounted with a
/// config whose backend is the same bucket. The config file is the backend's <c>config</c> object (or a whole nydusd
/// config, whose <c>device.backend</c> is used). Objects already there with the right size are skipped; blobs over the
/// multipart threshold go in parts.
/// </summary>
public static partial class RegistryCommands
{
    private const long DefaultMultipartThreshold = 64L << 20;
    private const long DefaultPartSize = 16L << 20;

    private static int PushToObjectStorage(string bootstrap, string blobDir, string type, string configFile, long partSize, long threshold,
        bool json, TextWriter o, bool terminal)
    {
        var options = ReadBackendConfig(type, configFile);
        var log = json ? TextWriter.Null : o;
        var results = UploadBlobs(bootstrap, blobDir, options, partSize, threshold, log, terminal);
        string where = Where(type, options);
        if (json)
        {
            WriteJson(o, w =>
            {
                w.WriteString("backend", where);
                WriteObjectStorageBlobs(w, results);
            });
        }
        else o.WriteLine($"pushed {results.Count} blobs of {bootstrap} to {where} ({results.Count(r => r.Outcome != "already present")} uploaded)");
        return 0;
    }

    private static string Where(string type, ObjectStorageOptions options) => $"{type}://{options.Bucket}/{options.ObjectPrefix}";

    private static void WriteObjectStorageBlobs(System.Text.Json.Utf8JsonWriter w, IReadOnlyList<PushedBlob> results)
    {
        w.WriteStartArray("blobs");
        foreach (var r in results)
        {
            w.WriteStartObject();
            w.WriteString("id", r.Digest);
            w.WriteNumber("size", r.Size);
            w.WriteString("outcome", r.Outcome);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNumber("uploaded", results.Count(r => r.Outcome != "already present"));
    }

    /// <summary>The backend options from <paramref name="configFile"/>: the backend's <c>config</c> object, or a whole
    /// nydusd config whose <c>device.backend</c> must be of <paramref name="type"/>. Shared by push and convert.</summary>
    internal static ObjectStorageOptions ReadBackendConfig(string type, string configFile)
    {
        if (type is not ("s3" or "oss")) throw new Program.UsageException($"--backend-type takes s3 or oss, not '{type}'");
        ObjectStorageOptions options;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(configFile));
            var root = doc.RootElement;
            // A whole nydusd config works too: take its device.backend.config.
            if (root.ValueKind == System.Text.Json.JsonValueKind.Object && root.TryGetProperty("device", out var dev)
                && dev.TryGetProperty("backend", out var be) && be.TryGetProperty("config", out var bc))
            {
                if (be.TryGetProperty("type", out var t) && t.GetString() != type)
                    throw new Program.UsageException($"{configFile} configures a '{t.GetString()}' backend, not {type}");
                root = bc;
            }
            options = ObjectStorageBackendConfig.Parse(type, root);
        }
        catch (Exception e) when (e is FormatException or System.Text.Json.JsonException)
        {
            throw new InvalidDataException($"backend config {configFile}: {e.Message}");
        }
        return options;
    }

    /// <summary>Uploads every data blob <paramref name="bootstrap"/> references (from <paramref name="blobDir"/>) as the
    /// object <c>object_prefix</c> + blob id; skips those already there with the right size. Shared by push and convert.</summary>
    internal static List<PushedBlob> UploadBlobs(string bootstrap, string blobDir, ObjectStorageOptions options, long partSize, long threshold,
        TextWriter log, bool terminal)
    {
        var blobs = new List<(string Id, string Path, long Size)>();
        using (var img = RafsImage.Open(bootstrap))
        {
            foreach (var b in img.Blobs)
            {
                if (!ObjectStorageBackend.IsValidBlobId(b.BlobId)) throw new InvalidDataException($"blob id '{b.BlobId}' cannot name an object");
                var path = Path.Combine(blobDir, b.BlobId);
                if (!File.Exists(path)) throw new IOException($"blob {b.BlobId} is not in {blobDir}");
                blobs.Add((b.BlobId, path, new FileInfo(path).Length));
            }
        }
        var results = new List<PushedBlob>();
        using (var client = new ObjectStorageClient(options))
        {
            foreach (var (id, path, size) in blobs)
            {
                var progress = new TransferProgress(log, "blob " + id[..Math.Min(12, id.Length)], size, terminal);
                ObjectStorageClient.UploadOutcome outcome;
                try
                {
                    outcome = client.UploadAsync(id, size, () => File.OpenRead(path), threshold, partSize, progress).GetAwaiter().GetResult();
                }
                catch (ObjectStorageException e) { throw new IOException(e.Message, e); }
                string said = outcome switch
                {
                    ObjectStorageClient.UploadOutcome.AlreadyPresent => "already present",
                    ObjectStorageClient.UploadOutcome.UploadedInParts => "uploaded in parts",
                    _ => "uploaded",
                };
                progress.Done(said);
                results.Add(new PushedBlob("blob", id, size, said));
            }
        }
        return results;
    }
}
