using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Oci;

/// <summary>Why an image reference cannot be served: a bad reference, a registry that refuses it, an image that is not
/// nydus, or an outage with nothing cached. The message names the reference and the cause.</summary>
public sealed class ImageResolveException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A reference resolved to a local bootstrap file.</summary>
/// <param name="Reference">What was asked for.</param>
/// <param name="ManifestDigest">The digest of the platform manifest the bootstrap came from.</param>
/// <param name="BootstrapPath">The extracted <c>image.boot</c> in the cache directory.</param>
/// <param name="FromCache">True when the registry could not be asked and the bootstrap of the last resolution was used.</param>
/// <param name="OfflineReason">Why the registry could not be asked (only with <paramref name="FromCache"/>).</param>
public sealed record ResolvedNydusImage(OciReference Reference, string ManifestDigest, string BootstrapPath, bool FromCache, string? OfflineReason = null);

/// <summary>
/// Turns an image reference into a bootstrap file a daemon can serve, as nydus-snapshotter does before it starts
/// nydusd: GET the manifest (an image index is narrowed to one platform, preferring the entry marked
/// <c>nydus.remoteimage.v1</c>), find the layer annotated <c>containerd.io/snapshot/nydus-bootstrap</c>, download it with
/// its digest checked and its size capped, and extract <c>image/image.boot</c> into
/// <c>CACHE/images/&lt;manifest digest&gt;.boot</c> (temp file + rename, so a crash never leaves half a bootstrap
/// under the final name). Data blobs are not touched: they are read lazily later.
/// <para>Each successful resolution is recorded as <c>CACHE/images/&lt;key&gt;.ref</c> (key = sha256 of reference and
/// platform, content = manifest digest), so when the registry is unreachable at the next start (connection refused,
/// timeouts, 5xx: the client's transient errors) the same reference is served from the bootstrap it last resolved to.
/// A definite answer from the registry (404, 401, a non-nydus image) is never papered over with the cache.</para>
/// </summary>
public static class NydusImageResolver
{
    /// <summary>Subdirectory of the cache directory holding bootstraps and reference records (chunk files live at the top).</summary>
    public const string ImagesDirectory = "images";

    /// <summary>Largest bootstrap layer (gzip'd tar) downloaded; the extracted bootstrap is capped by <see cref="NydusImage.MaxBootstrapBytes"/>.</summary>
    public const long MaxBootstrapLayerBytes = NydusImage.MaxBootstrapBytes;

    private const int MaxRecordBytes = 4096;

    /// <summary>
    /// Resolves <paramref name="reference"/> for <paramref name="platform"/> through a client built from
    /// <paramref name="registry"/>. <paramref name="validate"/> is called on the extracted bootstrap before it is
    /// installed (throw <see cref="InvalidDataException"/> or <see cref="IOException"/> to refuse it).
    /// Throws <see cref="ImageResolveException"/>.
    /// </summary>
    public static async Task<ResolvedNydusImage> ResolveAsync(OciReference reference, OciPlatform platform, RegistryOptions registry, string cacheDir,
        Action<string>? validate = null, ILogger? logger = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(platform);
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentException.ThrowIfNullOrEmpty(cacheDir);
        string images = Path.Combine(Path.GetFullPath(cacheDir), ImagesDirectory);
        try
        {
            Directory.CreateDirectory(images);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageResolveException($"cannot create {images}: {e.Message}", e);
        }
        string record = Path.Combine(images, RecordKey(reference, platform) + ".ref");

        RegistryClient client;
        try
        {
            client = new RegistryClient(registry, logger);
        }
        catch (Exception e) when (e is ArgumentException or IOException or CryptographicException)
        {
            throw new ImageResolveException($"{reference}: bad registry settings: {e.Message}", e);
        }
        using (client)
        {
            string manifestDigest;
            OciDescriptor bootLayer;
            try
            {
                (manifestDigest, bootLayer) = await FindBootstrapLayerAsync(client, reference, platform, ct).ConfigureAwait(false);
            }
            catch (RegistryException e) when (e.Transient || e.StatusCode is >= 500 or 429)
            {
                // Unreachable or failing registry: start from what the last resolution installed, if anything.
                if (ReadRecord(record) is { } cached && BootstrapPath(images, cached) is { } path && File.Exists(path))
                {
                    return new ResolvedNydusImage(reference, cached, path, FromCache: true, e.Message);
                }
                throw new ImageResolveException($"{reference}: registry unreachable ({e.Message}) and {cacheDir} holds no bootstrap resolved for it earlier", e);
            }
            catch (RegistryException e)
            {
                string why = e.StatusCode switch
                {
                    404 => "not found in the registry",
                    // No credentials at all is a different fix for the user (docker login) than wrong ones.
                    401 or 403 when registry.Credentials is null && registry.BearerToken is null =>
                        "the registry requires credentials and none were given (docker config.json, or auth in the config)",
                    401 or 403 => "the registry refused the credentials",
                    _ => e.Message,
                };
                throw new ImageResolveException($"{reference}: {why} ({e.Message})", e);
            }

            string final = BootstrapPath(images, manifestDigest)!;
            if (!File.Exists(final))
            {
                await InstallAsync(client, reference, bootLayer, images, final, validate, ct).ConfigureAwait(false);
            }
            WriteRecord(record, manifestDigest);
            Prune(images, PruneAge);
            return new ResolvedNydusImage(reference, manifestDigest, final, FromCache: false);
        }
    }

    /// <summary>The manifest digest and bootstrap layer of a reference. Throws <see cref="RegistryException"/> for
    /// registry failures, <see cref="ImageResolveException"/> for a registry answer that is not a nydus image.</summary>
    private static async Task<(string Digest, OciDescriptor Layer)> FindBootstrapLayerAsync(RegistryClient client, OciReference reference,
        OciPlatform platform, CancellationToken ct)
    {
        var fetched = await client.GetManifestAsync(reference.Reference, ct).ConfigureAwait(false);
        // GetManifestAsync already takes the type from the body when the registry's header is missing or generic.
        string mediaType = fetched.MediaType;
        if (OciJson.IsIndex(mediaType))
        {
            OciIndex index;
            try
            {
                index = OciJson.ParseIndex(fetched.Body);
            }
            catch (InvalidDataException e)
            {
                throw new ImageResolveException($"{reference}: bad image index: {e.Message}", e);
            }
            var pick = OciJson.SelectPlatform(index, platform)
                ?? throw new ImageResolveException($"{reference} has no manifest for platform {platform} (it lists {Platforms(index)})");
            if (!OciDigest.IsValid(pick.Digest)) throw new ImageResolveException($"{reference}: index entry has a bad digest '{pick.Digest}'");
            fetched = await client.GetManifestAsync(pick.Digest, ct).ConfigureAwait(false);
            mediaType = fetched.MediaType;
            if (OciJson.IsIndex(mediaType)) throw new ImageResolveException($"{reference}: the index for {platform} points at another index");
        }
        if (!OciJson.IsManifest(mediaType)) throw new ImageResolveException($"{reference}: unexpected media type {mediaType}");
        OciManifest manifest;
        try
        {
            manifest = OciJson.ParseManifest(fetched.Body);
        }
        catch (InvalidDataException e)
        {
            throw new ImageResolveException($"{reference}: bad image manifest: {e.Message}", e);
        }
        var layer = NydusImage.FindBootstrap(manifest)
            ?? throw new ImageResolveException($"{reference} is not a nydus image: no layer is annotated {OciMediaTypes.AnnotationNydusBootstrap} (convert it with vfs-image convert)");
        if (!OciDigest.IsValid(layer.Digest)) throw new ImageResolveException($"{reference}: bootstrap layer has a bad digest '{layer.Digest}'");
        if (layer.Size is <= 0 or > MaxBootstrapLayerBytes)
            throw new ImageResolveException($"{reference}: bootstrap layer size {layer.Size} is not in 1..{MaxBootstrapLayerBytes}");
        return (fetched.Digest, layer);
    }

    private static async Task InstallAsync(RegistryClient client, OciReference reference, OciDescriptor layer, string images, string final,
        Action<string>? validate, CancellationToken ct)
    {
        string unique = $"{Environment.ProcessId}.{Guid.NewGuid():N}";
        string tmpLayer = Path.Combine(images, $".layer.{unique}");
        string tmpBoot = Path.Combine(images, $".boot.{unique}");
        try
        {
            using (var file = new FileStream(tmpLayer, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.DeleteOnClose))
            {
                // The descriptor's size bounds what is written: a registry streaming more is cut off, not stored.
                using var capped = new CappedStream(file, layer.Size, layer.Digest, leaveOpen: true);
                try
                {
                    await client.DownloadBlobAsync(layer.Digest, capped, ct: ct).ConfigureAwait(false);
                }
                catch (RegistryException e)
                {
                    throw new ImageResolveException($"{reference}: cannot download bootstrap layer {layer.Digest}: {e.Message}", e);
                }
                catch (InvalidDataException e) when (capped.Exceeded)
                {
                    throw new ImageResolveException($"{reference}: bootstrap layer {layer.Digest} is larger than its manifest says ({layer.Size} bytes)", e);
                }
                if (file.Length != layer.Size)
                    throw new ImageResolveException($"{reference}: bootstrap layer {layer.Digest} has {file.Length} bytes, the manifest says {layer.Size}");
                file.Position = 0;
                using var boot = new FileStream(tmpBoot, FileMode.CreateNew, FileAccess.Write);
                try
                {
                    NydusImage.ExtractBootstrap(file, boot);
                }
                catch (InvalidDataException e)
                {
                    throw new ImageResolveException($"{reference}: bad bootstrap layer: {e.Message}", e);
                }
                boot.Flush(flushToDisk: true);
            }
            try
            {
                validate?.Invoke(tmpBoot);
            }
            catch (Exception e) when (e is InvalidDataException or IOException or FormatException)
            {
                throw new ImageResolveException($"{reference}: the bootstrap layer does not hold a usable bootstrap: {e.Message}", e);
            }
            File.Move(tmpBoot, final, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageResolveException($"{reference}: cannot store the bootstrap in {images}: {e.Message}", e);
        }
        finally
        {
            TryDelete(tmpBoot);
            TryDelete(tmpLayer);
        }
    }

    /// <summary>How old an unreferenced bootstrap or a leftover temp file must be before <see cref="Prune"/> removes it:
    /// long enough that a resolution in another daemon sharing the directory has written its record.</summary>
    public static readonly TimeSpan PruneAge = TimeSpan.FromHours(1);

    /// <summary>Most directory entries one prune looks at, so a directory filled by something else costs a bounded scan.</summary>
    private const int MaxPruneEntries = 10_000;

    /// <summary>
    /// Removes from <paramref name="imagesDir"/> the bootstraps no reference record points at any more (a tag that moved
    /// to a new image leaves its old bootstrap behind) and the temp files of interrupted resolutions, once they are
    /// older than <paramref name="minAge"/>. A daemon still serving a removed bootstrap keeps its open mapping.
    /// Returns how many files were removed; errors only make it remove less.
    /// </summary>
    public static int Prune(string imagesDir, TimeSpan minAge)
    {
        List<FileInfo> files;
        try
        {
            files = new DirectoryInfo(imagesDir).EnumerateFiles().Take(MaxPruneEntries).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
        var live = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in files)
            if (f.Name.EndsWith(".ref", StringComparison.Ordinal) && ReadRecord(f.FullName) is { } digest)
                live.Add(digest[7..] + ".boot");
        DateTime cutoff = DateTime.UtcNow - minAge;
        int removed = 0;
        foreach (var f in files)
        {
            bool temp = f.Name.StartsWith(".layer.", StringComparison.Ordinal) || f.Name.StartsWith(".boot.", StringComparison.Ordinal)
                || f.Name.EndsWith(".tmp", StringComparison.Ordinal);
            bool orphan = f.Name.EndsWith(".boot", StringComparison.Ordinal) && !f.Name.StartsWith('.') && !live.Contains(f.Name);
            if ((temp || orphan) && f.LastWriteTimeUtc < cutoff && TryDelete(f.FullName)) removed++;
        }
        return removed;
    }

    /// <summary>The cached bootstrap of <paramref name="manifestDigest"/>, or null for a malformed digest.</summary>
    public static string? BootstrapPath(string imagesDir, string manifestDigest) =>
        OciDigest.IsValid(manifestDigest) ? Path.Combine(imagesDir, manifestDigest[7..] + ".boot") : null;

    /// <summary>File name stem of a reference's record: references contain '/' and ':', so they are hashed.</summary>
    public static string RecordKey(OciReference reference, OciPlatform platform) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(reference + "\n" + platform)));

    /// <summary>The manifest digest a reference last resolved to, or null (missing, unreadable or malformed record).</summary>
    public static string? ReadRecord(string path)
    {
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists || info.Length > MaxRecordBytes) return null;
            string digest = File.ReadAllText(path).Trim();
            return OciDigest.IsValid(digest) ? digest : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static void WriteRecord(string path, string digest)
    {
        string tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            File.WriteAllText(tmp, digest + "\n");
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Serving does not need the record; only a later start during an outage does.
            TryDelete(tmp);
        }
    }

    private static string Platforms(OciIndex index)
    {
        var list = index.Manifests.Select(m => m.Platform?.ToString()).Where(p => p is not null).Distinct().Take(8).ToList();
        return list.Count == 0 ? "no platforms" : string.Join(", ", list);
    }

    private static bool TryDelete(string path)
    {
        try
        {
            File.Delete(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
