using System.Text.Json;
using VirtioFs.ImageTool.Tests.Support;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// bom --attach / --fetch through a registry that has the OCI 1.1 Referrers API (distribution-spec v1.1 "Listing
/// Referrers", end-12a/end-12b, and "Pushing Manifests with Subject"): <see cref="ReferrersFront"/> implements that
/// endpoint in front of Debian's docker-registry, which stores everything else. BomRegistryTests covers the tag-schema
/// fallback the bare registry needs.
/// </summary>
[Collection(nameof(ReferrersApiTests))]
public sealed class ReferrersApiTests
{
    // bom writes its progress to Console.Error, which BomRegistryTests redirects to read it: this class runs alone
    // (DisableParallelization) so its lines cannot land in that capture. What went where is read from the front's
    // request log and the registry instead.
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (code, text) = Cli.Run(args);
        return (code, text, "");
    }

    /// <summary>A small image with one npm package, pushed through the front; returns its reference and local blob dir.</summary>
    private static (string Target, string Dir) PushImage(ReferrersFront front, string repo)
    {
        var src = Cli.Temp("referrers-src");
        Directory.CreateDirectory(Path.Combine(src, "app/node_modules/left-pad"));
        File.WriteAllText(Path.Combine(src, "app/node_modules/left-pad/package.json"), """{"name":"left-pad","version":"1.3.0","license":"WTFPL"}""");
        var (boot, blobs) = BomTests.Build(src);
        var target = $"{front.Host}/{repo}:v1";
        var (code, text) = Cli.Run("push", boot, "--blob-dir", blobs, "--target", target);
        Assert.True(code == 0, text);
        return (target, blobs);
    }

    [SkippableFact]
    public void Attach_and_fetch_use_the_referrers_api_its_artifact_type_filter_and_its_pages()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        using var server = RegistryServer.Start();
        using var front = new ReferrersFront(server.Host) { PageSize = 1 };
        var (target, dir) = PushImage(front, "api/app");

        // Attach SPDX then CycloneDX: the registry indexes them itself, so no fallback tag is written.
        var (code, text, err) = Run("bom", target, "--attach", "-o", Path.Combine(dir, "spdx.json"));
        Assert.True(code == 0, text + err);
        (code, text, err) = Run("bom", target, "--attach", "--format", "cyclonedx", "-o", Path.Combine(dir, "cdx.json"));
        Assert.True(code == 0, text + err);
        Assert.DoesNotContain(front.Requests, r => r.StartsWith("PUT /v2/api/app/manifests/sha256-", StringComparison.Ordinal));
        using (var c = new RegistryClient(server.Options("api/app")))
        {
            var subject = OciJson.ParseIndex(c.GetManifestAsync("v1").GetAwaiter().GetResult().Body).Manifests[0].Digest;
            var e = Assert.Throws<RegistryException>(() => c.GetManifestAsync("sha256-" + subject[7..]).GetAwaiter().GetResult());
            Assert.True(e.IsNotFound, e.Message);
            // With one descriptor a page, the second attach found its referrer only by following the Link to page 2.
            Assert.Contains(front.Requests, r => r == $"GET /v2/api/app/referrers/{subject}?page=1");
        }

        // Fetch each format: the registry is asked to filter by artifactType and says it did (OCI-Filters-Applied).
        int before = front.Requests.Count;
        var fetched = Path.Combine(dir, "fetched.cdx.json");
        (code, text, err) = Run("bom", "--fetch", target, "--format", "cyclonedx", "-o", fetched);
        Assert.True(code == 0, text + err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "cdx.json")), File.ReadAllBytes(fetched));
        Assert.Contains(front.Requests.Skip(before), r => r.Contains("/referrers/", StringComparison.Ordinal) && r.EndsWith("?artifactType=application%2Fvnd.cyclonedx%2Bjson", StringComparison.Ordinal));
        (code, text, err) = Run("bom", "--fetch", target, "-o", fetched);
        Assert.True(code == 0, text + err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "spdx.json")), File.ReadAllBytes(fetched));

        // A registry that ignores the filter (no OCI-Filters-Applied) lists SPDX first, page by page: the client
        // filters itself and still returns the CycloneDX document, not the first entry.
        front.ApplyFilter = false;
        (code, text, err) = Run("bom", "--fetch", target, "--format", "cyclonedx", "-o", fetched);
        Assert.True(code == 0, text + err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "cdx.json")), File.ReadAllBytes(fetched));
        using (var doc = JsonDocument.Parse(File.ReadAllBytes(fetched))) Assert.Equal("CycloneDX", doc.RootElement.GetProperty("bomFormat").GetString());

        // An image nothing refers to: the API answers an empty index (never 404), and fetch says nothing is attached.
        var (bare, _) = PushImage(front, "api/bare");
        (code, text, _) = Run("bom", "--fetch", bare);
        Assert.Equal(1, code);
        Assert.Contains("no application/spdx+json or application/vnd.cyclonedx+json document is attached", text, StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task The_client_reads_filter_and_pages_as_the_spec_words_them()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        using var server = RegistryServer.Start();
        using var front = new ReferrersFront(server.Host) { PageSize = 2 };
        var (target, dir) = PushImage(front, "api/pages");
        for (int i = 0; i < 3; i++) Assert.Equal(0, Run("bom", target, "--attach", "--name", $"app{i}", "-o", Path.Combine(dir, $"s{i}.json")).Code);
        Assert.Equal(0, Run("bom", target, "--attach", "--format", "cyclonedx", "-o", Path.Combine(dir, "c.json")).Code);

        using var c = new RegistryClient(server.Options("api/pages", host: front.Host));
        var subject = OciJson.ParseIndex((await c.GetManifestAsync("v1")).Body).Manifests[0].Digest;
        // Four referrers, two a page: both pages read; no filter asked, none claimed.
        var all = await c.ListReferrersAsync(subject);
        Assert.NotNull(all);
        Assert.Equal(2, all.Pages.Count);
        Assert.False(all.FilterApplied);
        Assert.Equal(4, all.Pages.SelectMany(Bom.Referrers.List).Select(d => d.Digest).Distinct().Count());
        // Filtered and said so; then the same request to a registry that ignores the filter.
        var cdx = await c.ListReferrersAsync(subject, "application/vnd.cyclonedx+json");
        Assert.True(cdx!.FilterApplied);
        Assert.Equal(["application/vnd.cyclonedx+json"], cdx.Pages.SelectMany(Bom.Referrers.List).Select(d => d.ArtifactType));
        front.ApplyFilter = false;
        var unfiltered = await c.ListReferrersAsync(subject, "application/vnd.cyclonedx+json");
        Assert.False(unfiltered!.FilterApplied);
        Assert.Equal(4, unfiltered.Pages.SelectMany(Bom.Referrers.List).Count());
        // The bare registry has no API: null, so callers fall back to the tag schema.
        using var bare = new RegistryClient(server.Options("api/pages"));
        Assert.Null(await bare.ListReferrersAsync(subject));
    }
}

/// <summary>Runs <see cref="ReferrersApiTests"/> after the parallel classes, never beside them.</summary>
[CollectionDefinition(nameof(ReferrersApiTests), DisableParallelization = true)]
public sealed class ReferrersApiCollection;
