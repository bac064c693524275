using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Rafs;
using VirtioFs.RafsFs;
using VirtioFs.Storage.Cache;

// Image serving in the daemon: the command line (or a nydusd JSON config) becomes RafsMountOptions, RafsMount opens
// and checks the image, and the same FUSE server that fronts a passthrough fronts it, over virtio-fs or /dev/fuse.
namespace VirtioFs.Daemon.Images;

/// <summary>Turns the parsed command line into <see cref="RafsMountOptions"/>: reads the JSON config, the prefetch
/// list and the trust key. Flags given on the command line win over the config file.</summary>
internal static class ImageOptions
{
    /// <summary>Most paths a --prefetch-files list may name (the list is read whole).</summary>
    private const int MaxPrefetchList = 1 << 20;

    /// <summary>Throws <see cref="RafsMountException"/> naming the file or value that is wrong. With <c>--image</c> the
    /// reference is resolved here (registry I/O), so the bootstrap path is known before anything is served.</summary>
    public static RafsMountOptions From(DaemonOptions o, ILogger? logger = null)
    {
        var m = new RafsMountOptions { Bootstrap = o.Bootstrap ?? (o.Image is not null ? "" : throw new RafsMountException("no --bootstrap")) };
        string? json = null;
        if (o.ConfigFile is { } config)
        {
            try
            {
                if (new FileInfo(config).Length > NydusConfig.MaxSize) throw new RafsMountException($"config {config} is larger than {NydusConfig.MaxSize} bytes");
                json = File.ReadAllText(config);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new RafsMountException($"cannot read config {config}: {e.Message}", e);
            }
        }
        try
        {
            if (o.Image is { } image) NydusConfig.Apply(RegistryImage.RegistryConfig(json, image), m);
            else if (json is not null) NydusConfig.Apply(json, m);
        }
        catch (NydusConfig.ConfigException e)
        {
            throw new RafsMountException(o.ConfigFile is null ? e.Message : $"config {o.ConfigFile}: {e.Message}", e);
        }
        if (o.BlobDir is not null)
        {
            m.BlobDir = o.BlobDir;
            m.BlobFile = null;
            m.Registry = null;
            m.ObjectStorage = null;
        }
        if (o.CacheDir is not null) m.CacheDir = o.CacheDir;
        if (o.Verify is { } v) m.Verify = v == VerifyOption.Always ? VerifyMode.Always : VerifyMode.Fetch;
        if (o.NoPrefetch) m.Prefetch = PrefetchSource.None;
        if (o.NoPrefetchLibraries) m.PrefetchLibraries = DependencyPrefetch.Off;
        if (o.PrefetchAll) m.Prefetch = PrefetchSource.All;
        if (o.PrefetchFilesList is { } list)
        {
            m.Prefetch = PrefetchSource.Files;
            m.PrefetchFiles = ReadList(list);
        }
        m.RootDigest = o.RootDigest;
        if (o.TrustKeyFile is { } keyFile)
        {
            try
            {
                m.TrustKey = Signing.LoadKey(keyFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or RafsFormatException)
            {
                throw new RafsMountException($"cannot load trust key {keyFile}: {e.Message}", e);
            }
        }
        if (o.Image is { } reference)
        {
            RegistryImage.Resolve(reference, o.Platform, m, logger ?? NullLogger.Instance);
        }
        return m;
    }

    private static List<string> ReadList(string path)
    {
        var result = new List<string>();
        try
        {
            foreach (string line in File.ReadLines(path))
            {
                string p = line.Trim();
                if (p.Length == 0 || p.StartsWith('#')) continue;
                if (result.Count == MaxPrefetchList) throw new RafsMountException($"prefetch list {path} names more than {MaxPrefetchList} paths");
                result.Add(p);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RafsMountException($"cannot read prefetch list {path}: {e.Message}", e);
        }
        return result;
    }
}
