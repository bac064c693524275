using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using VirtioFs.ImageTool;
using VirtioFs.ImageTool.Registry;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Rafs;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// vfs-image convert against the real registry: an OCI image made here (three layers: gzip, zstd and plain tar, with
/// an overwritten file, a whiteout, an opaque directory and a file repeated across layers; an index with two
/// platforms) is pushed, converted to a nydus image, pulled back and unpacked, and compared with the flattened tree.
/// </summary>
public sealed partial class ConvertTests
{
    private static readonly byte[] Tool = Random(1, 300_000);
    private static readonly byte[] Shared = Random(2, 200_000);

    private static byte[] Random(int seed, int n)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }



    // ------------------------------------------------------------------ the source image

    private static byte[] Tar(Action<TarWriter> body)
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true)) body(w);
        return ms.ToArray();
    }

    private static void Dir(TarWriter w, string name) =>
        w.WriteEntry(new PaxTarEntry(TarEntryType.Directory, name) { Mode = (UnixFileMode)493 /* 0755 */, ModificationTime = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000) });

    private static void File_(TarWriter w, string name, byte[] data) =>
        w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name)
        {
            Mode = (UnixFileMode)420 /* 0644 */,
            ModificationTime = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000),
            DataStream = new MemoryStream(data),
        });

    private static void Link(TarWriter w, string name, string target) =>
        w.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, name) { LinkName = target, Mode = (UnixFileMode)511 /* 0777 */, ModificationTime = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000) });

    private static byte[] Layer1() => Tar(w =>
    {
        Dir(w, "etc/");
        File_(w, "etc/hostname", "one\n"u8.ToArray());
        Dir(w, "bin/");
        File_(w, "bin/tool", Tool);
        File_(w, "gone.txt", "bye\n"u8.ToArray());
        Dir(w, "opq/");
        File_(w, "opq/a", "a"u8.ToArray());
        File_(w, "opq/b", "b"u8.ToArray());
        Dir(w, "keep/");
        File_(w, "keep/shared.bin", Shared);
    });

    private static byte[] Layer2() => Tar(w =>
    {
        File_(w, "etc/hostname", "two\n"u8.ToArray());              // overwrites layer 1's
        File_(w, ".wh.gone.txt", []);                                  // whiteout
        Dir(w, "opq/");
        File_(w, "opq/.wh..wh..opq", []);                              // opaque: a and b go
        File_(w, "opq/c", "c"u8.ToArray());
        Dir(w, "dup/");
        File_(w, "dup/copy.bin", Shared);                              // same chunks as layer 1's keep/shared.bin
        Link(w, "link", "etc/hostname");
    });

    private static byte[] Layer3() => Tar(w => File_(w, "late.txt", "late\n"u8.ToArray()));

    /// <summary>The tree the three layers flatten to: path -> content (null for a directory, "-> target" for a symlink).</summary>
    private static Dictionary<string, byte[]?> Expected() => new()
    {
        ["etc"] = null, ["etc/hostname"] = "two\n"u8.ToArray(), ["bin"] = null, ["bin/tool"] = Tool, ["opq"] = null, ["opq/c"] = "c"u8.ToArray(),
        ["keep"] = null, ["keep/shared.bin"] = Shared, ["dup"] = null, ["dup/copy.bin"] = Shared, ["link"] = "-> etc/hostname"u8.ToArray(),
        ["late.txt"] = "late\n"u8.ToArray(),
    };

    private static byte[] Gzip(byte[] b)
    {
        var ms = new MemoryStream();
        using (var z = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) z.Write(b);
        return ms.ToArray();
    }

    private static byte[] Zstd(byte[] b)
    {
        var ms = new MemoryStream();
        using (var z = new ZstdSharp.CompressionStream(ms, 3, leaveOpen: true)) z.Write(b);
        return ms.ToArray();
    }

    private static string Sha(byte[] b) => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(b));

    /// <summary>An OCI image: blobs by digest plus the index that names the two platform manifests.</summary>
    private sealed record SourceImage(Dictionary<string, byte[]> Blobs, HashSet<string> Manifests, byte[] Index, string AmdManifest, string[] LayerDigests);

    private static byte[] Json(Action<Utf8JsonWriter> body)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static byte[] Config(string arch, IEnumerable<string> diffIds, IEnumerable<string>? badDiffIds = null) => Json(w =>
    {
        w.WriteString("created", "2024-01-02T03:04:05Z");
        w.WriteString("architecture", arch);
        w.WriteString("os", "linux");
        w.WriteStartObject("config");
        w.WriteStartArray("Env"); w.WriteStringValue("PATH=/usr/bin:/bin"); w.WriteStringValue("GREETING=hi"); w.WriteEndArray();
        w.WriteStartArray("Entrypoint"); w.WriteStringValue("/bin/tool"); w.WriteEndArray();
        w.WriteString("WorkingDir", "/opq");
        w.WriteEndObject();
        w.WriteStartObject("rootfs");
        w.WriteString("type", "layers");
        w.WriteStartArray("diff_ids");
        foreach (var d in badDiffIds ?? diffIds) w.WriteStringValue(d);
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteStartArray("history");
        w.WriteStartObject(); w.WriteString("created_by", "test"); w.WriteEndObject();
        w.WriteEndArray();
    });

    private static SourceImage MakeImage(byte[]? badLayer2 = null, bool wrongDiffId = false)
    {
        var blobs = new Dictionary<string, byte[]>();
        string Add(byte[] b) { var d = Sha(b); blobs[d] = b; return d; }
        byte[] t1 = Layer1(), t2 = Layer2(), t3 = Layer3();
        var layers = new[]
        {
            new OciDescriptor(OciMediaTypes.LayerTarGzip, Add(Gzip(t1)), Gzip(t1).Length),
            badLayer2 is null
                ? new OciDescriptor("application/vnd.oci.image.layer.v1.tar+zstd", Add(Zstd(t2)), Zstd(t2).Length)
                : new OciDescriptor(OciMediaTypes.LayerTarGzip, Add(badLayer2), badLayer2.Length),
            new OciDescriptor("application/vnd.oci.image.layer.v1.tar", Add(t3), t3.Length),
        };
        var diffIds = new[] { Sha(t1), Sha(t2), Sha(t3) };
        var cfg = Config("amd64", diffIds, wrongDiffId ? [diffIds[0], diffIds[0], diffIds[2]] : null);
        var amd = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest, new OciDescriptor(OciMediaTypes.ImageConfig, Add(cfg), cfg.Length), layers));
        // The arm64 image has only the last layer: converting it gives a visibly different tree.
        var armCfg = Config("arm64", [diffIds[2]]);
        var arm = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest, new OciDescriptor(OciMediaTypes.ImageConfig, Add(armCfg), armCfg.Length), [layers[2]]));
        var index = OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex,
        [
            new OciDescriptor(OciMediaTypes.ImageManifest, Add(amd), amd.Length, Platform: new OciPlatform("linux", "amd64")),
            new OciDescriptor(OciMediaTypes.ImageManifest, Add(arm), arm.Length, Platform: new OciPlatform("linux", "arm64")),
        ], new Dictionary<string, string> { ["org.opencontainers.image.source"] = "https://example.com/vfs-test" }));
        return new SourceImage(blobs, [Sha(amd), Sha(arm)], index, Sha(amd), layers.Select(l => l.Digest).ToArray());
    }

    private static async Task PushSource(RegistryServer server, string repo, string tag, SourceImage img, RegistryCredentials? creds = null)
    {
        using var c = new RegistryClient(server.Options(repo, creds));
        foreach (var (d, b) in img.Blobs.Where(kv => !img.Manifests.Contains(kv.Key)))
            await c.PushBlobAsync(d, b.Length, () => new MemoryStream(b));
        foreach (var d in img.Manifests) await c.PutManifestAsync(d, OciMediaTypes.ImageManifest, img.Blobs[d]);
        await c.PutManifestAsync(tag, OciMediaTypes.ImageIndex, img.Index);
    }

    private static string WriteLayout(SourceImage img)
    {
        var dir = Cli.Temp("layout");
        File.WriteAllText(Path.Combine(dir, "oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
        File.WriteAllBytes(Path.Combine(dir, "index.json"), img.Index);
        Directory.CreateDirectory(Path.Combine(dir, "blobs", "sha256"));
        foreach (var (d, b) in img.Blobs) File.WriteAllBytes(Path.Combine(dir, "blobs", "sha256", d[7..]), b);
        return dir;
    }

    // ------------------------------------------------------------------ checks

    private static void AssertTree(string root, Dictionary<string, byte[]?> expected)
    {
        var seen = new Dictionary<string, byte[]?>();
        foreach (var p in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(root, p);
            var fi = new FileInfo(p);
            if (fi.LinkTarget is { } t) seen[rel] = Encoding.UTF8.GetBytes("-> " + t);
            else if (Directory.Exists(p)) seen[rel] = null;
            else seen[rel] = File.ReadAllBytes(p);
        }
        Assert.Equal(expected.Keys.Order(), seen.Keys.Order());
        foreach (var (k, v) in expected)
        {
            if (v is null) Assert.Null(seen[k]);
            else Assert.True(v.AsSpan().SequenceEqual(seen[k]), $"{k} differs");
        }
    }

    /// <summary>Pulls a converted image and unpacks it.</summary>
    private static string PullTree(RegistryServer server, string reference, string platform = "linux/amd64")
    {
        var d = Cli.Temp("pull");
        var (code, text) = Cli.Run("pull", $"{server.Host}/{reference}", "--bootstrap", Path.Combine(d, "boot"), "--blob-dir", Path.Combine(d, "blobs"), "--platform", platform);
        Assert.True(code == 0, text);
        (code, text) = Cli.Run("check", Path.Combine(d, "boot"), "--blob-dir", Path.Combine(d, "blobs"));
        Assert.True(code == 0, text);
        (code, text) = Cli.Run("unpack", Path.Combine(d, "boot"), Path.Combine(d, "tree"), "--blob-dir", Path.Combine(d, "blobs"));
        Assert.True(code == 0, text);
        return Path.Combine(d, "tree");
    }

    private static JsonDocument Convert_(out int code, params string[] args)
    {
        var (c, text) = Cli.Run(["convert", .. args, "--json"]);
        code = c;
        Assert.True(c == 0, text);
        return JsonDocument.Parse(text);
    }

    private static List<string> Outcomes(JsonDocument doc) =>
        [.. doc.RootElement.GetProperty("layers").EnumerateArray().Select(l => l.GetProperty("outcome").GetString()!),
            doc.RootElement.GetProperty("config").GetProperty("outcome").GetString()!];

    [Fact]
    public async Task Convert_from_a_registry_flattens_the_layers_keeps_the_config_and_uploads_nothing_twice()
    {
        using var server = RegistryServer.Start();
        var img = MakeImage();
        await PushSource(server, "src/app", "v1", img);
        var work = Cli.Temp("work");

        using (var doc = Convert_(out _, $"{server.Host}/src/app:v1", $"{server.Host}/dst/app:v1", "--chunk-size", "64K", "--work-dir", work))
        {
            var r = doc.RootElement;
            Assert.Equal(img.AmdManifest, r.GetProperty("source_manifest").GetString());
            Assert.Equal(3, r.GetProperty("source_layers").GetInt32());
            // keep/shared.bin and dup/copy.bin come from different layers and share every chunk.
            Assert.True(r.GetProperty("chunks").GetInt32() - r.GetProperty("unique_chunks").GetInt32() >= 4, doc.RootElement.ToString());
            Assert.All(Outcomes(doc), o => Assert.Equal("uploaded", o));
            Assert.Equal(3, r.GetProperty("uploaded").GetInt32());
        }
        Assert.Empty(Directory.EnumerateFileSystemEntries(work)); // downloaded layers, spool, bootstrap and blob are gone

        // The nydus layout, with the source config kept and its rootfs rewritten.
        using (var c = new RegistryClient(server.Options("dst/app")))
        {
            var idx = OciJson.ParseIndex((await c.GetManifestAsync("v1")).Body);
            var entry = Assert.Single(idx.Manifests);
            Assert.Equal("linux/amd64", entry.Platform!.ToString());
            Assert.Equal([OciMediaTypes.NydusRemoteImageFeature], entry.Platform.OsFeatures);
            var m = OciJson.ParseManifest((await c.GetManifestAsync(entry.Digest)).Body);
            Assert.Equal(2, m.Layers.Count);
            Assert.Equal(OciMediaTypes.NydusBlob, m.Layers[0].MediaType);
            Assert.Equal("true", m.Layers[1].Annotation(OciMediaTypes.AnnotationNydusBootstrap));
            Assert.Equal($"[\"{m.Layers[0].Digest[7..]}\"]", m.Layers[1].Annotation(RegistryCommands.AnnotationNydusBlobIds));
            var cfgStream = new MemoryStream();
            await c.DownloadBlobAsync(m.Config.Digest, cfgStream);
            using var cfg = JsonDocument.Parse(cfgStream.ToArray());
            var root = cfg.RootElement;
            Assert.Equal("2024-01-02T03:04:05Z", root.GetProperty("created").GetString());
            Assert.Equal(["PATH=/usr/bin:/bin", "GREETING=hi"], root.GetProperty("config").GetProperty("Env").EnumerateArray().Select(e => e.GetString()));
            Assert.Equal("/bin/tool", root.GetProperty("config").GetProperty("Entrypoint")[0].GetString());
            Assert.Equal("/opq", root.GetProperty("config").GetProperty("WorkingDir").GetString());
            Assert.False(root.TryGetProperty("history", out _));
            var diffIds = root.GetProperty("rootfs").GetProperty("diff_ids").EnumerateArray().Select(e => e.GetString()).ToList();
            Assert.Equal([m.Layers[0].Digest, m.Layers[1].Annotation(OciMediaTypes.AnnotationUncompressed)], diffIds);
        }

        AssertTree(PullTree(server, "dst/app:v1"), Expected());

        // Again: the same bytes, so every blob is already there.
        string firstIndex;
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v1", $"{server.Host}/dst/app:v1", "--chunk-size", "64K", "--work-dir", work))
        {
            Assert.All(Outcomes(doc), o => Assert.Equal("already present", o));
            Assert.Equal(0, doc.RootElement.GetProperty("uploaded").GetInt32());
            firstIndex = doc.RootElement.GetProperty("index").GetString()!;
        }
        // Into another repository of the same registry: mounted from the first conversion, not uploaded.
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v1", $"{server.Host}/dst/other:v1", "--chunk-size", "64K", "--mount-from", "dst/app"))
        {
            Assert.All(Outcomes(doc), o => Assert.Equal("mounted", o));
            Assert.Equal(0, doc.RootElement.GetProperty("uploaded").GetInt32());
        }
        // By digest, and from an OCI layout holding the same image: the same nydus image, nothing uploaded.
        using (var doc = Convert_(out _, $"{server.Host}/src/app@{img.AmdManifest}", $"{server.Host}/dst/app:v1", "--chunk-size", "64K"))
            Assert.Equal(firstIndex, doc.RootElement.GetProperty("index").GetString());
        var layout = WriteLayout(img);
        using (var doc = Convert_(out _, "oci:" + layout, $"{server.Host}/dst/app:v1", "--chunk-size", "64K"))
        {
            Assert.Equal(firstIndex, doc.RootElement.GetProperty("index").GetString());
            Assert.Equal(0, doc.RootElement.GetProperty("uploaded").GetInt32());
        }

        // Human-readable output: progress lines per layer and blob, and a summary.
        var (code, text) = Cli.Run("convert", $"{server.Host}/src/app:v1", $"{server.Host}/dst/app:v2", "--chunk-size", "64K");
        Assert.True(code == 0, text);
        Assert.Contains($"layer {img.LayerDigests[0][7..19]}: fetched", text);
        Assert.Contains("already present", text);
        Assert.Contains($"converted {server.Host}/src/app:v1 -> {server.Host}/dst/app:v2", text);

        // The other platform of the index.
        using (Convert_(out _, layout, $"{server.Host}/dst/app:arm", "--platform", "linux/arm64")) { }
        AssertTree(PullTree(server, "dst/app:arm", "linux/arm64"), new() { ["late.txt"] = "late\n"u8.ToArray() });
        (code, text) = Cli.Run("convert", $"{server.Host}/src/app:v1", $"{server.Host}/dst/app:x", "--platform", "linux/s390x");
        Assert.Equal(1, code);
        Assert.Contains("no image for linux/s390x", text);

        // A nydus image is not a conversion source.
        (code, text) = Cli.Run("convert", $"{server.Host}/dst/app:v1", $"{server.Host}/dst/app:again");
        Assert.Equal(1, code);
        Assert.Contains("already a nydus image", text);

        // A layer corrupted in the registry's storage: the download's digest check stops it, and the work dir is cleaned.
        var hex = img.LayerDigests[1][7..];
        var stored = Path.Combine(server.Root, "data", "docker", "registry", "v2", "blobs", "sha256", hex[..2], hex, "data");
        var bytes = File.ReadAllBytes(stored);
        bytes[bytes.Length / 2] ^= 0xFF;
        File.WriteAllBytes(stored, bytes);
        (code, text) = Cli.Run("convert", $"{server.Host}/src/app:v1", $"{server.Host}/dst/app:bad", "--work-dir", work, "--retry-limit", "0");
        Assert.Equal(1, code);
        Assert.Contains(img.LayerDigests[1], text);
        Assert.Contains("digest", text);
        Assert.Empty(Directory.EnumerateFileSystemEntries(work));
        using (var c = new RegistryClient(server.Options("dst/app")))
            await Assert.ThrowsAsync<RegistryException>(() => c.GetManifestAsync("bad"));
    }

    [Fact]
    public async Task Convert_with_token_auth_takes_credentials_from_a_docker_config()
    {
        using var tokens = new TokenServer { RequiredCredentials = ("ci", "pw") };
        using var server = RegistryServer.Start(token: tokens);
        await PushSource(server, "team/src", "v1", MakeImage(), new RegistryCredentials("ci", "pw"));
        var cfgDir = Cli.Temp("cfg");
        var cfg = Path.Combine(cfgDir, "config.json");
        File.WriteAllText(cfg, $"{{\"auths\":{{\"{server.Host}\":{{\"auth\":\"{Convert.ToBase64String("ci:pw"u8)}\"}}}}}}");
        var (code, text) = Cli.Run("convert", $"{server.Host}/team/src:v1", $"{server.Host}/team/dst:v1", "--docker-config", cfg, "--insecure");
        Assert.True(code == 0, text);
        Assert.Contains("uploaded", text);
        // Without credentials the token server refuses before anything is converted.
        (code, text) = Cli.Run("convert", $"{server.Host}/team/src:v1", $"{server.Host}/team/dst:v2", "--docker-config", Path.Combine(cfgDir, "none.json"));
        Assert.Equal(1, code);
        Assert.Contains("401", text);
    }

    // ------------------------------------------------------------------ hostile layouts (they fail before any push)

    private const string NoRegistry = "127.0.0.1:1/never/reached:v1";

    [Fact]
    public void A_layout_blob_that_does_not_match_its_digest_is_refused()
    {
        var img = MakeImage();
        var layout = WriteLayout(img);
        var p = Path.Combine(layout, "blobs", "sha256", img.LayerDigests[0][7..]);
        var b = File.ReadAllBytes(p);
        b[^5] ^= 1;
        File.WriteAllBytes(p, b);
        var (code, text) = Cli.Run("convert", layout, NoRegistry);
        Assert.Equal(1, code);
        Assert.Contains($"layer {img.LayerDigests[0]} has digest", text);
    }

    [Fact]
    public void A_layer_that_is_not_a_tar_gives_a_clear_error()
    {
        var garbage = Gzip(Random(3, 5000));
        var (code, text) = Cli.Run("convert", WriteLayout(MakeImage(badLayer2: garbage)), NoRegistry);
        Assert.Equal(1, code);
        Assert.Contains("not a valid tar", text);
        Assert.Contains(Sha(garbage), text);

        // Not even gzip, although the media type says so.
        (code, text) = Cli.Run("convert", "oci:" + WriteLayout(MakeImage(badLayer2: Random(4, 5000))), NoRegistry);
        Assert.Equal(1, code);
        Assert.Contains("layer " + Sha(Random(4, 5000)), text);
    }

    [Fact]
    public void A_layer_whose_content_differs_from_the_config_diff_id_is_refused()
    {
        var (code, text) = Cli.Run("convert", WriteLayout(MakeImage(wrongDiffId: true)), NoRegistry);
        Assert.Equal(1, code);
        Assert.Contains("diff id", text);
    }

    [Fact]
    public void Layers_expanding_beyond_the_limit_stop_the_conversion_and_leave_nothing_behind()
    {
        var work = Cli.Temp("bomb");
        long saved = RegistryCommands.MaxUnpackedBytes;
        RegistryCommands.MaxUnpackedBytes = 400_000; // layer 1 alone expands to about 500 KB
        try
        {
            var (code, text) = Cli.Run("convert", WriteLayout(MakeImage()), NoRegistry, "--work-dir", work);
            Assert.Equal(1, code);
            Assert.Contains("expands to more than 400000 bytes", text);
        }
        finally { RegistryCommands.MaxUnpackedBytes = saved; }
        Assert.Empty(Directory.EnumerateFileSystemEntries(work));
    }

    [Fact]
    public void Usage_errors_exit_2()
    {
        Assert.Equal(2, Cli.Run("convert", "only-one-arg").Code);
        Assert.Equal(2, Cli.Run("convert", "a/b:c", "127.0.0.1:5000/x@sha256:" + new string('a', 64)).Code);
        Assert.Equal(2, Cli.Run("convert", "a/b:c", "127.0.0.1:5000/x:y", "--fs-version", "7").Code);
        Assert.Equal(2, Cli.Run("convert", "a/b:c", "127.0.0.1:5000/x:y", "--chunk-size", "3000").Code);
        Assert.Equal(2, Cli.Run("convert", "a/b:c", "127.0.0.1:5000/x:y", "--bogus").Code);
        Assert.Equal(1, Cli.Run("convert", "oci:/nonexistent-layout-dir", "127.0.0.1:5000/x:y").Code);
    }
}
