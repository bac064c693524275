using System.Text;
using VirtioFs.Oci;

namespace VirtioFs.Fuzz;

/// <summary>
/// What a registry sends the image resolver and the converter: manifests, indexes, image configs (JSON) and the
/// bootstrap layer (a gzip'd tar). The first byte picks the parser, the rest is the document. Bad documents are
/// <see cref="InvalidDataException"/> (OciJson, OciImageConfig, NydusImage document that); anything else escaping is a
/// finding.
/// </summary>
public sealed class OciTarget : IFuzzTarget
{
    private const string Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    public string Name => "oci";

    public int MaxInput => 256 * 1024;

    private enum Parser : byte
    {
        Manifest,
        Index,
        Config,
        Sniff,
        ConfigForNydus,
        BootstrapLayer,
    }

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        var blob = NydusImage.BlobLayer(Digest[7..], 1234);
        var boot = new OciDescriptor(OciMediaTypes.LayerTarGzip, Digest, 99,
            new Dictionary<string, string> { [OciMediaTypes.AnnotationNydusBootstrap] = "true", [OciMediaTypes.AnnotationNydusFsVersion] = "6" });
        var config = new OciDescriptor(OciMediaTypes.ImageConfig, Digest, 321);
        byte[] manifest = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest, config, [blob, boot], null));
        var platform = new OciPlatform("linux", "amd64");
        byte[] index = OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex,
        [
            new OciDescriptor(OciMediaTypes.ImageManifest, Digest, 500, null, platform),
            new OciDescriptor(OciMediaTypes.ImageManifest, Digest, 501, null, NydusImage.NydusPlatform(platform)),
            new OciDescriptor(OciMediaTypes.ImageManifest, Digest, 502, null, new OciPlatform("linux", "arm64", "v8")),
        ]));
        byte[] imageConfig = Encoding.UTF8.GetBytes(
            "{\"created\":\"2024-01-02T03:04:05Z\",\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"],"
            + "\"Entrypoint\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" + Digest + "\"]},\"history\":[{\"created_by\":\"x\"}]}");
        yield return ("manifest", [(byte)Parser.Manifest, .. manifest]);
        yield return ("index", [(byte)Parser.Index, .. index]);
        yield return ("config", [(byte)Parser.Config, .. imageConfig]);
        yield return ("sniff-index", [(byte)Parser.Sniff, .. index]);
        yield return ("config-for-nydus", [(byte)Parser.ConfigForNydus, .. imageConfig]);
        string tmp = Path.Combine(Path.GetTempPath(), $"vfs-fuzz-boot-{Environment.ProcessId}");
        try
        {
            File.WriteAllBytes(tmp, Encoding.ASCII.GetBytes("a small bootstrap stand-in"));
            yield return ("bootstrap-layer", [(byte)Parser.BootstrapLayer, .. NydusImage.CreateBootstrapLayer(tmp).Compressed]);
        }
        finally
        {
            File.Delete(tmp);
        }
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        if (input.IsEmpty)
        {
            return;
        }
        byte[] body = input[1..].ToArray();
        try
        {
            switch ((Parser)(input[0] % 6))
            {
                case Parser.Manifest:
                {
                    OciManifest m = OciJson.ParseManifest(body);
                    _ = NydusImage.FindBootstrap(m);
                    _ = NydusImage.FindBlobs(m).Count();
                    _ = OciJson.WriteManifest(m);
                    break;
                }
                case Parser.Index:
                {
                    OciIndex index = OciJson.ParseIndex(body);
                    _ = OciJson.SelectPlatform(index, new OciPlatform("linux", "amd64"));
                    _ = OciJson.SelectPlatform(index, new OciPlatform("linux", "arm64", "v8"), preferFeature: null);
                    _ = OciJson.WriteIndex(index);
                    break;
                }
                case Parser.Config:
                    _ = OciImageConfig.Parse(body).Platform;
                    break;
                case Parser.Sniff:
                {
                    string mediaType = OciJson.SniffMediaType(body);
                    _ = OciJson.IsIndex(mediaType) || OciJson.IsManifest(mediaType);
                    break;
                }
                case Parser.ConfigForNydus:
                    OciImageConfig.Parse(OciImageConfig.ForNydus(body, [Digest]));
                    break;
                default:
                {
                    using var layer = new MemoryStream(body, writable: false);
                    // gzip expands at most about 1032:1 (deflate's limit); more means the extractor invented bytes.
                    using var output = new CappedStream(1100L * body.Length + 4096);
                    NydusImage.ExtractBootstrap(layer, output);
                    break;
                }
            }
        }
        catch (InvalidDataException)
        {
            // The documented refusal.
        }
    }

    public void Dispose()
    {
    }

    /// <summary>Counts what the extractor writes and keeps none of it.</summary>
    private sealed class CappedStream(long cap) : Stream
    {
        private long _length;

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count)
        {
            _length += count;
            if (_length > cap)
            {
                throw new FuzzFailure($"bootstrap layer expanded past {cap} bytes");
            }
        }
    }
}
