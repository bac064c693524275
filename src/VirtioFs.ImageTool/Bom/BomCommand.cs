using System.Globalization;
using VirtioFs.ImageTool.Registry;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// <c>vfs-image bom</c>: a bill of materials from a RAFS image's metadata. The file list, sizes and (for most files)
/// content digests come from the bootstrap; catalogers read only package databases, manifests and Go build info.
/// </summary>
public static class BomCommand
{
    public const string Usage = "bom BOOTSTRAP --blob-dir DIR | bom HOST/REPO:TAG [--attach] [--platform OS/ARCH] [REGISTRY OPTIONS]  [--format spdx|cyclonedx] [--file-digests content|bootstrap] [-o FILE] [--name NAME]";

    private static readonly string[] RegistryValued = ["--platform", "--ca-file", "--docker-config", "--timeout", "--retry-limit"];
    private static readonly string[] RegistryFlags = ["--plain-http", "--skip-verify"];

    public static int Run(IEnumerable<string> rest, TextWriter o, Stream? binaryOut)
    {
        var a = RegistryCommands.Parse(rest.Select(arg => arg == "-o" ? "--output" : arg), ["--blob-dir", "--format", "--output", "--name", "--fetch", "--file-digests", .. RegistryValued], ["--attach", .. RegistryFlags]);
        var format = a.Get("--format") ?? "spdx";
        if (format is not ("spdx" or "cyclonedx")) throw new Program.UsageException($"--format {format}: expected spdx or cyclonedx");
        var fileDigests = a.Get("--file-digests") ?? "content";
        if (fileDigests is not ("content" or "bootstrap")) throw new Program.UsageException($"--file-digests {fileDigests}: expected content or bootstrap");
        bool readData = fileDigests == "content";
        if (a.Get("--fetch") is { } fetchRef)
        {
            if (a.Positional.Count != 0 || a.Flags.Contains("--attach") || a.Get("--blob-dir") is not null) throw new Program.UsageException("usage: vfs-image " + FetchUsage);
            return Fetch(a, fetchRef, a.Get("--format") is null ? null : format, o, binaryOut);
        }
        if (a.Positional.Count != 1) throw new Program.UsageException("usage: vfs-image " + Usage);
        var image = a.Positional[0];
        if (File.Exists(image))
        {
            if (a.Flags.Contains("--attach")) throw new Program.UsageException("--attach needs the image as a registry reference (HOST/REPO:TAG), not a bootstrap file");
            if (RegistryValued.Any(a.Options.ContainsKey) || RegistryFlags.Any(a.Flags.Contains)) throw new Program.UsageException("registry options apply to a registry reference, not a bootstrap file");
            var blobDir = a.Get("--blob-dir") ?? throw new Program.UsageException("bom needs --blob-dir DIR (the blobs hold the package databases it reads)");
            string imageDigest = "sha256:" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(image)));
            using var img = RafsImage.Open(image);
            using var tree = new ImageFiles(img, new LocalChunkSource(img, blobDir));
            var doc = Build(tree, a.Get("--name") ?? Path.GetFileName(Path.GetFullPath(image)), imageDigest, Console.Error, readData);
            RequireEveryDigest(doc, format);
            Write(doc, format, a.Get("--output"), o, binaryOut);
            Console.Error.WriteLine(Summary(doc, tree, img));
            return 0;
        }
        if (a.Get("--blob-dir") is not null) throw new Program.UsageException($"'{image}' is not a file; a registry reference takes no --blob-dir");
        var reference = Registry.RegistryCommands.Ref(image);
        var platform = RegistryCommands.Platform(a);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var client = new Oci.RegistryClient(RegistryCommands.Options(a, reference));
        using var remote = RemoteImage.Open(client, reference, platform);
        using var rimg = RafsImage.Open(remote.BootstrapPath);
        var chunks = new RemoteChunkSource(rimg, client);
        using var rtree = new ImageFiles(rimg, chunks);
        var rdoc = Build(rtree, a.Get("--name") ?? reference.ToString(), remote.Manifest.Digest, Console.Error, readData);
        RequireEveryDigest(rdoc, format);
        Write(rdoc, format, a.Get("--output"), o, binaryOut);
        long fetched = remote.BootstrapLayerBytes + chunks.BytesRead;
        Console.Error.WriteLine(Summary(rdoc, rtree, rimg));
        Console.Error.WriteLine($"bom: fetched {fetched} bytes (bootstrap layer {remote.BootstrapLayerBytes}, {chunks.Requests} chunks {chunks.BytesRead}) "
            + $"of an image of {remote.ImageBytes} bytes ({Percent(fetched, remote.ImageBytes)}) in {sw.Elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture)} s");
        if (a.Flags.Contains("--attach"))
        {
            var attached = Referrers.Attach(client, remote.Manifest, Serialize(rdoc, format), format == "cyclonedx" ? BomWriters.CycloneDxMediaType : BomWriters.SpdxMediaType, rdoc.Created);
            Console.Error.WriteLine($"bom: attached {attached.ManifestDigest} to {reference.Host}/{reference.Repository}@{remote.Manifest.Digest} ({attached.Via})");
        }
        return 0;
    }

    /// <summary>convert --bom: the BOM of a just-built image (local bootstrap and blobs), attached to the manifest pushed for it.</summary>
    internal static void AttachBuilt(Oci.RegistryClient client, Oci.OciReference target, string manifestDigest, string bootstrap, string blobDir, string format, TextWriter log)
    {
        var subject = RegistryCommands.Run(client.GetManifestAsync(manifestDigest));
        using var img = RafsImage.Open(bootstrap);
        using var tree = new ImageFiles(img, new LocalChunkSource(img, blobDir));
        var doc = Build(tree, $"{target.Host}/{target.Repository}@{manifestDigest}", manifestDigest, log);
        var attached = Referrers.Attach(client, subject, Serialize(doc, format), format == "cyclonedx" ? BomWriters.CycloneDxMediaType : BomWriters.SpdxMediaType, doc.Created);
        log.WriteLine($"bom: {doc.Packages.Count} packages, {doc.Files.Count} files; attached {attached.ManifestDigest} ({attached.Via})");
    }

    public const string FetchUsage = "bom --fetch HOST/REPO:TAG [--format spdx|cyclonedx] [-o FILE] [--platform OS/ARCH] [REGISTRY OPTIONS]";

    /// <summary>--fetch: finds a BOM attached to the image (Referrers API, else the tag schema) and writes it out as stored.</summary>
    private static int Fetch(RegistryCommands.Args a, string refText, string? format, TextWriter o, Stream? binaryOut)
    {
        var reference = Registry.RegistryCommands.Ref(refText);
        using var client = new Oci.RegistryClient(RegistryCommands.Options(a, reference));
        var subject = RemoteImage.ResolveManifest(client, reference, RegistryCommands.Platform(a));
        string[] types = format switch
        {
            "spdx" => [BomWriters.SpdxMediaType],
            "cyclonedx" => [BomWriters.CycloneDxMediaType],
            _ => [BomWriters.SpdxMediaType, BomWriters.CycloneDxMediaType],
        };
        var found = Referrers.Find(client, subject.Digest, types)
            ?? throw new IOException($"no {string.Join(" or ", types)} document is attached to {reference} ({subject.Digest})");
        var output = a.Get("--output");
        if (output is not null && output != "-") File.WriteAllBytes(output, found.Document);
        else if (binaryOut is not null) binaryOut.Write(found.Document);
        else if (ReferenceEquals(o, Console.Out)) { o.Flush(); using var stdout = Console.OpenStandardOutput(); stdout.Write(found.Document); }
        else o.Write(System.Text.Encoding.UTF8.GetString(found.Document));
        Console.Error.WriteLine($"bom: {found.ArtifactType} from referrer {found.ManifestDigest} of {subject.Digest}");
        return 0;
    }

    /// <summary>SPDX 2.3 requires a checksum of every file: with --file-digests bootstrap, an image whose bootstrap lacks
    /// some (nydus's, or built before merkle version 3, and stored as several chunks) cannot give an SPDX document.</summary>
    private static void RequireEveryDigest(BomDocument doc, string format)
    {
        if (format != "spdx") return;
        int at = doc.Files.FindIndex(f => f.Digest.Value is null);
        if (at < 0) return;
        throw new InvalidDataException($"--file-digests bootstrap: the bootstrap holds no content digest of {doc.Files[at].Entry.Path} (stored as several chunks in an image "
            + "without whole-file digests: built by nydus or an older vfs-image), and SPDX 2.3 requires a checksum of every file; use --file-digests content or --format cyclonedx");
    }

    private static string Percent(long part, long whole) => (whole == 0 ? 0 : 100.0 * part / whole).ToString("F2", CultureInfo.InvariantCulture) + "%";

    internal static string Summary(BomDocument doc, ImageFiles tree, RafsImage img)
    {
        ulong imageBytes = 0;
        foreach (var b in img.Blobs) imageBytes += b.CompressedSize;
        return $"bom: {doc.Packages.Count} packages, {doc.Files.Count} files ({tree.DigestsFromBootstrap} digests from the bootstrap, "
            + $"{tree.DigestsComputed} computed from {tree.HashedBytes} bytes of data, {tree.DigestsNotHeld} not in the bootstrap and not read); read {tree.Chunks.BytesRead} of {imageBytes} blob bytes "
            + $"({Percent(tree.Chunks.BytesRead, (long)imageBytes)})";
    }

    /// <summary>Catalogs packages and lists every regular file with its digest.</summary>
    public static BomDocument Build(ImageFiles tree, string name, string imageDigest, TextWriter log, bool readData = true)
    {
        var (osId, osVersion) = Catalogers.ReadOsRelease(tree);
        var sde = Environment.GetEnvironmentVariable("SOURCE_DATE_EPOCH");
        var created = !string.IsNullOrEmpty(sde) && long.TryParse(sde, out long epoch) ? DateTimeOffset.FromUnixTimeSeconds(epoch) : DateTimeOffset.UtcNow;
        var doc = new BomDocument
        {
            ImageName = name, ImageDigest = imageDigest, Created = created, OsId = osId, OsVersion = osVersion,
            ToolVersion = typeof(BomCommand).Assembly.GetName().Version?.ToString() ?? "0",
        };
        Catalogers.Run(tree, doc, log);
        foreach (var e in tree.Entries)
        {
            if (e.IsFile) doc.Files.Add((e, tree.Digest(e, readData)));
        }
        return doc;
    }

    public static byte[] Serialize(BomDocument doc, string format)
    {
        using var ms = new MemoryStream();
        if (format == "cyclonedx") BomWriters.WriteCycloneDx(doc, ms);
        else BomWriters.WriteSpdx(doc, ms);
        ms.WriteByte((byte)'\n');
        return ms.ToArray();
    }

    internal static void Write(BomDocument doc, string format, string? output, TextWriter o, Stream? binaryOut)
    {
        var bytes = Serialize(doc, format);
        if (output is not null && output != "-")
        {
            var tmp = output + ".tmp";
            File.WriteAllBytes(tmp, bytes);
            File.Move(tmp, output, overwrite: true);
            return;
        }
        if (binaryOut is not null) { binaryOut.Write(bytes); return; }
        if (ReferenceEquals(o, Console.Out))
        {
            o.Flush();
            using var stdout = Console.OpenStandardOutput();
            stdout.Write(bytes);
            return;
        }
        o.Write(System.Text.Encoding.UTF8.GetString(bytes));
    }
}
