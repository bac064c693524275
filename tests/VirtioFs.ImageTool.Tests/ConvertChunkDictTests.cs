using System.Text.Json;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// convert --chunk-dict: a second, similar image converted against the first's bootstrap stores only its changed
/// chunks and references the dictionary's blob, which its manifest lists and the destination repository holds, so
/// pulling and unpacking it gives exactly its tree. The option is spelled as the nydus tools spell it: nydus-image's
/// <c>bootstrap=PATH</c> (builder/src/core/chunk_dict.rs parse_chunk_dict_arg, passed so by nydus-snapshotter
/// pkg/converter/tool/builder.go) and nydusify's <c>bootstrap:registry:REF</c> (contrib/nydusify/pkg/converter/chunk_dict.go).
/// </summary>
public sealed partial class ConvertTests
{
    private static readonly byte[] NewPayload = Random(9, 100_000);

    /// <summary>The second image: the first's layers 1 and 2, and a new layer 3 that changes late.txt and adds new.bin
    /// (100 KB: two 64 KiB chunks), in a single-platform index.</summary>
    private static SourceImage MakeSimilarImage()
    {
        var first = MakeImage();
        var blobs = first.Blobs.Where(kv => !first.Manifests.Contains(kv.Key) && kv.Key != Sha(first.Index)).ToDictionary();
        string Add(byte[] b) { var d = Sha(b); blobs[d] = b; return d; }
        byte[] t1 = Layer1(), t2 = Layer2();
        byte[] t3 = Tar(w => { File_(w, "late.txt", "later\n"u8.ToArray()); File_(w, "new.bin", NewPayload); });
        var layers = new[]
        {
            new OciDescriptor(OciMediaTypes.LayerTarGzip, Sha(Gzip(t1)), Gzip(t1).Length),
            new OciDescriptor("application/vnd.oci.image.layer.v1.tar+zstd", Sha(Zstd(t2)), Zstd(t2).Length),
            new OciDescriptor("application/vnd.oci.image.layer.v1.tar", Add(t3), t3.Length),
        };
        var cfg = Config("amd64", [Sha(t1), Sha(t2), Sha(t3)]);
        var m = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest, new OciDescriptor(OciMediaTypes.ImageConfig, Add(cfg), cfg.Length), layers));
        var index = OciJson.WriteIndex(new OciIndex(OciMediaTypes.ImageIndex,
            [new OciDescriptor(OciMediaTypes.ImageManifest, Add(m), m.Length, Platform: new OciPlatform("linux", "amd64"))]));
        return new SourceImage(blobs, [Sha(m)], index, Sha(m), layers.Select(l => l.Digest).ToArray());
    }

    private static Dictionary<string, byte[]?> ExpectedSimilar()
    {
        var e = Expected();
        e["late.txt"] = "later\n"u8.ToArray();
        e["new.bin"] = NewPayload;
        return e;
    }

    /// <summary>inspect --json of a pulled bootstrap: blob id -> chunk count.</summary>
    private static Dictionary<string, int> Blobs(string bootstrap)
    {
        var (code, text) = Cli.Run("inspect", bootstrap, "--json");
        Assert.True(code == 0, text);
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.GetProperty("blobs").EnumerateArray().ToDictionary(b => b.GetProperty("id").GetString()!, b => b.GetProperty("chunks").GetInt32());
    }

    private static (string Boot, string Tree) PullAndUnpack(RegistryServer server, string reference)
    {
        var tree = PullTree(server, reference);
        return (Path.Combine(Path.GetDirectoryName(tree)!, "boot"), tree);
    }

    [SkippableFact]
    public async Task Convert_with_a_chunk_dict_stores_only_the_changed_chunks_and_reads_back_exactly()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        using var server = RegistryServer.Start();
        await PushSource(server, "src/app", "v1", MakeImage());
        var similar = MakeSimilarImage();
        await PushSource(server, "src/app", "v2", similar);

        // The dictionary: the first image, converted alone.
        string dictBlob;
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v1", $"{server.Host}/dst/app:v1", "--chunk-size", "64K"))
            dictBlob = doc.RootElement.GetProperty("blob").GetString()!;
        var (dictBoot, dictTree) = PullAndUnpack(server, "dst/app:v1");
        AssertTree(dictTree, Expected());
        int dictChunks = Blobs(dictBoot)[dictBlob[7..]];

        // The second image against it, nydusify's spelling, from the registry: only late.txt (1 chunk) and new.bin
        // (2 chunks) are new; every other chunk is the dictionary's, whose blob is already in the repository.
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v2", $"{server.Host}/dst/app:v2", "--chunk-size", "64K",
            "--chunk-dict", $"bootstrap:registry:{server.Host}/dst/app:v1"))
        {
            var r = doc.RootElement;
            Assert.Equal(3, r.GetProperty("unique_chunks").GetInt32());
            Assert.True(r.GetProperty("dict_chunks").GetInt32() >= 9, r.ToString()); // bin/tool 5 + keep/shared.bin 4, at least
            var layers = r.GetProperty("layers").EnumerateArray().ToList();
            Assert.Equal(3, layers.Count); // the dictionary's blob, the new blob, the bootstrap
            Assert.Equal(dictBlob, layers[0].GetProperty("digest").GetString());
            Assert.Equal("already present", layers[0].GetProperty("outcome").GetString());
            Assert.Equal(r.GetProperty("blob").GetString(), layers[1].GetProperty("digest").GetString());
            Assert.Equal("uploaded", layers[1].GetProperty("outcome").GetString());
        }
        var (boot2, tree2) = PullAndUnpack(server, "dst/app:v2");
        AssertTree(tree2, ExpectedSimilar());
        var blobs2 = Blobs(boot2);
        Assert.Equal(2, blobs2.Count);
        Assert.Equal(dictChunks, blobs2[dictBlob[7..]]);
        Assert.Equal(3, blobs2.Single(b => b.Key != dictBlob[7..]).Value); // the new blob holds the changed chunks only

        // Into another repository of the same registry: the dictionary's blob is mounted from its repository.
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v2", $"{server.Host}/other/app:v2", "--chunk-size", "64K",
            "--chunk-dict", $"bootstrap:registry:{server.Host}/dst/app:v1"))
            Assert.Equal("mounted", doc.RootElement.GetProperty("layers")[0].GetProperty("outcome").GetString());
        AssertTree(PullAndUnpack(server, "other/app:v2").Tree, ExpectedSimilar());

        // A dictionary on another registry: its blob is downloaded from there and sent to the destination.
        using (var second = RegistryServer.Start())
        {
            using (var doc = Convert_(out _, $"{server.Host}/src/app:v2", $"{second.Host}/far/app:v2", "--chunk-size", "64K",
                "--chunk-dict", $"bootstrap:registry:{server.Host}/dst/app:v1"))
            {
                Assert.Equal(dictBlob, doc.RootElement.GetProperty("layers")[0].GetProperty("digest").GetString());
                Assert.Equal("uploaded", doc.RootElement.GetProperty("layers")[0].GetProperty("outcome").GetString());
            }
            AssertTree(PullAndUnpack(second, "far/app:v2").Tree, ExpectedSimilar());
        }

        // nydus-image's spelling, a local bootstrap: the blob is in the destination already ...
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v2", $"{server.Host}/dst/app:v2-local", "--chunk-size", "64K", "--chunk-dict", "bootstrap=" + dictBoot))
            Assert.Equal(3, doc.RootElement.GetProperty("unique_chunks").GetInt32());
        AssertTree(PullAndUnpack(server, "dst/app:v2-local").Tree, ExpectedSimilar());
        // ... or beside the bootstrap (as vfs-image cat and unpack look for blobs), and then it is uploaded.
        var beside = Cli.Temp("dict-beside");
        File.Copy(dictBoot, Path.Combine(beside, "dict.boot"));
        File.Copy(Path.Combine(Path.GetDirectoryName(dictBoot)!, "blobs", dictBlob[7..]), Path.Combine(beside, dictBlob[7..]));
        using (var doc = Convert_(out _, $"{server.Host}/src/app:v2", $"{server.Host}/fresh/app:v2", "--chunk-size", "64K", "--chunk-dict", Path.Combine(beside, "dict.boot")))
            Assert.Equal("uploaded", doc.RootElement.GetProperty("layers")[0].GetProperty("outcome").GetString());
        AssertTree(PullAndUnpack(server, "fresh/app:v2").Tree, ExpectedSimilar());
        // Neither: a clear error, nothing tagged.
        var (code, text) = Cli.Run("convert", $"{server.Host}/src/app:v2", $"{server.Host}/empty/app:v2", "--chunk-size", "64K", "--chunk-dict", "bootstrap:local:" + dictBoot);
        Assert.Equal(1, code);
        Assert.Contains($"chunk dict blob {dictBlob[7..]} is neither beside", text);

        // A dictionary whose chunk size differs cannot be used (its chunks would never match).
        (code, text) = Cli.Run("convert", $"{server.Host}/src/app:v2", $"{server.Host}/dst/app:x", "--chunk-dict", "bootstrap=" + dictBoot);
        Assert.Equal(1, code);
        Assert.Contains("chunk size", text);
        Assert.Equal(2, Cli.Run("convert", $"{server.Host}/src/app:v2", $"{server.Host}/dst/app:x", "--chunk-dict", "blobs=" + dictBoot).Code);
        Assert.Equal(2, Cli.Run("convert", $"{server.Host}/src/app:v2", $"{server.Host}/dst/app:x", "--chunk-dict", "bootstrap:ftp:" + dictBoot).Code);
        // create shares the parsing: bootstrap=PATH works there, a registry dictionary is convert's.
        var dir = Cli.Temp("dict-create");
        var tree = Cli.Temp("dict-create-src");
        File.WriteAllBytes(Path.Combine(tree, "tool"), Tool);
        (code, text) = Cli.Run("create", tree, "--bootstrap", Path.Combine(dir, "b"), "--blob-dir", Path.Combine(dir, "blobs"), "--chunk-size", "64K", "--chunk-dict", "bootstrap=" + dictBoot, "--json");
        Assert.True(code == 0, text);
        using (var doc = JsonDocument.Parse(text)) Assert.Equal(5, doc.RootElement.GetProperty("dict_chunks").GetInt32());
        Assert.Equal(2, Cli.Run("create", tree, "--bootstrap", Path.Combine(dir, "b"), "--blob-dir", dir, "--chunk-dict", $"bootstrap:registry:{server.Host}/dst/app:v1").Code);
    }
}
