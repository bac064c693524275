using System.Globalization;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// <c>vfs-image bom</c>: a bill of materials from a RAFS image's metadata. The file list, sizes and (for most files)
/// content digests come from the bootstrap; catalogers read only package databases, manifests and Go build info.
/// </summary>
public static class BomCommand
{
    public const string Usage = "bom BOOTSTRAP --blob-dir DIR [--format spdx|cyclonedx] [-o FILE] [--name NAME]";

    internal sealed class Options
    {
        public readonly List<string> Positional = new();
        public readonly Dictionary<string, string> Values = new(StringComparer.Ordinal);
        public readonly HashSet<string> Flags = new(StringComparer.Ordinal);
        public string? Get(string n) => Values.GetValueOrDefault(n);
    }

    internal static Options Parse(IEnumerable<string> raw, string[] valued, string[] flags)
    {
        var a = new Options();
        using var it = raw.GetEnumerator();
        while (it.MoveNext())
        {
            var s = it.Current;
            if (s == "-o") s = "--output";
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
                a.Values[name] = val;
            }
            else if (flags.Contains(name) && val is null) a.Flags.Add(name);
            else throw new Program.UsageException($"unknown option {name}");
        }
        return a;
    }

    public static int Run(IEnumerable<string> rest, TextWriter o, Stream? binaryOut)
    {
        var a = Parse(rest, ["--blob-dir", "--format", "--output", "--name"], []);
        if (a.Positional.Count != 1) throw new Program.UsageException("usage: vfs-image " + Usage);
        var format = a.Get("--format") ?? "spdx";
        if (format is not ("spdx" or "cyclonedx")) throw new Program.UsageException($"--format {format}: expected spdx or cyclonedx");
        var bootstrap = a.Positional[0];
        var blobDir = a.Get("--blob-dir") ?? throw new Program.UsageException("bom needs --blob-dir DIR (the blobs hold the package databases it reads)");
        string imageDigest = "sha256:" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(bootstrap)));
        using var img = RafsImage.Open(bootstrap);
        using var tree = new ImageFiles(img, new LocalChunkSource(img, blobDir));
        var doc = Build(tree, a.Get("--name") ?? Path.GetFileName(Path.GetFullPath(bootstrap)), imageDigest, Console.Error);
        Write(doc, format, a.Get("--output"), o, binaryOut);
        Console.Error.WriteLine(Summary(doc, tree, img));
        return 0;
    }

    internal static string Summary(BomDocument doc, ImageFiles tree, RafsImage img)
    {
        ulong imageBytes = 0;
        foreach (var b in img.Blobs) imageBytes += b.CompressedSize;
        return $"bom: {doc.Packages.Count} packages, {doc.Files.Count} files ({tree.DigestsFromBootstrap} digests from the bootstrap, "
            + $"{tree.DigestsComputed} computed from {tree.HashedBytes} bytes of data); read {tree.Chunks.BytesRead} blob bytes of {imageBytes} "
            + $"({(imageBytes == 0 ? 0 : 100.0 * tree.Chunks.BytesRead / imageBytes).ToString("F2", CultureInfo.InvariantCulture)}%)";
    }

    /// <summary>Catalogs packages and lists every regular file with its digest.</summary>
    public static BomDocument Build(ImageFiles tree, string name, string imageDigest, TextWriter log)
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
            if (e.IsFile) doc.Files.Add((e, tree.Digest(e)));
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
