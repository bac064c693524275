using VirtioFs.Oci;

namespace VirtioFs.ImageTool.Registry;

/// <summary>
/// <c>convert --platform all</c> or <c>--platform A,B</c>: several platforms of a source index are converted, each to
/// its own nydus manifest, and the result is one index that keeps every entry of the source index (the OCI manifests,
/// other platforms, attestations) and adds the nydus manifests, marked with os.features nydus.remoteimage.v1. That is
/// nydusify's <c>--merge-platform</c> ("Generate an OCI image index with both OCI and Nydus manifests for the image",
/// contrib/nydusify/cmd/nydusify.go; nydus-snapshotter pkg/converter/types.go <c>MergeManifest</c>: "the resulting
/// nydus manifest will be merged with the original OCI one into a single index"): OCI clients keep pulling the
/// original entries, which come first, and nydus-aware ones (vfsd, the snapshotter) pick the marked entry.
/// </summary>
public static partial class RegistryCommands
{
    /// <summary>What <c>--platform</c> asks for: one platform (the nydus-only index as before) or several (merged).</summary>
    internal sealed record PlatformRequest(IReadOnlyList<OciPlatform> Listed, bool All)
    {
        public bool Merge => All || Listed.Count > 1;
    }

    internal static PlatformRequest ParsePlatforms(string? arg)
    {
        if (arg is null) return new PlatformRequest([OciPlatform.Parse("linux/amd64")], false);
        if (arg == "all") return new PlatformRequest([], true);
        var list = new List<OciPlatform>();
        foreach (var part in arg.Split(','))
        {
            OciPlatform p;
            try { p = OciPlatform.Parse(part.Trim()); }
            catch (FormatException e) { throw new Program.UsageException(e.Message); }
            if (list.Any(x => x.ToString() == p.ToString())) throw new Program.UsageException($"--platform lists {p} twice");
            list.Add(p);
        }
        return new PlatformRequest(list, false);
    }

    /// <summary>The source's top index (null for a single manifest) and the platforms to convert.</summary>
    private static (OciIndex? Index, IReadOnlyList<OciPlatform> Platforms) PlanPlatforms(OciImageSource source, PlatformRequest request)
    {
        var (mediaType, body, _) = Run(source.ReadRootDocumentAsync());
        var index = OciJson.IsIndex(mediaType) ? OciJson.ParseIndex(body) : null;
        if (!request.All)
        {
            // Each listed platform must be there before any layer is fetched (ResolveAsync gives the full message).
            foreach (var p in request.Listed)
                if (index is null || !index.Manifests.Any(m => m.Platform is { } q && q.Os == p.Os && q.Architecture == p.Architecture && (p.Variant is null || q.Variant == p.Variant)
                    && q.OsFeatures?.Contains(OciMediaTypes.NydusRemoteImageFeature) != true))
                    Run(source.ResolveAsync(p));
            return (index, request.Listed);
        }
        if (index is null) throw new InvalidDataException($"{source.Name} is a single image manifest, not an index: --platform all has nothing to merge (leave --platform out)");
        // Every runnable image of the index: a platform that is not "unknown" (buildx attestations use unknown/unknown)
        // and not already a nydus manifest.
        var platforms = index.Manifests
            .Where(m => OciJson.IsManifest(m.MediaType) && m.Platform is { Os: not "unknown" } p && p.OsFeatures?.Contains(OciMediaTypes.NydusRemoteImageFeature) != true)
            .Select(m => m.Platform! with { OsFeatures = null })
            .DistinctBy(p => p.ToString())
            .ToList();
        if (platforms.Count == 0) throw new InvalidDataException($"{source.Name}: the index has no image with a platform to convert");
        return (index, platforms);
    }

    /// <summary>
    /// Writes the merged index to <paramref name="target"/>: the source index's entries, then the nydus manifests. The
    /// source entries must exist in the target repository for the registry to accept the index (distribution checks
    /// that an index's manifests are present), so unless source and target are the same repository each kept
    /// manifest is copied with its config and layers (mounted from the source repository on the same registry).
    /// </summary>
    private static string PushMergedIndex(RegistryClient client, OciReference target, OciImageSource source, OciReference? sourceRef, OciIndex sourceIndex,
        IReadOnlyList<OciDescriptor> nydus, string work, TextWriter log, bool terminal)
    {
        bool sameRepository = sourceRef is not null && sourceRef.Host == target.Host && sourceRef.Repository == target.Repository;
        string? mountFrom = sourceRef is not null && sourceRef.Host == target.Host && !sameRepository ? sourceRef.Repository : null;
        if (!sameRepository)
            foreach (var entry in sourceIndex.Manifests) CopyManifest(client, source, entry, mountFrom, work, log, terminal, depth: 0);
        // The source index's own annotations (e.g. org.opencontainers.image.*) stay with the merged index.
        var index = OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex, [.. sourceIndex.Manifests, .. nydus], sourceIndex.Annotations));
        return Run(client.PutManifestAsync(target.Reference, OciMediaTypes.ImageIndex, index));
    }

    private static void CopyManifest(RegistryClient client, OciImageSource source, OciDescriptor entry, string? mountFrom, string work, TextWriter log, bool terminal, int depth)
    {
        if (depth > 1) throw new InvalidDataException($"{source.Name}: indexes nested too deep to copy ({entry.Digest})");
        var body = Run(source.ReadManifestAsync(entry));
        if (OciJson.IsIndex(entry.MediaType))
        {
            foreach (var m in OciJson.ParseIndex(body).Manifests) CopyManifest(client, source, m, mountFrom, work, log, terminal, depth + 1);
        }
        else if (OciJson.IsManifest(entry.MediaType))
        {
            var m = OciJson.ParseManifest(body);
            foreach (var blob in m.Layers.Prepend(m.Config))
            {
                var progress = new TransferProgress(log, "copy " + blob.Digest[7..19], blob.Size, terminal);
                var outcome = Run(client.PushBlobAsync(blob.Digest, blob.Size, () => Run(source.OpenBlobAsync(blob, work)), mountFrom, 0, progress));
                progress.Done(Describe(outcome));
            }
        }
        else throw new InvalidDataException($"{source.Name}: index entry {entry.Digest} has media type '{entry.MediaType}', neither a manifest nor an index");
        Run(client.PutManifestAsync(entry.Digest, entry.MediaType, body));
    }
}
