using VirtioFs.Oci;

namespace VirtioFs.ImageTool.Registry;

/// <summary>
/// The <c>--chunk-dict</c> argument of create and convert: another image's bootstrap whose chunks a build references
/// instead of storing them again (the dedup itself is <see cref="Rafs.Builder.ImageBuilder"/>'s, through
/// <c>BuildOptions.ChunkDict</c>). Spelled as the nydus tools spell it:
/// <list type="bullet">
/// <item><c>PATH</c> or <c>bootstrap=PATH</c>: nydus-image (builder/src/core/chunk_dict.rs <c>parse_chunk_dict_arg</c>;
///   nydus-snapshotter pkg/converter/tool/builder.go passes <c>--chunk-dict bootstrap=PATH</c>);</item>
/// <item><c>bootstrap:local:PATH</c> and <c>bootstrap:registry:HOST/REPO:TAG</c>: nydusify
///   (contrib/nydusify/pkg/converter/chunk_dict.go <c>ParseChunkDictArgs</c>);</item>
/// <item>a bare <c>HOST/REPO:TAG</c> that is not an existing file (convert only), as vfsd takes a mount source.</item>
/// </list>
/// </summary>
internal sealed record ChunkDictArg(string? LocalBootstrap, OciReference? Reference)
{
    public static ChunkDictArg Parse(string arg)
    {
        if (arg.StartsWith("bootstrap:", StringComparison.Ordinal))
        {
            var parts = arg.Split(':', 3);
            if (parts.Length < 3 || parts[2].Length == 0) throw new Program.UsageException($"--chunk-dict {arg}: expected bootstrap:local:PATH or bootstrap:registry:REF");
            return parts[1] switch
            {
                "local" => new ChunkDictArg(parts[2], null),
                "registry" => new ChunkDictArg(null, RegistryCommands.Ref(parts[2])),
                _ => throw new Program.UsageException($"--chunk-dict {arg}: source '{parts[1]}' is neither local nor registry"),
            };
        }
        int eq = arg.IndexOf('=', StringComparison.Ordinal);
        if (eq >= 0)
        {
            if (arg[..eq] != "bootstrap") throw new Program.UsageException($"--chunk-dict {arg}: type '{arg[..eq]}' is not bootstrap");
            return new ChunkDictArg(arg[(eq + 1)..], null);
        }
        if (File.Exists(arg)) return new ChunkDictArg(arg, null);
        // Not a file: a reference when its first component names a registry (has '.' or ':', or is localhost).
        int slash = arg.IndexOf('/', StringComparison.Ordinal);
        if (slash > 0 && arg[..slash] is var host && (host.Contains('.', StringComparison.Ordinal) || host.Contains(':', StringComparison.Ordinal) || host == "localhost")
            && OciReference.TryParse(arg, out var r, out _))
            return new ChunkDictArg(null, r);
        return new ChunkDictArg(arg, null); // a missing file: the build says so when it opens it
    }

    /// <summary>create: a local bootstrap only (create has no registry options).</summary>
    public static string Local(string arg) => Parse(arg) is { LocalBootstrap: { } path } ? path
        : throw new Program.UsageException($"create --chunk-dict {arg}: a registry dictionary goes with convert; create takes PATH, bootstrap=PATH or bootstrap:local:PATH");
}

/// <summary>
/// A chunk dictionary ready for one convert: the bootstrap on local disk, and where the dictionary's blobs come from
/// when the converted image references them (they must be in the destination repository for the image to mount:
/// nydus-snapshotter pkg/converter/convert_unix.go appends the dict's blobs to the manifest's layers, "Affected by
/// chunk dict, the blob list referenced by final bootstrap are from different layers").
/// </summary>
internal sealed class ChunkDict : IDisposable
{
    private readonly ChunkDictArg _arg;
    private readonly RegistryCommands.Args _options;
    private readonly string _work;
    private readonly TextWriter _log;
    private readonly Dictionary<string, (string Bootstrap, Dictionary<string, long> Blobs)> _byPlatform = new(StringComparer.Ordinal);
    private RegistryClient? _client;

    public ChunkDict(ChunkDictArg arg, RegistryCommands.Args options, string work, TextWriter log)
    {
        _arg = arg;
        _options = options;
        _work = work;
        _log = log;
        if (arg.LocalBootstrap is { } p && !File.Exists(p)) throw new IOException($"--chunk-dict {p}: no such file");
    }

    public string Describe => _arg.Reference?.ToString() ?? _arg.LocalBootstrap!;

    /// <summary>The dictionary's bootstrap for <paramref name="platform"/> (a registry dictionary is fetched once per platform).</summary>
    public string Bootstrap(OciPlatform platform) => _arg.LocalBootstrap ?? ForPlatform(platform).Bootstrap;

    private (string Bootstrap, Dictionary<string, long> Blobs) ForPlatform(OciPlatform platform)
    {
        string key = platform.ToString();
        if (_byPlatform.TryGetValue(key, out var have)) return have;
        var reference = _arg.Reference!;
        _client ??= new RegistryClient(RegistryCommands.Options(_options, reference));
        string path = Path.Combine(_work, $"chunk-dict-{_byPlatform.Count}.boot");
        var (manifest, digest, _) = RegistryCommands.FetchBootstrap(_client, reference, platform, path);
        var blobs = NydusImage.FindBlobs(manifest).ToDictionary(b => b.Digest[7..], b => b.Size, StringComparer.Ordinal);
        _log.WriteLine($"chunk dict {reference} ({platform}) manifest {digest}: {blobs.Count} blobs");
        return _byPlatform[key] = (path, blobs);
    }

    /// <summary>
    /// Where the push finds dictionary blob <paramref name="id"/>: a registry dictionary's blob is mounted from its
    /// repository (same registry) or downloaded from it and sent on; a local dictionary's blob is read from the
    /// bootstrap's directory, else must already be in <paramref name="target"/>'s repository.
    /// </summary>
    public RegistryCommands.ExternalBlob? Blob(string id, OciPlatform platform, OciReference target, RegistryClient targetClient)
    {
        if (_arg.Reference is { } reference)
        {
            if (!ForPlatform(platform).Blobs.TryGetValue(id, out long size)) return null;
            string? mountFrom = reference.Host == target.Host && reference.Repository != target.Repository ? reference.Repository : null;
            string copy = Path.Combine(_work, "chunk-dict-" + id);
            return new RegistryCommands.ExternalBlob(size, () =>
            {
                if (!File.Exists(copy))
                {
                    using (var f = new FileStream(copy + ".partial", FileMode.Create, FileAccess.Write))
                        RegistryCommands.Run(_client!.DownloadBlobAsync("sha256:" + id, f, expectedSize: size));
                    File.Move(copy + ".partial", copy);
                }
                return File.OpenRead(copy);
            }, mountFrom);
        }
        string local = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(_arg.LocalBootstrap!))!, id);
        if (File.Exists(local)) return new RegistryCommands.ExternalBlob(new FileInfo(local).Length, () => File.OpenRead(local), null);
        if (RegistryCommands.Run(targetClient.GetBlobSizeAsync("sha256:" + id)) is { } present && present >= 0)
            return new RegistryCommands.ExternalBlob(present, () => throw new IOException($"chunk dict blob {id} vanished from {target.Repository}"), null);
        throw new IOException($"chunk dict blob {id} is neither beside {_arg.LocalBootstrap} nor in {target.Host}/{target.Repository}");
    }

    public void Dispose() => _client?.Dispose();
}
