using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Reader;
using Xunit;

namespace VirtioFs.Rafs.Tests;

public sealed class OciTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.FromUnixTimeSeconds(1_650_000_000);

    private sealed class Layer
    {
        private readonly MemoryStream _ms = new();
        private readonly TarWriter _w;
        public Layer() => _w = new TarWriter(_ms, TarEntryFormat.Pax, leaveOpen: true);

        public Layer Dir(string name, int mode = 0x1ED)
        {
            _w.WriteEntry(new PaxTarEntry(TarEntryType.Directory, name) { Mode = (UnixFileMode)mode, ModificationTime = T0 });
            return this;
        }

        public Layer File(string name, string content, Dictionary<string, string>? pax = null, int uid = 0)
        {
            var e = pax is null ? new PaxTarEntry(TarEntryType.RegularFile, name) : new PaxTarEntry(TarEntryType.RegularFile, name, pax);
            e.Mode = (UnixFileMode)0x1A4;
            e.Uid = uid;
            e.ModificationTime = pax is not null && pax.TryGetValue("mtime", out var mt)
                ? DateTimeOffset.UnixEpoch.AddTicks((long)(decimal.Parse(mt, System.Globalization.CultureInfo.InvariantCulture) * TimeSpan.TicksPerSecond))
                : T0;
            e.DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content));
            _w.WriteEntry(e);
            return this;
        }

        public Layer Link(TarEntryType t, string name, string target)
        {
            _w.WriteEntry(new PaxTarEntry(t, name) { LinkName = target, Mode = (UnixFileMode)0x1FF, ModificationTime = T0 });
            return this;
        }

        public Layer Dev(string name, int major, int minor)
        {
            _w.WriteEntry(new PaxTarEntry(TarEntryType.CharacterDevice, name) { DeviceMajor = major, DeviceMinor = minor, Mode = (UnixFileMode)0x1B6, ModificationTime = T0 });
            return this;
        }

        public byte[] Tar()
        {
            _w.Dispose();
            return _ms.ToArray();
        }

        public byte[] Gzip()
        {
            var raw = Tar();
            var o = new MemoryStream();
            using (var g = new GZipStream(o, CompressionLevel.Fastest, leaveOpen: true)) g.Write(raw);
            return o.ToArray();
        }

        public byte[] Zstd()
        {
            using var c = new ZstdSharp.Compressor(3);
            return c.Wrap(Tar()).ToArray();
        }
    }

    private static (RafsImage Img, string Out) BuildFrom(OciSource src)
    {
        var outDir = TreeFixture.TempDir("oci-out");
        var r = ImageBuilder.Build(src.Root, new BuildOptions { BlobDir = outDir, Bootstrap = Path.Combine(outDir, "bootstrap"), BuildTime = 1 });
        return (RafsImage.Open(r.Bootstrap), outDir);
    }

    private static List<string> Paths(RafsImage img) => ImageWalker.Walk(img).Skip(1).Select(x => "/" + Encoding.UTF8.GetString(x.Path)).OrderBy(s => s, StringComparer.Ordinal).ToList();

    private static string Cat(RafsImage img, string outDir, string path)
    {
        Assert.Equal(0, ImageWalker.Resolve(img, path, out var ino));
        using var store = new BlobStore(img, outDir);
        var ms = new MemoryStream();
        Assert.Null(store.CopyFile(ino, ms, verify: true));
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    private static string[] WriteLayers(params byte[][] layers)
    {
        var dir = TreeFixture.TempDir("layers");
        return layers.Select((l, i) => { var p = Path.Combine(dir, $"layer{i}"); File.WriteAllBytes(p, l); return p; }).ToArray();
    }

    [Fact]
    public void Layers_flatten_with_whiteouts_and_opaque_directories()
    {
        var l1 = new Layer()
            .Dir("etc/").File("etc/keep", "keep-1").File("etc/gone", "gone")
            .Dir("var/").Dir("var/cache/").File("var/cache/a", "a").File("var/cache/b", "b")
            .File("bin/tool", "v1")
            .Gzip();
        var l2 = new Layer()
            .File("etc/.wh.gone", "")
            .Dir("var/cache/").File("var/cache/.wh..wh..opq", "").File("var/cache/c", "c-new")
            .File("bin/tool", "v2", new Dictionary<string, string> { ["SCHILY.xattr.user.origin"] = "layer2", ["mtime"] = "1650000000.123456789" }, uid: 1000)
            .Link(TarEntryType.SymbolicLink, "bin/alias", "tool")
            .Link(TarEntryType.HardLink, "bin/hard", "bin/tool")
            .Dev("dev/null", 1, 3)
            .Zstd();
        var l3 = new Layer().File("etc/.wh.keep", "").File("etc/keep", "keep-3").Tar();

        using var src = OciSource.FromLayers(WriteLayers(l1, l2, l3));
        var (img, outDir) = BuildFrom(src);
        using (img)
        {
            Assert.Equal(new[] { "/bin", "/bin/alias", "/bin/hard", "/bin/tool", "/dev", "/dev/null", "/etc", "/etc/keep", "/var", "/var/cache", "/var/cache/c" }, Paths(img));
            Assert.Equal("v2", Cat(img, outDir, "/bin/tool"));
            Assert.Equal("c-new", Cat(img, outDir, "/var/cache/c"));
            Assert.Equal("keep-3", Cat(img, outDir, "/etc/keep"));
            Assert.Equal(0, ImageWalker.Resolve(img, "/bin/tool", out var tool));
            Assert.Equal(0, ImageWalker.Resolve(img, "/bin/hard", out var hard));
            Assert.Equal(tool, hard);
            Assert.Equal(0, img.GetAttr(tool, out var a));
            Assert.Equal(2u, a.Nlink);
            Assert.Equal(1000u, a.Uid);
            Assert.Equal(1_650_000_000L, a.MtimeSec);
            Assert.Equal(123_456_700u, a.MtimeNsec);   // .NET's TarWriter keeps 100 ns ticks
            Assert.Equal(0, img.GetXattr(tool, "user.origin"u8, out var v));
            Assert.Equal("layer2"u8.ToArray(), v);
            Assert.Equal(0, ImageWalker.Resolve(img, "/dev/null", out var dn));
            Assert.Equal(0, img.GetAttr(dn, out var da));
            Assert.Equal(0x2000u, da.FileType);
            Assert.Equal(TreeFixture.MakeDev(1, 3), da.Rdev);
            Assert.Equal(0, ImageWalker.Resolve(img, "/bin/alias", out var al));
            Assert.Equal(0, img.ReadLink(al, out var t));
            Assert.Equal("tool"u8.ToArray(), t);
            Assert.Null(ImageChecker.Check(img, outDir, null));
        }
    }

    [Fact]
    public void Opaque_directory_keeps_entries_added_by_the_same_layer()
    {
        var l1 = new Layer().Dir("d/").File("d/old", "old").Tar();
        var l2 = new Layer().Dir("d/").File("d/new", "new").File("d/.wh..wh..opq", "").Tar();
        using var src = OciSource.FromLayers(WriteLayers(l1, l2));
        var (img, _) = BuildFrom(src);
        using (img) Assert.Equal(new[] { "/d", "/d/new" }, Paths(img));
    }

    [Fact]
    public void Oci_image_layout_directory_is_read_through_index_and_manifest()
    {
        var dir = TreeFixture.TempDir("layout");
        Directory.CreateDirectory(Path.Combine(dir, "blobs/sha256"));
        string Put(byte[] b)
        {
            var h = Convert.ToHexStringLower(SHA256.HashData(b));
            File.WriteAllBytes(Path.Combine(dir, "blobs/sha256", h), b);
            return "sha256:" + h;
        }
        var l1 = Put(new Layer().File("a", "one").File("b", "b").Gzip());
        var l2 = Put(new Layer().File(".wh.b", "").File("a", "two").Gzip());
        var config = Put("{}"u8.ToArray());
        var manifest = Encoding.UTF8.GetBytes($$"""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
             "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{{config}}","size":2},
             "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{{l1}}","size":1},
                       {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{{l2}}","size":1}]}
            """);
        var m = Put(manifest);
        File.WriteAllText(Path.Combine(dir, "index.json"), $$"""{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{{m}}","size":{{manifest.Length}}}]}""");
        File.WriteAllText(Path.Combine(dir, "oci-layout"), """{"imageLayoutVersion":"1.0.0"}""");
        using var src = OciSource.FromLayout(dir);
        var (img, outDir) = BuildFrom(src);
        using (img)
        {
            Assert.Equal(new[] { "/a" }, Paths(img));
            Assert.Equal("two", Cat(img, outDir, "/a"));
        }
    }

    [Fact]
    public void Layer_escaping_the_root_is_rejected_by_name()
    {
        var bad = new Layer().File("../evil", "x").Tar();
        var e = Assert.Throws<RafsFormatException>(() => OciSource.FromLayers(WriteLayers(bad)).Dispose());
        Assert.Contains("..", e.Message);
    }

    [Fact]
    public void Garbage_layer_is_a_named_error()
    {
        var e = Assert.Throws<RafsFormatException>(() => OciSource.FromLayers(WriteLayers([0x1F, 0x8B, 1, 2, 3, 4, 5])).Dispose());
        Assert.Contains("layer0", e.Message);
    }
}
