using System.Text.Json;
using VirtioFs.Oci;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.ImageTool.Registry;

/// <summary>
/// <c>vfs-image push</c> and <c>pull</c>: move a built RAFS image (bootstrap + blobs) to and from an OCI registry in
/// the layout nydusify writes (see <see cref="NydusImage"/>): blobs as nydus blob layers, the bootstrap as a tar+gzip
/// layer, a manifest, and an index whose platform carries os.features nydus.remoteimage.v1.
/// </summary>
public static partial class RegistryCommands
{
    public const string PushUsage = "push BOOTSTRAP --blob-dir DIR --target HOST/REPO:TAG [--platform OS/ARCH] [--chunk-size N] [--mount-from REPO] [REGISTRY OPTIONS] [--json]\n"
        + "       push BOOTSTRAP --blob-dir DIR --backend-type s3|oss --backend-config FILE [--chunk-size PART] [--multipart-threshold N] [--json]";
    public const string PullUsage = "pull HOST/REPO:TAG --bootstrap FILE [--blob-dir DIR] [--platform OS/ARCH] [REGISTRY OPTIONS] [--json]";
    public const string RegistryOptionsUsage = "registry options: --plain-http --skip-verify --ca-file PEM --docker-config FILE --timeout SECONDS --retry-limit N";

    private static readonly string[] CommonValued = ["--platform", "--ca-file", "--docker-config", "--timeout", "--retry-limit"];
    private static readonly string[] CommonFlags = ["--plain-http", "--skip-verify", "--json"];

    public static int Push(IEnumerable<string> rest, TextWriter o, bool terminal = false)
    {
        var a = Parse(rest, [.. CommonValued, "--blob-dir", "--target", "--chunk-size", "--mount-from", "--backend-type", "--backend-config", "--multipart-threshold"], CommonFlags);
        if (a.Positional.Count != 1) throw new Program.UsageException("usage: vfs-image " + PushUsage);
        string bootstrap = a.Positional[0];
        string blobDir = a.Get("--blob-dir") ?? throw new Program.UsageException("push needs --blob-dir DIR");
        if (a.Get("--backend-type") is { } backendType)
        {
            // Blobs to object storage (nydusify --backend-type); the registry options do not apply, so they are refused.
            foreach (var registryOnly in new[] { "--target", "--mount-from", "--platform", "--ca-file", "--docker-config", "--timeout", "--retry-limit" })
                if (a.Get(registryOnly) is not null) throw new Program.UsageException($"push --backend-type: {registryOnly} is for registry pushes (put timeouts and TLS in the backend config)");
            if (a.Flags.Contains("--plain-http") || a.Flags.Contains("--skip-verify"))
                throw new Program.UsageException("push --backend-type: scheme and skip_verify go in the backend config");
            string configFile = a.Get("--backend-config") ?? throw new Program.UsageException("push --backend-type needs --backend-config FILE");
            long part = a.Get("--chunk-size") is { } ps ? ParseSize(ps) : DefaultPartSize;
            long threshold = a.Get("--multipart-threshold") is { } mt ? ParseSize(mt) : DefaultMultipartThreshold;
            return PushToObjectStorage(bootstrap, blobDir, backendType, configFile, part, threshold, a.Flags.Contains("--json"), o, terminal);
        }
        if (a.Get("--backend-config") is not null || a.Get("--multipart-threshold") is not null)
            throw new Program.UsageException("--backend-config and --multipart-threshold go with --backend-type s3|oss");
        var target = Ref(a.Get("--target") ?? throw new Program.UsageException("push needs --target HOST/REPO:TAG"));
        if (target.Digest is not null) throw new Program.UsageException("push --target takes a tag, not a digest");
        var platform = Platform(a);
        long chunk = a.Get("--chunk-size") is { } cs ? ParseSize(cs) : 0;
        string? mountFrom = a.Get("--mount-from");
        if (mountFrom is not null && !OciReference.IsValidRepository(mountFrom)) throw new Program.UsageException($"bad --mount-from repository '{mountFrom}'");
        bool json = a.Flags.Contains("--json");
        var log = json ? TextWriter.Null : o;

        using var client = new RegistryClient(Options(a, target));
        var report = PushImage(client, target, bootstrap, blobDir, platform, diffIds => OciJson.WriteConfig(platform, diffIds), mountFrom, chunk, log, terminal);
        if (json) WriteJson(o, w => WritePushReport(w, target, report));
        else o.WriteLine($"pushed {target} ({platform}) index {report.IndexDigest} manifest {report.ManifestDigest}");
        return 0;
    }

    /// <summary>One blob pushed: its digest, size and what the registry needed ("uploaded", "already present", "mounted").</summary>
    internal sealed record PushedBlob(string Kind, string Digest, long Size, string Outcome);

    /// <summary>What <see cref="PushImage"/> did.</summary>
    internal sealed record PushReport(string IndexDigest, string ManifestDigest, IReadOnlyList<PushedBlob> Layers, PushedBlob Config)
    {
        public long ManifestSize { get; init; }

        /// <summary>The index entry for this manifest: marked nydus for <paramref name="platform"/>.</summary>
        public OciDescriptor Descriptor(OciPlatform platform) =>
            new(OciMediaTypes.ImageManifest, ManifestDigest, ManifestSize, Platform: NydusImage.NydusPlatform(platform));

        /// <summary>Blobs whose bytes were actually sent (layers and config).</summary>
        public int Uploaded => Layers.Count(l => l.Outcome == "uploaded") + (Config.Outcome == "uploaded" ? 1 : 0);
    }

    /// <summary>
    /// Pushes a built RAFS image (bootstrap + blobs in <paramref name="blobDir"/>) to <paramref name="target"/> in the
    /// nydusify layout: data blobs, then the bootstrap layer, then the config <paramref name="makeConfig"/> builds from
    /// the layers' diff ids, the manifest, and an index whose entry is marked nydus for <paramref name="platform"/>.
    /// Shared by push and convert. Blobs the registry has are not sent again (HEAD first, then a cross-repository
    /// mount from <paramref name="mountFrom"/> when given); progress goes to <paramref name="log"/>.
    /// </summary>
    internal static PushReport PushImage(RegistryClient client, OciReference target, string bootstrap, string blobDir, OciPlatform platform,
        Func<IReadOnlyList<string>, byte[]> makeConfig, string? mountFrom, long uploadChunk, TextWriter log, bool terminal, bool blobsInRegistry = true,
        Func<string, ExternalBlob?>? externalBlobs = null)
    {
        var pushed = PushManifest(client, bootstrap, blobDir, makeConfig, mountFrom, uploadChunk, log, terminal, blobsInRegistry, externalBlobs);
        var index = OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex, [pushed.Descriptor(platform)]));
        string indexDigest = Run(client.PutManifestAsync(target.Reference, OciMediaTypes.ImageIndex, index));
        return pushed with { IndexDigest = indexDigest };
    }

    /// <summary>
    /// A blob the image references that is not in the build's blob dir: a chunk dictionary's blob (convert
    /// --chunk-dict). The registry may have it already (HEAD), may mount it from <paramref name="MountFrom"/>, or is sent
    /// the bytes <paramref name="Open"/> gives (called only when neither worked).
    /// </summary>
    internal sealed record ExternalBlob(long Size, Func<Stream> Open, string? MountFrom);

    /// <summary>
    /// <see cref="PushImage"/> without the index: the blobs, bootstrap layer, config and manifest (by digest, untagged).
    /// The report's IndexDigest is empty; a multi-platform convert puts several of these into one index.
    /// </summary>
    internal static PushReport PushManifest(RegistryClient client, string bootstrap, string blobDir,
        Func<IReadOnlyList<string>, byte[]> makeConfig, string? mountFrom, long uploadChunk, TextWriter log, bool terminal, bool blobsInRegistry = true,
        Func<string, ExternalBlob?>? externalBlobs = null)
    {
        // Everything the image references must be here before anything is sent.
        int fsVersion;
        var blobs = new List<(string Id, long Size, Func<Stream> Open, string? MountFrom)>();
        using (var img = RafsImage.Open(bootstrap))
        {
            fsVersion = (int)img.Version;
            foreach (var b in img.Blobs)
            {
                if (b.BlobId.Length != 64 || !OciDigest.IsLowerHex(b.BlobId)) throw new InvalidDataException($"blob id '{b.BlobId}' is not a sha256 hex digest");
                var path = Path.Combine(blobDir, b.BlobId);
                if (File.Exists(path)) blobs.Add((b.BlobId, new FileInfo(path).Length, () => File.OpenRead(path), mountFrom));
                else if (externalBlobs?.Invoke(b.BlobId) is { } ext) blobs.Add((b.BlobId, ext.Size, ext.Open, ext.MountFrom ?? mountFrom));
                else throw new IOException($"blob {b.BlobId} is not in {blobDir}");
            }
        }
        var layers = new List<OciDescriptor>();
        var diffIds = new List<string>();
        var results = new List<PushedBlob>();
        // Blobs in object storage (convert --backend-type): like nydusify (nydus-snapshotter pkg/converter/convert_unix.go,
        // "do not put nydus blob layer into manifest if blob storage backend is specified") the manifest and the config's
        // diff ids hold the bootstrap layer only; its nydus-blob-ids annotation still names the blobs.
        foreach (var (id, size, open, blobMountFrom) in blobsInRegistry ? blobs : [])
        {
            var progress = new TransferProgress(log, "blob " + id[..12], size, terminal);
            var outcome = Run(client.PushBlobAsync("sha256:" + id, size, open, blobMountFrom, uploadChunk, progress));
            progress.Done(Describe(outcome));
            layers.Add(NydusImage.BlobLayer(id, size));
            diffIds.Add("sha256:" + id); // a nydus blob is stored as is: its diff id is its digest
            results.Add(new PushedBlob("blob", "sha256:" + id, size, Describe(outcome)));
        }
        var boot = NydusImage.CreateBootstrapLayer(bootstrap);
        var bootOutcome = Run(client.PushBlobAsync(boot.Digest, boot.Compressed.Length, () => new MemoryStream(boot.Compressed, writable: false), mountFrom));
        log.WriteLine($"bootstrap {boot.Digest[7..19]}: {Describe(bootOutcome)} {TransferProgress.Size(boot.Compressed.Length)}");
        // nydusify also lists the image's blobs on the bootstrap layer (containerd.io/snapshot/nydus-blob-ids), which
        // nydus-snapshotter reads to find the blobs without opening the bootstrap.
        var bootDesc = NydusImage.BootstrapDescriptor(boot, fsVersion);
        var bootAnnotations = new Dictionary<string, string>(bootDesc.Annotations!, StringComparer.Ordinal)
        {
            [AnnotationNydusBlobIds] = BlobIdsJson(blobs.Select(b => b.Id)),
        };
        layers.Add(bootDesc with { Annotations = bootAnnotations });
        diffIds.Add(boot.DiffId);
        results.Add(new PushedBlob("bootstrap", boot.Digest, boot.Compressed.Length, Describe(bootOutcome)));

        var config = makeConfig(diffIds);
        string configDigest = OciDigest.Sha256(config);
        var configOutcome = Run(client.PushBlobAsync(configDigest, config.Length, () => new MemoryStream(config, writable: false), mountFrom));
        var manifest = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest,
            new OciDescriptor(OciMediaTypes.ImageConfig, configDigest, config.Length), layers));
        string manifestDigest = Run(client.PutManifestAsync(OciDigest.Sha256(manifest), OciMediaTypes.ImageManifest, manifest));
        return new PushReport("", manifestDigest, results, new PushedBlob("config", configDigest, config.Length, Describe(configOutcome))) { ManifestSize = manifest.Length };
    }

    /// <summary>Bootstrap layer annotation listing the image's data blobs as a JSON array of hex digests (nydusify).</summary>
    internal const string AnnotationNydusBlobIds = "containerd.io/snapshot/nydus-blob-ids";

    private static string BlobIdsJson(IEnumerable<string> ids)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartArray();
            foreach (var id in ids) w.WriteStringValue(id);
            w.WriteEndArray();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    internal static void WritePushReport(Utf8JsonWriter w, OciReference target, PushReport r)
    {
        w.WriteString("reference", target.ToString());
        w.WriteString("index", r.IndexDigest);
        w.WriteString("manifest", r.ManifestDigest);
        w.WriteStartArray("layers");
        foreach (var l in r.Layers)
        {
            w.WriteStartObject();
            w.WriteString("digest", l.Digest);
            w.WriteNumber("size", l.Size);
            w.WriteString("outcome", l.Outcome);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartObject("config");
        w.WriteString("digest", r.Config.Digest);
        w.WriteNumber("size", r.Config.Size);
        w.WriteString("outcome", r.Config.Outcome);
        w.WriteEndObject();
        w.WriteNumber("uploaded", r.Uploaded);
    }

    public static int Pull(IEnumerable<string> rest, TextWriter o, bool terminal = false)
    {
        var a = Parse(rest, [.. CommonValued, "--bootstrap", "--blob-dir"], CommonFlags);
        if (a.Positional.Count != 1) throw new Program.UsageException("usage: vfs-image " + PullUsage);
        var source = Ref(a.Positional[0]);
        string bootstrap = a.Get("--bootstrap") ?? throw new Program.UsageException("pull needs --bootstrap FILE");
        string? blobDir = a.Get("--blob-dir");
        var platform = Platform(a);
        bool json = a.Flags.Contains("--json");
        var log = json ? TextWriter.Null : o;
        using var client = new RegistryClient(Options(a, source));

        var (manifest, manifestDigest, bootLayer) = FetchBootstrap(client, source, platform, bootstrap);
        log.WriteLine($"bootstrap {bootLayer.Digest[7..19]} -> {bootstrap}");

        var blobs = NydusImage.FindBlobs(manifest).ToList();
        long blobBytes = 0;
        if (blobDir is not null)
        {
            Directory.CreateDirectory(blobDir);
            foreach (var b in blobs)
            {
                var path = Path.Combine(blobDir, b.Digest[7..]);
                if (File.Exists(path) && new FileInfo(path).Length == b.Size) { log.WriteLine($"blob {b.Digest[7..19]}: present"); continue; }
                var tmp = path + ".partial";
                var progress = new TransferProgress(log, "blob " + b.Digest[7..19], b.Size, terminal);
                using (var f = new FileStream(tmp, FileMode.Create, FileAccess.ReadWrite))
                    Run(client.DownloadBlobAsync(b.Digest, f, progress, expectedSize: b.Size));
                File.Move(tmp, path, overwrite: true);
                progress.Done("downloaded");
                blobBytes += b.Size;
            }
        }
        if (json)
        {
            WriteJson(o, w =>
            {
                w.WriteString("reference", source.ToString());
                w.WriteString("manifest", manifestDigest);
                w.WriteString("bootstrap", bootstrap);
                w.WriteStartArray("blobs");
                foreach (var b in blobs) w.WriteStringValue(b.Digest);
                w.WriteEndArray();
                w.WriteNumber("downloaded_bytes", blobBytes);
            });
        }
        else o.WriteLine($"pulled {source} manifest {manifestDigest}: bootstrap {bootstrap}, {blobs.Count} blobs" + (blobDir is null ? " (left in the registry)" : " in " + blobDir));
        return 0;
    }

    /// <summary>
    /// Resolves <paramref name="source"/> for <paramref name="platform"/> to a nydus manifest, downloads its bootstrap
    /// layer (digest and size checked) and installs the bootstrap at <paramref name="bootstrap"/> only once it opens as
    /// RAFS. Shared by pull and a registry chunk dictionary (convert --chunk-dict bootstrap:registry:REF).
    /// </summary>
    internal static (OciManifest Manifest, string ManifestDigest, OciDescriptor BootstrapLayer) FetchBootstrap(RegistryClient client, OciReference source, OciPlatform platform, string bootstrap)
    {
        var fetched = Run(client.GetManifestAsync(source.Reference));
        string manifestDigest = fetched.Digest;
        if (OciJson.IsIndex(fetched.MediaType))
        {
            var idx = OciJson.ParseIndex(fetched.Body);
            var pick = OciJson.SelectPlatform(idx, platform)
                ?? throw new InvalidDataException($"{source} has no manifest for {platform}");
            fetched = Run(client.GetManifestAsync(pick.Digest));
            manifestDigest = fetched.Digest;
        }
        if (!OciJson.IsManifest(fetched.MediaType)) throw new InvalidDataException($"{source}: unexpected media type {fetched.MediaType}");
        var manifest = OciJson.ParseManifest(fetched.Body);
        var bootLayer = NydusImage.FindBootstrap(manifest)
            ?? throw new InvalidDataException($"{source} is not a nydus image: no layer is annotated {OciMediaTypes.AnnotationNydusBootstrap}");
        if (bootLayer.Size is < 0 or > NydusImage.MaxBootstrapBytes)
            throw new InvalidDataException($"{source}: bootstrap layer of {bootLayer.Size} bytes (at most {NydusImage.MaxBootstrapBytes})");

        // Download to a temp file next to the target, then rename: a failed pull leaves no half-written bootstrap.
        var dir = Path.GetDirectoryName(Path.GetFullPath(bootstrap))!;
        Directory.CreateDirectory(dir);
        string tmpLayer = Path.Combine(dir, $".{Path.GetFileName(bootstrap)}.layer.{Environment.ProcessId}");
        string tmpBoot = Path.Combine(dir, $".{Path.GetFileName(bootstrap)}.tmp.{Environment.ProcessId}");
        try
        {
            using (var f = new FileStream(tmpLayer, FileMode.Create, FileAccess.ReadWrite))
            {
                Run(client.DownloadBlobAsync(bootLayer.Digest, f, expectedSize: bootLayer.Size));
                f.Position = 0;
                using var outf = File.Create(tmpBoot);
                NydusImage.ExtractBootstrap(f, outf);
            }
            using (RafsImage.Open(tmpBoot)) { } // refuse to install something that is not a RAFS bootstrap
            File.Move(tmpBoot, bootstrap, overwrite: true);
        }
        finally
        {
            File.Delete(tmpLayer);
            File.Delete(tmpBoot);
        }
        return (manifest, manifestDigest, bootLayer);
    }

    private static string Describe(RegistryClient.PushOutcome o) => o switch
    {
        RegistryClient.PushOutcome.AlreadyPresent => "already present",
        RegistryClient.PushOutcome.Mounted => "mounted",
        _ => "uploaded",
    };

    /// <summary>Waits for a registry task; registry failures become IOException so Program reports them with exit 1.</summary>
    internal static T Run<T>(Task<T> t)
    {
        try { return t.GetAwaiter().GetResult(); }
        catch (RegistryException e) { throw new IOException(e.Message, e); }
    }

    internal static void Run(Task t)
    {
        try { t.GetAwaiter().GetResult(); }
        catch (RegistryException e) { throw new IOException(e.Message, e); }
    }

    internal static OciReference Ref(string s) =>
        OciReference.TryParse(s, out var r, out var err) ? r : throw new Program.UsageException($"bad image reference '{s}': {err}");

    internal static OciPlatform Platform(Args a)
    {
        try { return OciPlatform.Parse(a.Get("--platform") ?? "linux/amd64"); }
        catch (FormatException e) { throw new Program.UsageException(e.Message); }
    }

    internal static RegistryOptions Options(Args a, OciReference r)
    {
        RegistryCredentials? creds;
        try { creds = DockerConfig.Find(r.Host, a.Get("--docker-config")); }
        catch (Exception e) when (e is FormatException or JsonException) { throw new InvalidDataException($"docker config: {e.Message}"); }
        var o = new RegistryOptions
        {
            Host = r.Host,
            Repository = r.Repository,
            Scheme = a.Flags.Contains("--plain-http") ? "http" : null,
            Credentials = creds,
            Transport = new VirtioFs.Oci.Http.HttpTransportOptions
            {
                SkipVerify = a.Flags.Contains("--skip-verify") || a.Flags.Contains("--insecure"),
                CaFile = a.Get("--ca-file"),
                Timeout = a.Get("--timeout") is { } t ? (double.TryParse(t, System.Globalization.CultureInfo.InvariantCulture, out double s) && s > 0 && s <= 3600 ? TimeSpan.FromSeconds(s) : throw new Program.UsageException("--timeout takes seconds (0, 3600]")) : TimeSpan.FromSeconds(30),
                RetryLimit = a.Get("--retry-limit") is { } rl ? (int.TryParse(rl, out int n) && n is >= 0 and <= 100 ? n : throw new Program.UsageException("--retry-limit takes 0..100")) : 3,
            },
        };
        try { o.Validate(); }
        catch (ArgumentException e) { throw new Program.UsageException(e.Message); }
        return o;
    }

    private static long ParseSize(string s)
    {
        long mul = 1;
        if (s.EndsWith('K') || s.EndsWith('k')) { mul = 1024; s = s[..^1]; }
        else if (s.EndsWith('M') || s.EndsWith('m')) { mul = 1 << 20; s = s[..^1]; }
        if (!long.TryParse(s, out long v) || v <= 0 || v > (1L << 30) / mul) throw new Program.UsageException("sizes take a number up to 1G (e.g. 4M)");
        return v * mul;
    }

    internal static void WriteJson(TextWriter o, Action<Utf8JsonWriter> body)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        o.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
    }

    /// <summary>A subcommand's arguments: positionals, <c>--name value</c> / <c>--name=value</c> options and flags.</summary>
    internal sealed class Args
    {
        public readonly List<string> Positional = new();
        public readonly Dictionary<string, string> Options = new(StringComparer.Ordinal);
        public readonly HashSet<string> Flags = new(StringComparer.Ordinal);
        public string? Get(string n) => Options.GetValueOrDefault(n);
    }

    internal static Args Parse(IEnumerable<string> raw, string[] valued, string[] flags)
    {
        var a = new Args();
        using var it = raw.GetEnumerator();
        while (it.MoveNext())
        {
            var s = it.Current;
            if (!s.StartsWith("--", StringComparison.Ordinal)) { a.Positional.Add(s); continue; }
            string name = s;
            string? val = null;
            int eq = s.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0) { name = s[..eq]; val = s[(eq + 1)..]; }
            if (valued.Contains(name))
            {
                if (val is null)
                {
                    if (!it.MoveNext()) throw new Program.UsageException($"option {name} needs a value");
                    val = it.Current;
                }
                a.Options[name] = val;
            }
            else if (flags.Contains(name) && val is null) a.Flags.Add(name);
            else throw new Program.UsageException($"unknown option {name}");
        }
        return a;
    }
}
