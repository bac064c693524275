using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace VirtioFs.Rafs.Builder;

/// <summary>
/// Flattens OCI image layers (tar, tar+gzip, tar+zstd; OCI image-spec layer.md) into one build tree: layers
/// apply in order, a `.wh.NAME` entry deletes NAME from lower layers, and `.wh..wh..opq` hides every lower-layer
/// entry of its directory. File contents are spooled to one temporary file the tree then points into.
/// Also reads an OCI image layout directory (image-layout.md: index.json -> manifest -> layers).
/// </summary>
public sealed class OciSource : IDisposable
{
    private const string WhPrefix = ".wh.";
    private const string Opaque = ".wh..wh..opq";
    private readonly FileStream _spool;
    private HashSet<BuildEntry> _thisLayer = new(ReferenceEqualityComparer.Instance);

    public BuildInode Root { get; } = BuildInode.NewDir();
    public string SpoolPath { get; }

    public OciSource(string? spoolDir = null)
    {
        SpoolPath = Path.Combine(spoolDir ?? Path.GetTempPath(), $"vfs-spool-{Environment.ProcessId}-{Guid.NewGuid():N}");
        _spool = new FileStream(SpoolPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read, 1 << 20, FileOptions.DeleteOnClose);
    }

    public void Dispose() => _spool.Dispose();

    /// <summary>Flushes spooled file contents so the builder can read them (after the last <see cref="ApplyTar"/>).</summary>
    public void Flush() => _spool.Flush();

    /// <summary>Bytes of file contents spooled so far (every layer's regular files, overwritten ones included).</summary>
    public long SpooledBytes => _spool.Position;

    /// <summary>Applies layer files in order (bottom first); compression is detected from magic bytes.</summary>
    public static OciSource FromLayers(IEnumerable<string> layers)
    {
        var s = new OciSource();
        try
        {
            foreach (var l in layers)
            {
                using var f = File.OpenRead(l);
                s.ApplyLayer(f, l);
            }
            s._spool.Flush();
            return s;
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>Reads an OCI image layout (as `skopeo copy ... oci:DIR` or umoci leave it).</summary>
    public static OciSource FromLayout(string dir) => FromLayers(LayoutLayers(dir));

    public static List<string> LayoutLayers(string dir)
    {
        var index = ReadJson(Path.Combine(dir, "index.json"), "index.json");
        var desc = PickManifest(dir, index, depth: 0);
        var manifest = ReadJson(BlobPath(dir, desc), "manifest");
        if (!manifest.TryGetProperty("layers", out var layers) || layers.ValueKind != JsonValueKind.Array)
            throw new RafsFormatException("OCI manifest has no layers array");
        var list = new List<string>();
        foreach (var l in layers.EnumerateArray()) list.Add(BlobPath(dir, l));
        return list;
    }

    private static JsonElement PickManifest(string dir, JsonElement index, int depth)
    {
        if (depth > 4) throw new RafsFormatException("OCI index nesting deeper than 4");
        if (!index.TryGetProperty("manifests", out var ms) || ms.ValueKind != JsonValueKind.Array || ms.GetArrayLength() == 0)
            throw new RafsFormatException("OCI index.json lists no manifests");
        JsonElement chosen = ms[0];
        foreach (var m in ms.EnumerateArray())
        {
            if (m.TryGetProperty("platform", out var p) && p.TryGetProperty("architecture", out var a) && a.GetString() == "amd64") { chosen = m; break; }
        }
        var mt = chosen.TryGetProperty("mediaType", out var t) ? t.GetString() : null;
        if (mt is "application/vnd.oci.image.index.v1+json" or "application/vnd.docker.distribution.manifest.list.v2+json")
            return PickManifest(dir, ReadJson(BlobPath(dir, chosen), "nested index"), depth + 1);
        return chosen;
    }

    private static string BlobPath(string dir, JsonElement desc)
    {
        var digest = desc.TryGetProperty("digest", out var d) ? d.GetString() : null;
        if (digest is null || digest.IndexOf(':') is var c && c <= 0) throw new RafsFormatException("OCI descriptor without a digest");
        var alg = digest[..c];
        var hex = digest[(c + 1)..];
        if (alg.Contains('/') || hex.Contains('/') || hex.Contains("..", StringComparison.Ordinal)) throw new RafsFormatException($"OCI digest '{digest}' is not a plain name");
        var p = Path.Combine(dir, "blobs", alg, hex);
        if (!File.Exists(p)) throw new RafsFormatException($"OCI blob {digest} missing from the layout");
        return p;
    }

    private static JsonElement ReadJson(string path, string what)
    {
        if (!File.Exists(path)) throw new RafsFormatException($"OCI {what} not found at {path}");
        if (new FileInfo(path).Length > 4 << 20) throw new RafsFormatException($"OCI {what} larger than 4 MiB");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new RafsFormatException($"OCI {what} is not valid JSON: {e.Message}", e);
        }
    }

    private static Stream Decompress(Stream s)
    {
        var buf = new BufferedStream(s, 1 << 16);
        // Peek the first bytes (layer media types are not trusted; the magic decides).
        var peek = new byte[4];
        int n = 0;
        while (n < 4)
        {
            int r = buf.Read(peek, n, 4 - n);
            if (r <= 0) break;
            n += r;
        }
        buf.Seek(-n, SeekOrigin.Current);
        if (n >= 2 && peek[0] == 0x1F && peek[1] == 0x8B) return new GZipStream(buf, CompressionMode.Decompress);
        if (n == 4 && peek[0] == 0x28 && peek[1] == 0xB5 && peek[2] == 0x2F && peek[3] == 0xFD) return new ZstdSharp.DecompressionStream(buf);
        return buf;
    }

    /// <summary>Applies one layer stream on top of the tree; compression is detected from magic bytes (needs a seekable stream).</summary>
    public void ApplyLayer(Stream layer, string name = "layer")
    {
        using var data = Decompress(layer);
        ApplyTar(data, name);
    }

    /// <summary>
    /// Applies one already decompressed tar stream on top of the tree (the caller decompressed it by media type and
    /// may wrap it to cap or hash it). The stream is left open; it need not be seekable. A stream that is not a tar
    /// gives a <see cref="RafsFormatException"/> naming <paramref name="name"/>.
    /// </summary>
    public void ApplyTar(Stream tarStream, string name = "layer")
    {
        _thisLayer = new(ReferenceEqualityComparer.Instance);
        using var tar = new TarReader(tarStream, leaveOpen: true);
        try
        {
            TarEntry? e;
            while ((e = tar.GetNextEntry(copyData: false)) is not null) Apply(e);
        }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or EndOfStreamException or ZstdSharp.ZstdException)
        {
            throw new RafsFormatException($"{name}: not a valid tar stream ({ex.Message})", ex);
        }
    }

    private static string[] Split(string path)
    {
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries).Where(p => p != ".").ToArray();
        if (parts.Any(p => p == "..")) throw new RafsFormatException($"tar entry '{path}' escapes the root with '..'");
        return parts;
    }

    private BuildInode EnsureDir(string[] parts, int count)
    {
        var cur = Root;
        for (int i = 0; i < count; i++)
        {
            var name = Encoding.UTF8.GetBytes(parts[i]);
            var e = BuildTree.Find(cur, name);
            if (e is null || !e.Inode.IsDir)
            {
                if (e is not null) cur.Children!.Remove(e);
                e = new BuildEntry(name, BuildInode.NewDir());
                cur.Children!.Add(e);
                _thisLayer.Add(e);
            }
            cur = e.Inode;
        }
        return cur;
    }

    private void Apply(TarEntry e)
    {
        var parts = Split(e.Name);
        if (parts.Length == 0)
        {
            if (e.EntryType == TarEntryType.Directory) SetAttrs(Root, e);
            return;
        }
        var baseName = parts[^1];
        var parent = EnsureDir(parts, parts.Length - 1);
        if (baseName == Opaque)
        {
            parent.Children!.RemoveAll(c => !_thisLayer.Contains(c));
            return;
        }
        if (baseName.StartsWith(WhPrefix, StringComparison.Ordinal))
        {
            var victim = Encoding.UTF8.GetBytes(baseName[WhPrefix.Length..]);
            var v = BuildTree.Find(parent, victim);
            if (v is not null) parent.Children!.Remove(v);
            return;
        }
        var nameBytes = Encoding.UTF8.GetBytes(baseName);
        BuildTree.ValidateName(nameBytes);
        var existing = BuildTree.Find(parent, nameBytes);
        BuildInode node;
        switch (e.EntryType)
        {
            case TarEntryType.Directory:
                if (existing is not null && existing.Inode.IsDir)
                {
                    SetAttrs(existing.Inode, e);
                    return;
                }
                node = BuildInode.NewDir();
                break;
            case TarEntryType.HardLink:
                var target = Resolve(Split(e.LinkName)) ?? throw new RafsFormatException($"tar hard link '{e.Name}' -> '{e.LinkName}': target not found");
                if (target.IsDir) throw new RafsFormatException($"tar hard link '{e.Name}' names a directory");
                Put(parent, existing, nameBytes, target);
                return;
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                node = new BuildInode();
                long off = _spool.Position;
                long len = 0;
                if (e.DataStream is not null)
                {
                    e.DataStream.CopyTo(_spool, 1 << 20);
                    len = _spool.Position - off;
                }
                node.Size = (ulong)len;
                node.Data = new FileData(SpoolPath, off, len);
                break;
            case TarEntryType.SymbolicLink:
                node = new BuildInode { SymlinkTarget = Encoding.UTF8.GetBytes(e.LinkName) };
                node.Size = (ulong)node.SymlinkTarget.Length;
                break;
            case TarEntryType.CharacterDevice or TarEntryType.BlockDevice:
                node = new BuildInode();
                if (e is PosixTarEntry p) node.Rdev = MakeDev((ulong)p.DeviceMajor, (ulong)p.DeviceMinor);
                break;
            case TarEntryType.Fifo:
                node = new BuildInode();
                break;
            default:
                return; // global/extended headers are consumed by TarReader; others carry no file
        }
        SetAttrs(node, e);
        Put(parent, existing, nameBytes, node);
    }

    private void Put(BuildInode parent, BuildEntry? existing, byte[] name, BuildInode node)
    {
        if (existing is not null) parent.Children!.Remove(existing);
        var entry = new BuildEntry(name, node);
        parent.Children!.Add(entry);
        _thisLayer.Add(entry);
    }

    private BuildInode? Resolve(string[] parts)
    {
        var cur = Root;
        foreach (var p in parts)
        {
            var e = BuildTree.Find(cur, Encoding.UTF8.GetBytes(p));
            if (e is null) return null;
            cur = e.Inode;
        }
        return cur;
    }

    private static ulong MakeDev(ulong major, ulong minor) =>
        (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFFUL) << 12) | ((major & ~0xFFFUL) << 32);

    private static void SetAttrs(BuildInode n, TarEntry e)
    {
        uint type = e.EntryType switch
        {
            TarEntryType.Directory => 0x4000u,
            TarEntryType.SymbolicLink => 0xA000u,
            TarEntryType.CharacterDevice => 0x2000u,
            TarEntryType.BlockDevice => 0x6000u,
            TarEntryType.Fifo => 0x1000u,
            _ => 0x8000u,
        };
        n.Mode = type | ((uint)e.Mode & 0xFFF);
        n.Uid = (uint)e.Uid;
        n.Gid = (uint)e.Gid;
        var mt = e.ModificationTime;
        n.MtimeSec = mt.ToUnixTimeSeconds();
        long ticks = mt.UtcTicks % TimeSpan.TicksPerSecond;
        n.MtimeNsec = (uint)((ticks < 0 ? ticks + TimeSpan.TicksPerSecond : ticks) * 100);
        if (e is PaxTarEntry pax)
        {
            foreach (var (k, v) in pax.ExtendedAttributes)
            {
                if (k == "mtime") ParsePaxTime(v, n);
                else if (k.StartsWith("SCHILY.xattr.", StringComparison.Ordinal))
                    n.SetXattr(Encoding.UTF8.GetBytes(k["SCHILY.xattr.".Length..]), Encoding.UTF8.GetBytes(v));
                else if (k.StartsWith("LIBARCHIVE.xattr.", StringComparison.Ordinal))
                {
                    try { n.SetXattr(Encoding.UTF8.GetBytes(Uri.UnescapeDataString(k["LIBARCHIVE.xattr.".Length..])), Convert.FromBase64String(v)); }
                    catch (FormatException) { throw new RafsFormatException($"tar entry '{e.Name}': bad LIBARCHIVE.xattr value"); }
                }
            }
        }
    }

    /// <summary>PAX mtime "SECONDS[.FRACTION]" with nanosecond precision (POSIX pax, extended header keywords).</summary>
    private static void ParsePaxTime(string v, BuildInode n)
    {
        int dot = v.IndexOf('.');
        var secPart = dot < 0 ? v : v[..dot];
        if (!long.TryParse(secPart, out long sec)) return;
        uint nsec = 0;
        if (dot >= 0)
        {
            var frac = v[(dot + 1)..];
            if (frac.Length > 9) frac = frac[..9];
            if (frac.Length > 0 && uint.TryParse(frac.PadRight(9, '0'), out uint f)) nsec = f;
            if (sec < 0 && nsec > 0) { sec -= 1; nsec = 1_000_000_000 - nsec; }
        }
        n.MtimeSec = sec;
        n.MtimeNsec = nsec;
    }
}
