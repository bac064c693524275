using System.Text.Json;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// convert --platform all / a comma list: each platform of the two-platform source index becomes a nydus manifest,
/// merged with the source index's entries into one index (nydusify --merge-platform, contrib/nydusify/cmd/nydusify.go:
/// "an OCI image index with both OCI and Nydus manifests"), pushed to Debian's docker-registry.
/// </summary>
public sealed partial class ConvertTests
{
    /// <summary>Checks the merged index at <paramref name="repo"/>:<paramref name="tag"/>: the source's two entries
    /// first and unchanged (and present in that repository), then a nydus manifest per platform; pulls and unpacks both.</summary>
    private static async Task AssertMerged(RegistryServer server, string repo, string tag, SourceImage img)
    {
        using var c = new RegistryClient(server.Options(repo));
        var idx = OciJson.ParseIndex((await c.GetManifestAsync(tag)).Body);
        var source = OciJson.ParseIndex(img.Index);
        Assert.Equal(4, idx.Manifests.Count);
        Assert.Equal(source.Annotations, idx.Annotations); // the index's own annotations are kept too
        Assert.NotNull(idx.Annotations);
        Assert.Equal(source.Manifests.Select(m => (m.Digest, m.Platform!.ToString())), idx.Manifests.Take(2).Select(m => (m.Digest, m.Platform!.ToString())));
        foreach (var kept in idx.Manifests.Take(2))
        {
            Assert.Null(kept.Platform!.OsFeatures);
            Assert.Equal(img.Blobs[kept.Digest], (await c.GetManifestAsync(kept.Digest)).Body); // the index's manifests are in this repository
        }
        Assert.Equal(["linux/amd64", "linux/arm64"], idx.Manifests.Skip(2).Select(m => m.Platform!.ToString()).Order(StringComparer.Ordinal)); // in --platform's order
        Assert.All(idx.Manifests.Skip(2), m => Assert.Equal([OciMediaTypes.NydusRemoteImageFeature], m.Platform!.OsFeatures));
        foreach (var m in idx.Manifests.Skip(2))
            Assert.NotNull(NydusImage.FindBootstrap(OciJson.ParseManifest((await c.GetManifestAsync(m.Digest)).Body)));
        // pull (like vfsd --image) picks the nydus entry of each platform.
        AssertTree(PullTree(server, $"{repo}:{tag}", "linux/amd64"), Expected());
        AssertTree(PullTree(server, $"{repo}:{tag}", "linux/arm64"), new() { ["late.txt"] = "late\n"u8.ToArray() });
    }

    [SkippableFact]
    public async Task Convert_of_several_platforms_merges_one_nydus_manifest_per_platform_into_the_source_index()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        using var server = RegistryServer.Start();
        var img = MakeImage();
        await PushSource(server, "src/multi", "v1", img);

        // All platforms, into another repository of the same registry: the source's manifests and blobs are copied
        // there (blobs mounted from the source repository), as the registry needs for the index.
        using (var doc = Convert_(out _, $"{server.Host}/src/multi:v1", $"{server.Host}/dst/multi:v1", "--platform", "all", "--chunk-size", "64K"))
        {
            var r = doc.RootElement;
            Assert.Equal(2, r.GetProperty("kept_entries").GetInt32());
            Assert.Equal(["linux/amd64", "linux/arm64"], r.GetProperty("platforms").EnumerateArray().Select(p => p.GetProperty("platform").GetString()));
            Assert.Equal([3, 1], r.GetProperty("platforms").EnumerateArray().Select(p => p.GetProperty("source_layers").GetInt32()));
        }
        await AssertMerged(server, "dst/multi", "v1", img);

        // A list, from an OCI layout, into a third repository: the kept entries' blobs are uploaded from the layout.
        var (code, text) = Cli.Run("convert", "oci:" + WriteLayout(img), $"{server.Host}/layout/multi:v1", "--platform", "linux/arm64,linux/amd64", "--chunk-size", "64K");
        Assert.True(code == 0, text);
        Assert.Contains("2 nydus manifests beside the source index's 2 entries", text);
        await AssertMerged(server, "layout/multi", "v1", img);

        // Into the source repository itself: nothing to copy; the same merged index under a new tag.
        (code, text) = Cli.Run("convert", $"{server.Host}/src/multi:v1", $"{server.Host}/src/multi:v1-nydus", "--platform", "all", "--chunk-size", "64K");
        Assert.True(code == 0, text);
        Assert.DoesNotContain("copy ", text);
        await AssertMerged(server, "src/multi", "v1-nydus", img);

        // A platform the index lacks fails before any layer is fetched or anything tagged; a repeated or malformed one is a usage error.
        (code, text) = Cli.Run("convert", $"{server.Host}/src/multi:v1", $"{server.Host}/dst/multi:bad", "--platform", "linux/amd64,linux/s390x", "--chunk-size", "64K");
        Assert.Equal(1, code);
        Assert.Contains("no image for linux/s390x", text);
        Assert.DoesNotContain("fetched", text);
        using (var c = new RegistryClient(server.Options("dst/multi")))
            await Assert.ThrowsAsync<RegistryException>(() => c.GetManifestAsync("bad"));
        Assert.Equal(2, Cli.Run("convert", $"{server.Host}/src/multi:v1", $"{server.Host}/dst/multi:x", "--platform", "linux/amd64,linux/amd64").Code);
        Assert.Equal(2, Cli.Run("convert", $"{server.Host}/src/multi:v1", $"{server.Host}/dst/multi:x", "--platform", "linux/amd64,arm64").Code);
        // The merged index still serves OCI clients: converting it again takes the source's OCI entry, not the nydus one.
        using (var doc = Convert_(out _, $"{server.Host}/dst/multi:v1", $"{server.Host}/dst/multi:again", "--platform", "linux/amd64", "--chunk-size", "64K"))
            Assert.Equal(img.AmdManifest, doc.RootElement.GetProperty("source_manifest").GetString());
    }
}
