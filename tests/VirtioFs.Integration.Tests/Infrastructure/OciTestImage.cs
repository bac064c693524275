using System.Formats.Tar;
using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Oci;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>One entry of a layer: a directory, a regular file, a symlink, or a whiteout (<c>.wh.NAME</c>, OCI image-spec
/// "layer.md", Whiteouts) that deletes <see cref="Path"/> and everything below it from the layers underneath.</summary>
internal sealed record LayerEntry(string Path, char Kind, int Mode, int Uid, int Gid, long MTime, byte[]? Data = null, string? Target = null)
{
    public const long Epoch = 1_700_000_000;

    public static LayerEntry Dir(string path, int mode = 0x1ED /* 0755 */, int uid = 0, int gid = 0, long mtime = Epoch) =>
        new(path, 'd', mode, uid, gid, mtime);

    public static LayerEntry File(string path, byte[] data, int mode = 0x1A4 /* 0644 */, int uid = 0, int gid = 0, long mtime = Epoch) =>
        new(path, 'f', mode, uid, gid, mtime, data);

    public static LayerEntry Symlink(string path, string target, long mtime = Epoch) =>
        new(path, 'l', 0x1FF /* 0777 */, 0, 0, mtime, Target: target);

    public static LayerEntry Whiteout(string path) => new(path, 'w', 0, 0, 0, Epoch);
}

/// <summary>
/// A plain OCI image made by the test (OCI image-spec: tar layers, a config whose <c>rootfs.diff_ids</c> are the
/// uncompressed layers' sha256, a manifest), pushed to a registry with the registry client, and the tree its layers
/// flatten to, so a converted image served by vfsd can be compared with it on the host and in a guest.
/// The first layer is tar+gzip, later ones plain tar, so both decompression paths of convert are used.
/// </summary>
internal sealed class OciTestImage
{
    private readonly List<LayerEntry[]> _layers = [];

    public OciTestImage Layer(params LayerEntry[] entries)
    {
        _layers.Add(entries);
        return this;
    }

    /// <summary>Bytes of every layer blob as pushed (after compression): what a full pull of the source would fetch.</summary>
    public long LayerBytes { get; private set; }

    /// <summary>The flattened tree, path to entry: each layer applied bottom first, a whiteout removing its path and
    /// everything below it, a later entry replacing an earlier one (OCI image-spec "layer.md", Applying Changesets).</summary>
    public SortedDictionary<string, LayerEntry> Expected()
    {
        var tree = new SortedDictionary<string, LayerEntry>(StringComparer.Ordinal);
        foreach (var layer in _layers)
        {
            foreach (var e in layer)
            {
                if (e.Kind == 'w')
                {
                    foreach (var k in tree.Keys.Where(k => k == e.Path || k.StartsWith(e.Path + "/", StringComparison.Ordinal)).ToList()) tree.Remove(k);
                }
                else
                {
                    tree[e.Path] = e;
                }
            }
        }
        return tree;
    }

    /// <summary>Pushes every blob, the config and the manifest, then tags it.</summary>
    public async Task PushAsync(RegistryOptions options, string tag)
    {
        using var client = new RegistryClient(options);
        var layers = new List<OciDescriptor>();
        var diffIds = new List<string>();
        long total = 0;
        for (int i = 0; i < _layers.Count; i++)
        {
            byte[] tar = Tar(_layers[i]);
            diffIds.Add(Sha(tar));
            byte[] blob = i == 0 ? Gzip(tar) : tar;
            string mediaType = i == 0 ? OciMediaTypes.LayerTarGzip : "application/vnd.oci.image.layer.v1.tar";
            await client.PushBlobAsync(Sha(blob), blob.Length, () => new MemoryStream(blob));
            layers.Add(new OciDescriptor(mediaType, Sha(blob), blob.Length));
            total += blob.Length;
        }
        byte[] config = OciJson.WriteConfig(new OciPlatform("linux", "amd64"), diffIds, DateTimeOffset.FromUnixTimeSeconds(LayerEntry.Epoch));
        await client.PushBlobAsync(Sha(config), config.Length, () => new MemoryStream(config));
        byte[] manifest = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest,
            new OciDescriptor(OciMediaTypes.ImageConfig, Sha(config), config.Length), layers));
        await client.PutManifestAsync(tag, OciMediaTypes.ImageManifest, manifest);
        LayerBytes = total;
    }

    /// <summary>Every difference between the flattened tree (the entries below <paramref name="under"/>, if given) and
    /// the directory <paramref name="root"/>: paths, types, permissions, owners, mtimes, sizes, contents and targets.</summary>
    public List<string> Differences(string root, string? under = null)
    {
        var expected = Below(under);
        var errors = new List<string>();
        var opts = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 };
        var actual = Directory.EnumerateFileSystemEntries(root, "*", opts).Select(p => Path.GetRelativePath(root, p)).ToHashSet(StringComparer.Ordinal);
        foreach (var p in expected.Keys.Where(p => !actual.Contains(p))) errors.Add($"{p}: missing");
        foreach (var p in actual.Where(p => !expected.ContainsKey(p)).Order(StringComparer.Ordinal)) errors.Add($"{p}: not in the image");
        foreach (var (rel, e) in expected)
        {
            if (!actual.Contains(rel)) continue;
            string full = Path.Combine(root, rel);
            var st = VirtioFs.Tests.Shared.HostSyscalls.Lstat(full);
            void Same<T>(string what, T want, T got)
            {
                if (!EqualityComparer<T>.Default.Equals(want, got)) errors.Add($"{rel}: {what} expected {want}, got {got}");
            }
            Same("type|mode", TypeBits(e.Kind) | e.Mode, (int)st.stx_mode);
            Same("owner", (e.Uid, e.Gid), ((int)st.stx_uid, (int)st.stx_gid));
            Same("mtime", (e.MTime, 0u), (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec));
            if (e.Kind == 'f')
            {
                Same("size", (ulong)e.Data!.Length, st.stx_size);
                using var f = System.IO.File.OpenRead(full);
                Same("sha256", Convert.ToHexStringLower(SHA256.HashData(e.Data)), Convert.ToHexStringLower(SHA256.HashData(f)));
            }
            if (e.Kind == 'l') Same("target", e.Target, new FileInfo(full).LinkTarget);
        }
        return errors;
    }

    /// <summary>The lines <see cref="TestTree.GuestManifestScript"/> prints for the entries below <paramref name="under"/>
    /// ("path|type|mode|uid|gid|size|mtime|extra"), sorted as the guest's sort does.</summary>
    public List<string> GuestManifest(string? under = null)
    {
        var lines = new List<string>();
        foreach (var (rel, e) in Below(under))
        {
            string type = e.Kind switch { 'd' => "directory", 'f' => "regular", _ => "symlink" };
            string size = e.Kind switch
            {
                'd' => "-",
                'f' => e.Data!.Length.ToString(CultureInfo.InvariantCulture),
                _ => Encoding.UTF8.GetByteCount(e.Target!).ToString(CultureInfo.InvariantCulture),
            };
            string mtime = DateTimeOffset.FromUnixTimeSeconds(e.MTime).UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) + ".000000000 +0000";
            string extra = e.Kind switch { 'f' => Convert.ToHexStringLower(SHA256.HashData(e.Data!)), 'l' => e.Target!, _ => "" };
            lines.Add(string.Join('|', rel, type, Convert.ToString(e.Mode, 8), e.Uid, e.Gid, size, mtime, extra));
        }
        return lines.OrderBy(l => l[..l.IndexOf('|', StringComparison.Ordinal)], StringComparer.Ordinal).ToList();
    }

    private SortedDictionary<string, LayerEntry> Below(string? under)
    {
        var all = Expected();
        if (under is null) return all;
        var result = new SortedDictionary<string, LayerEntry>(StringComparer.Ordinal);
        foreach (var (p, e) in all)
        {
            if (p.StartsWith(under + "/", StringComparison.Ordinal)) result[p[(under.Length + 1)..]] = e;
        }
        return result;
    }

    private static int TypeBits(char kind) => kind switch { 'd' => 0x4000, 'f' => 0x8000, _ => 0xA000 };

    private static byte[] Tar(IEnumerable<LayerEntry> entries)
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var e in entries)
            {
                var time = DateTimeOffset.FromUnixTimeSeconds(e.MTime);
                PaxTarEntry t = e.Kind switch
                {
                    'd' => new PaxTarEntry(TarEntryType.Directory, e.Path + "/"),
                    'f' => new PaxTarEntry(TarEntryType.RegularFile, e.Path) { DataStream = new MemoryStream(e.Data!) },
                    'l' => new PaxTarEntry(TarEntryType.SymbolicLink, e.Path) { LinkName = e.Target! },
                    // A whiteout is an empty regular file named .wh.<name> beside the entry it hides.
                    _ => new PaxTarEntry(TarEntryType.RegularFile, WhiteoutName(e.Path)),
                };
                t.Mode = (UnixFileMode)(e.Kind == 'w' ? 0x1A4 : e.Mode);
                t.Uid = e.Uid;
                t.Gid = e.Gid;
                t.ModificationTime = time;
                w.WriteEntry(t);
            }
        }
        return ms.ToArray();
    }

    private static string WhiteoutName(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash < 0 ? ".wh." + path : path[..(slash + 1)] + ".wh." + path[(slash + 1)..];
    }

    private static byte[] Gzip(byte[] b)
    {
        var ms = new MemoryStream();
        using (var z = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) z.Write(b);
        return ms.ToArray();
    }

    private static string Sha(byte[] b) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(b));
}

/// <summary>A docker <c>config.json</c> in a directory of its own, as <c>docker login</c> writes it
/// (<c>{"auths": {"HOST": {"auth": base64(user:password)}}}</c>): pass <see cref="Dir"/> as DOCKER_CONFIG or
/// <see cref="File"/> to <c>--docker-config</c>.</summary>
internal sealed class DockerConfigDir : IDisposable
{
    public DockerConfigDir(string user, string password, params string[] hosts)
    {
        Dir = Directory.CreateTempSubdirectory("vfs-docker-config-").FullName;
        string auth = Convert.ToBase64String(Encoding.UTF8.GetBytes(user + ":" + password));
        var entries = string.Join(",", hosts.Select(h => $"\"{h}\":{{\"auth\":\"{auth}\"}}"));
        System.IO.File.WriteAllText(File, $"{{\"auths\":{{{entries}}}}}");
    }

    public string Dir { get; }
    public string File => Path.Combine(Dir, "config.json");
    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string> { ["DOCKER_CONFIG"] = Dir };

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
