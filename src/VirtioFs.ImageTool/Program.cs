using System.Text;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.ImageTool;

/// <summary>vfs-image: build, check and read RAFS images (see USAGE.md).</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        try
        {
            return Run(args, Console.Out);
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"vfs-image: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is RafsFormatException or IOException or UnauthorizedAccessException or InvalidDataException)
        {
            Console.Error.WriteLine($"vfs-image: {e.Message}");
            return 1;
        }
    }

    public sealed class UsageException(string message) : Exception(message);

    private const string Usage = """
        usage: vfs-image COMMAND ...   build, check and read nydus-compatible RAFS images (v6 and v5)

          create SOURCE... --bootstrap FILE --blob-dir DIR [--type dir|oci-layout|oci-layers] [--fs-version 6|5]
                 [--chunk-size N] [--compressor none|lz4_block|zstd] [--digester blake3|sha256]
                 [--chunk-dict BOOTSTRAP|bootstrap=BOOTSTRAP] [--prefetch-files LIST] [--sign KEY] [--json]
          check BOOTSTRAP [--blob-dir DIR] [--trust-key PUB] [--json]
          inspect BOOTSTRAP [--json]
          ls BOOTSTRAP PATH [--json]
          stat BOOTSTRAP PATH [--json]
          cat BOOTSTRAP PATH [--blob-dir DIR]
          unpack BOOTSTRAP DIR [--blob-dir DIR]
          keygen KEY                      writes KEY (Ed25519 seed) and KEY.pub
          push BOOTSTRAP --blob-dir DIR --target HOST/REPO:TAG [--platform OS/ARCH] [--mount-from REPO] [--json]
          pull HOST/REPO:TAG --bootstrap FILE [--blob-dir DIR] [--platform OS/ARCH] [--json]
          bom BOOTSTRAP --blob-dir DIR | bom HOST/REPO:TAG [--attach] [--platform OS/ARCH]     SPDX 2.3 / CycloneDX 1.5 JSON
                 [--format spdx|cyclonedx] [--file-digests content|bootstrap] [-o FILE] [--name NAME]
          bom --fetch HOST/REPO:TAG [--format spdx|cyclonedx] [-o FILE]                   a BOM attached with --attach
          convert SRC HOST/REPO:TAG [--platform OS/ARCH|all|LIST] [--fs-version 6|5] [--compressor C] [--digester D] [--chunk-size N]
                 [--work-dir DIR] [--mount-from REPO] [--insecure] [--json]     SRC: HOST/REPO:TAG, HOST/REPO@sha256:.., oci:DIR or DIR
                 [--backend-type s3|oss --backend-config FILE]     data blob to the bucket, bootstrap-only manifest to DST
                 [--prefetch-files LIST] [--sign KEY]     as for create
                 [--chunk-dict BOOTSTRAP|bootstrap=BOOTSTRAP|bootstrap:registry:HOST/REPO:TAG]     dedup against another image
                 registry options: --plain-http --skip-verify --ca-file PEM --docker-config FILE --timeout S --retry-limit N

        Usage errors exit 2, bad input exits 1; see src/VirtioFs.ImageTool/USAGE.md for details.

        """;

    private sealed class Args
    {
        public readonly List<string> Positional = new();
        public readonly Dictionary<string, string> Options = new();
        public readonly HashSet<string> Flags = new();

        public static Args Parse(IEnumerable<string> raw, string[] valued, string[] flags)
        {
            var a = new Args();
            using var it = raw.GetEnumerator();
            while (it.MoveNext())
            {
                var s = it.Current;
                if (s.StartsWith("--", StringComparison.Ordinal))
                {
                    var name = s;
                    string? val = null;
                    int eq = s.IndexOf('=');
                    if (eq > 0) { name = s[..eq]; val = s[(eq + 1)..]; }
                    if (valued.Contains(name))
                    {
                        if (val is null)
                        {
                            if (!it.MoveNext()) throw new UsageException($"option {name} needs a value");
                            val = it.Current;
                        }
                        a.Options[name] = val;
                    }
                    else if (flags.Contains(name) && val is null) a.Flags.Add(name);
                    else throw new UsageException($"unknown option {name}");
                }
                else a.Positional.Add(s);
            }
            return a;
        }

        public string? Get(string n) => Options.GetValueOrDefault(n);
    }

    public static int Run(string[] args, TextWriter o) => Run(args, o, null);

    /// <summary>Runs a command; <paramref name="binaryOut"/> receives `cat` output (stdout when null).</summary>
    public static int Run(string[] args, TextWriter o, Stream? binaryOut)
    {
        if (args.Length == 0) throw new UsageException("usage: vfs-image create|check|inspect|ls|cat|stat|unpack|keygen|push|pull|convert|bom ... (vfs-image --help)");
        var rest = args.Skip(1);
        switch (args[0])
        {
            case "--help" or "-h" or "help": o.Write(Usage); return 0;
            case "create": return Create(Args.Parse(rest, ["--fs-version", "--chunk-size", "--compressor", "--digester", "--chunk-dict", "--prefetch-files", "--blob-dir", "--bootstrap", "--sign", "--type"], ["--json"]), o);
            case "check": return Check(Args.Parse(rest, ["--blob-dir", "--trust-key"], ["--json"]), o);
            case "inspect": return Inspect(Args.Parse(rest, [], ["--json"]), o);
            case "ls": return Ls(Args.Parse(rest, [], ["--json"]), o);
            case "stat": return Stat(Args.Parse(rest, [], ["--json"]), o);
            case "cat": return Cat(Args.Parse(rest, ["--blob-dir"], []), o, binaryOut);
            case "unpack": return Unpack(Args.Parse(rest, ["--blob-dir"], []), o);
            case "keygen": return KeyGen(Args.Parse(rest, [], []), o);
            case "push": return Registry.RegistryCommands.Push(rest, o, ReferenceEquals(o, Console.Out) && !Console.IsOutputRedirected);
            case "pull": return Registry.RegistryCommands.Pull(rest, o, ReferenceEquals(o, Console.Out) && !Console.IsOutputRedirected);
            case "convert": return Registry.RegistryCommands.Convert(rest, o, ReferenceEquals(o, Console.Out) && !Console.IsOutputRedirected);
            case "bom": return Bom.BomCommand.Run(rest, o, binaryOut);
            default: throw new UsageException($"unknown command '{args[0]}'");
        }
    }

    private static string Need(Args a, int i, string what) => a.Positional.Count > i ? a.Positional[i] : throw new UsageException($"missing {what}");

    private static int Create(Args a, TextWriter o)
    {
        var source = Need(a, 0, "SOURCE (directory, OCI layout directory, or layer tar files)");
        var blobDir = a.Get("--blob-dir") ?? throw new UsageException("create needs --blob-dir DIR");
        var bootstrap = a.Get("--bootstrap") ?? throw new UsageException("create needs --bootstrap FILE");
        ulong buildTime = 0;
        var sde = Environment.GetEnvironmentVariable("SOURCE_DATE_EPOCH");
        if (!string.IsNullOrEmpty(sde) && !ulong.TryParse(sde, out buildTime)) throw new UsageException("SOURCE_DATE_EPOCH is not a number");
        if (string.IsNullOrEmpty(sde)) buildTime = (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var opts = new BuildOptions
        {
            BlobDir = blobDir,
            Bootstrap = bootstrap,
            BuildTime = buildTime,
            FsVersion = a.Get("--fs-version") is { } v ? ParseInt(v, "--fs-version") : 6,
            ChunkSize = a.Get("--chunk-size") is { } cs ? ParseSize(cs) : 1u << 20,
            Compressor = a.Get("--compressor") is { } c ? Wrap(() => Codec.ParseCompressor(c)) : Compressor.Zstd,
            Digester = a.Get("--digester") is { } d ? Wrap(() => Codec.ParseDigester(d)) : Digester.Blake3,
            ChunkDict = a.Get("--chunk-dict") is { } dict ? Registry.ChunkDictArg.Local(dict) : null,
        };
        ApplySignAndPrefetch(a.Get("--sign"), a.Get("--prefetch-files"), opts);
        try { opts.Validate(); } catch (RafsFormatException e) { throw new UsageException(e.Message); }
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var type = a.Get("--type") ?? DetectType(a.Positional);
        BuildResult r;
        switch (type)
        {
            case "dir":
                if (a.Positional.Count > 1) throw new UsageException("--type dir takes one SOURCE");
                r = ImageBuilder.Build(DirectorySource.Load(source), opts);
                break;
            case "oci-layout":
                if (a.Positional.Count > 1) throw new UsageException("--type oci-layout takes one SOURCE");
                using (var oci = OciSource.FromLayout(source)) r = ImageBuilder.Build(oci.Root, opts);
                break;
            case "oci-layers":
                using (var oci = OciSource.FromLayers(a.Positional)) r = ImageBuilder.Build(oci.Root, opts);
                break;
            default:
                throw new UsageException($"--type {type}: expected dir, oci-layout or oci-layers");
        }
        var s = r.Stats;
        if (a.Flags.Contains("--json"))
        {
            o.WriteLine(JsonText.Serialize(new Dictionary<string, object?>
            {
                ["bootstrap"] = r.Bootstrap, ["blob_id"] = r.Blob?.BlobId, ["inodes"] = r.Inodes, ["files"] = s.Files, ["chunks"] = s.Chunks,
                ["unique_chunks"] = s.UniqueChunks, ["dict_chunks"] = s.DictChunks, ["bytes_in"] = s.BytesIn, ["bytes_out"] = s.BytesOut,
                ["dedup_ratio"] = Math.Round(r.DedupRatio, 4), ["root_digest"] = Convert.ToHexStringLower(r.RootDigest), ["seconds"] = sw.Elapsed.TotalSeconds,
            }));
        }
        else
        {
            o.WriteLine($"bootstrap     {r.Bootstrap}");
            o.WriteLine($"blob          {r.Blob?.BlobId ?? "(none: no new chunks)"}");
            o.WriteLine($"inodes        {r.Inodes}");
            o.WriteLine($"files         {s.Files}");
            o.WriteLine($"chunks        {s.Chunks}");
            o.WriteLine($"unique chunks {s.UniqueChunks} (+{s.DictChunks} from chunk dict)");
            o.WriteLine($"bytes in      {s.BytesIn}");
            o.WriteLine($"bytes out     {s.BytesOut}");
            o.WriteLine($"dedup ratio   {r.DedupRatio:F3}");
            o.WriteLine($"root digest   {Convert.ToHexStringLower(r.RootDigest)}");
        }
        return 0;
    }

    /// <summary><c>--sign KEY</c> (sign the bootstrap's Merkle root) and <c>--prefetch-files LIST</c> (one path a line):
    /// the same meaning for create and convert.</summary>
    internal static void ApplySignAndPrefetch(string? signKey, string? prefetchFiles, BuildOptions opts)
    {
        if (signKey is { } k) opts.SigningKey = Signing.LoadKey(k);
        if (prefetchFiles is { } pf) opts.PrefetchFiles = File.ReadAllLines(pf).Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
    }

    private static string DetectType(List<string> sources)
    {
        if (sources.Count == 1 && Directory.Exists(sources[0]))
            return File.Exists(Path.Combine(sources[0], "index.json")) && File.Exists(Path.Combine(sources[0], "oci-layout")) ? "oci-layout" : "dir";
        return "oci-layers";
    }

    internal static T Wrap<T>(Func<T> f)
    {
        try { return f(); } catch (RafsFormatException e) { throw new UsageException(e.Message); }
    }

    internal static int ParseInt(string s, string opt) => int.TryParse(s, out int v) ? v : throw new UsageException($"{opt}: '{s}' is not a number");

    internal static uint ParseSize(string s)
    {
        ulong mul = 1;
        var t = s.Trim().ToUpperInvariant();
        if (t.StartsWith("0X", StringComparison.Ordinal) && ulong.TryParse(t[2..], System.Globalization.NumberStyles.HexNumber, null, out ulong hx)) return (uint)Math.Min(hx, uint.MaxValue);
        if (t.EndsWith('K')) { mul = 1024; t = t[..^1]; }
        else if (t.EndsWith('M')) { mul = 1 << 20; t = t[..^1]; }
        if (!ulong.TryParse(t, out ulong v)) throw new UsageException($"--chunk-size: '{s}' is not a size");
        return (uint)Math.Min(v * mul, uint.MaxValue);
    }

    private static int Check(Args a, TextWriter o)
    {
        var path = Need(a, 0, "BOOTSTRAP");
        byte[]? key = a.Get("--trust-key") is { } k ? Signing.LoadKey(k) : null;
        string? err;
        IReadOnlyList<string> warnings = [];
        try
        {
            using var img = RafsImage.Open(path);
            (err, warnings) = ImageChecker.CheckWithWarnings(img, a.Get("--blob-dir"), key);
        }
        catch (RafsFormatException e)
        {
            err = e.Message;
        }
        if (a.Flags.Contains("--json"))
        {
            o.WriteLine(JsonText.Serialize(new Dictionary<string, object?> { ["ok"] = err is null, ["error"] = err, ["warnings"] = warnings.ToList() }));
            return err is null ? 0 : 1;
        }
        foreach (string w in warnings) Console.Error.WriteLine($"vfs-image: warning: {w}");
        if (err is null) o.WriteLine("OK");
        else Console.Error.WriteLine($"vfs-image: check failed: {err}");
        return err is null ? 0 : 1;
    }

    private static int Inspect(Args a, TextWriter o)
    {
        using var img = RafsImage.Open(Need(a, 0, "BOOTSTRAP"));
        long files = 0, dirs = 0, others = 0;
        foreach (var (_, at) in ImageWalker.Inodes(img))
        {
            if (at.FileType == 0x8000) files++; else if (at.FileType == 0x4000) dirs++; else others++;
        }
        var info = new Dictionary<string, object?>
        {
            ["version"] = (int)img.Version, ["bootstrap_size"] = img.BootstrapSize, ["inodes"] = img.InodeCount, ["root_nid"] = img.RootIno,
            ["chunk_size"] = img.ChunkSize, ["compressor"] = Codec.Name(img.Compressor), ["digester"] = Codec.Name(img.Digester),
            ["flags"] = $"0x{(ulong)img.Flags:x}", ["build_time"] = img.BuildTime, ["files"] = files, ["directories"] = dirs, ["other"] = others,
            ["prefetch"] = img.PrefetchInodes.Count, ["root_digest"] = img.RootDigest is null ? null : Convert.ToHexStringLower(img.RootDigest),
            ["signed"] = img.Signature is not null, ["merkle_version"] = img.MerkleVersion,
            ["blobs"] = img.Blobs.Select(b => new Dictionary<string, object>
            {
                ["index"] = b.Index, ["id"] = b.BlobId, ["chunks"] = b.ChunkCount, ["compressor"] = Codec.Name(b.Compressor),
                ["compressed_size"] = b.CompressedSize, ["uncompressed_size"] = b.UncompressedSize, ["features"] = $"0x{(uint)b.Features:x}",
            }).ToList(),
        };
        if (a.Flags.Contains("--json")) o.WriteLine(JsonText.Serialize(info));
        else
        {
            foreach (var (k, v) in info)
            {
                if (k == "blobs") continue;
                o.WriteLine($"{k,-15} {v}");
            }
            foreach (var b in img.Blobs) o.WriteLine($"blob[{b.Index}]         {b.BlobId} chunks={b.ChunkCount} compressed={b.CompressedSize} uncompressed={b.UncompressedSize}");
        }
        return 0;
    }

    private static (RafsImage Img, ulong Ino) Open(Args a)
    {
        var img = RafsImage.Open(Need(a, 0, "BOOTSTRAP"));
        var path = Need(a, 1, "PATH");
        int rc = ImageWalker.Resolve(img, path, out ulong ino);
        if (rc != 0) { img.Dispose(); throw new RafsFormatException($"'{path}': {(rc == RafsImage.ENOENT ? "no such file or directory" : $"errno {rc}")}"); }
        return (img, ino);
    }

    private static Dictionary<string, object?> AttrJson(string name, RafsAttr at) => new()
    {
        ["name"] = name, ["ino"] = at.Ino, ["mode"] = $"0{Convert.ToString(at.Mode, 8)}", ["nlink"] = at.Nlink, ["uid"] = at.Uid, ["gid"] = at.Gid,
        ["size"] = at.Size, ["rdev"] = at.Rdev, ["mtime"] = at.MtimeSec, ["mtime_nsec"] = at.MtimeNsec,
    };

    private static int Ls(Args a, TextWriter o)
    {
        var (img, ino) = Open(a);
        using (img)
        {
            var rows = new List<Dictionary<string, object?>>();
            img.GetAttr(ino, out var self);
            if (self.FileType != 0x4000) rows.Add(AttrJson(a.Positional[1], self));
            else
            {
                var names = new List<(byte[], ulong)>();
                int rc = img.ReadDir(ino, 0, (n, i, _, _) => { if (!n.SequenceEqual("."u8) && !n.SequenceEqual(".."u8)) names.Add((n.ToArray(), i)); return true; });
                if (rc != 0) throw new RafsFormatException($"readdir failed (errno {rc})");
                foreach (var (n, i) in names)
                {
                    if (img.GetAttr(i, out var at) != 0) throw new RafsFormatException("corrupt inode");
                    rows.Add(AttrJson(Encoding.UTF8.GetString(n), at));
                }
            }
            if (a.Flags.Contains("--json")) o.WriteLine(JsonText.Serialize(rows));
            else foreach (var r in rows) o.WriteLine($"{r["mode"],8} {r["nlink"],3} {r["uid"],5} {r["gid"],5} {r["size"],12} {r["name"]}");
        }
        return 0;
    }

    private static int Stat(Args a, TextWriter o)
    {
        var (img, ino) = Open(a);
        using (img)
        {
            img.GetAttr(ino, out var at);
            var j = AttrJson(a.Positional[1], at);
            var xs = new List<byte[]>();
            img.ListXattr(ino, xs);
            j["xattrs"] = xs.ToDictionary(x => Encoding.UTF8.GetString(x), x => { img.GetXattr(ino, x, out var v); return Convert.ToBase64String(v); });
            if (at.FileType == 0xA000 && img.ReadLink(ino, out var t) == 0) j["target"] = Encoding.UTF8.GetString(t);
            var d = img.GetInodeDigest((uint)at.Ino);
            if (!d.IsEmpty) j["digest"] = Convert.ToHexStringLower(d);
            if (a.Flags.Contains("--json")) o.WriteLine(JsonText.Serialize(j));
            else foreach (var (k, v) in j) o.WriteLine($"{k,-10} {(v is Dictionary<string, string> dd ? string.Join(", ", dd.Keys) : v)}");
        }
        return 0;
    }

    private static int Cat(Args a, TextWriter o, Stream? binaryOut)
    {
        var (img, ino) = Open(a);
        using (img)
        {
            var blobDir = a.Get("--blob-dir") ?? Path.GetDirectoryName(Path.GetFullPath(a.Positional[0]))!;
            using var store = new BlobStore(img, blobDir);
            o.Flush();
            using var stdout = binaryOut is null ? Console.OpenStandardOutput() : null;
            var err = store.CopyFile(ino, new NonSeekable(binaryOut ?? stdout!), verify: true);
            if (err is not null) throw new RafsFormatException(err);
        }
        return 0;
    }

    private static int Unpack(Args a, TextWriter o)
    {
        using var img = RafsImage.Open(Need(a, 0, "BOOTSTRAP"));
        var dir = Need(a, 1, "DIR");
        var blobDir = a.Get("--blob-dir") ?? Path.GetDirectoryName(Path.GetFullPath(a.Positional[0]))!;
        Unpacker.Unpack(img, blobDir, dir);
        return 0;
    }

    /// <summary>Forces zero runs to be written (cat must not seek over holes on a pipe or a file).</summary>
    private sealed class NonSeekable(Stream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
        public override void Write(ReadOnlySpan<byte> buffer) => inner.Write(buffer);
    }

    private static int KeyGen(Args a, TextWriter o)
    {
        var prefix = Need(a, 0, "KEY path prefix");
        var (priv, pub) = Signing.Generate();
        File.WriteAllText(prefix, Convert.ToHexStringLower(priv) + "\n");
        File.WriteAllText(prefix + ".pub", Convert.ToHexStringLower(pub) + "\n");
        o.WriteLine($"wrote {prefix} and {prefix}.pub");
        return 0;
    }
}
