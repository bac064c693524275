using System.Text.Json;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>vfs-image bom against Debian's docker-registry (distribution 2.8): the BOM of a pushed image built from
/// the bootstrap and only the chunks the catalogers read, and --attach / --fetch through the referrers tag schema
/// (distribution 2.8 has no Referrers API).</summary>
[Collection(BomTests.StderrCollection)]
public sealed class BomRegistryTests
{
    private static (int Code, string Out, string Err) RunWithStderr(params string[] args)
    {
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try
        {
            var (code, text) = Cli.Run(args);
            return (code, text, err.ToString());
        }
        finally { Console.SetError(old); }
    }

    private static string Push(RegistryServer server, string boot, string blobs, string repo)
    {
        var target = $"{server.Host}/{repo}:v1";
        var (code, text) = Cli.Run("push", boot, "--blob-dir", blobs, "--target", target);
        Assert.True(code == 0, text);
        return target;
    }

    [SkippableFact]
    public void Bom_of_a_registry_image_equals_the_local_bom_and_fetches_only_what_the_catalogers_read()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        Skip.IfNot(Directory.Exists(Path.Combine(BomTests.DebianTree, "var/lib/dpkg")), $"no Debian tree at {BomTests.DebianTree}: tests/setup.sh builds it");
        using var server = RegistryServer.Start();
        var (boot, o) = BomTests.Build(BomTests.DebianTree);
        var target = Push(server, boot, o, "bom/debian");
        long blobBytes = Directory.GetFiles(o).Where(f => Path.GetFileName(f).Length == 64).Sum(f => new FileInfo(f).Length);

        // SPDX (every file's content digest): the same document as from the local blobs, every digest from the
        // bootstrap's merkle rows (the files of several chunks too), so only the catalogers' chunks are fetched.
        using (var img = Rafs.Reader.RafsImage.Open(boot))
            Assert.True(Rafs.Reader.ImageWalker.Inodes(img).Count(i => i.Attr.FileType == 0x8000 && i.Attr.Size > img.ChunkSize) >= 5, "the image has files of several chunks");
        using var local = BomTests.Bom(boot, o, "spdx");
        var remoteOut = Path.Combine(o, "remote.json");
        using var proxy = new FaultProxy(server.Port);   // counts the bytes the registry sends bom
        var (rc, rtext, err) = RunWithStderr("bom", target.Replace(server.Host, proxy.Host, StringComparison.Ordinal), "-o", remoteOut);
        Assert.True(rc == 0, rtext + err);
        using var remote = JsonDocument.Parse(File.ReadAllBytes(remoteOut));
        static string Packages(JsonDocument d) => string.Join("\n", d.RootElement.GetProperty("packages").EnumerateArray().Skip(1)
            .Select(p => p.GetProperty("externalRefs")[0].GetProperty("referenceLocator").GetString()));
        static string Files(JsonDocument d) => string.Join("\n", d.RootElement.GetProperty("files").EnumerateArray()
            .Select(f => f.GetProperty("fileName").GetString() + " " + f.GetProperty("checksums")[0].GetProperty("checksumValue").GetString()));
        Assert.Equal(Packages(local), Packages(remote));
        Assert.Equal(Files(local), Files(remote));
        var (spdxFetched, image) = Fetched(err);
        Assert.True(image > blobBytes, $"image size {image} should include the {blobBytes} blob bytes");
        Assert.True(proxy.BytesToClient < blobBytes / 20, $"the proxy passed {proxy.BytesToClient} bytes for {blobBytes} blob bytes:\n{err}");
        Assert.True(spdxFetched <= proxy.BytesToClient, $"bom reports {spdxFetched} bytes, the proxy saw {proxy.BytesToClient}");
        Assert.Contains(" 0 computed from 0 bytes", err, StringComparison.Ordinal);
        Console.WriteLine($"BOM-FIGURE spdx: {err.Trim()} (proxy: {proxy.BytesToClient} bytes of {blobBytes} blob bytes)");

        // Content digests from the bootstrap only: the catalogers' chunks and the bootstrap, under 5% of the image.
        var cdxOut = Path.Combine(o, "remote.cdx.json");
        (rc, rtext, err) = RunWithStderr("bom", target, "--format", "cyclonedx", "--file-digests", "bootstrap", "-o", cdxOut);
        Assert.True(rc == 0, rtext + err);
        var (fetched, image2) = Fetched(err);
        Assert.Equal(image, image2);
        Assert.True(fetched < image / 20, $"fetched {fetched} of {image} bytes:\n{err}");
        Assert.True(fetched <= spdxFetched);
        Console.WriteLine($"BOM-FIGURE cyclonedx --file-digests bootstrap: {err.Trim()}");
        using var cdx = JsonDocument.Parse(File.ReadAllBytes(cdxOut));
        Assert.Equal(Packages(local).Split('\n').Order(StringComparer.Ordinal), cdx.RootElement.GetProperty("components").EnumerateArray()
            .Where(c => c.GetProperty("type").GetString() == "library").Select(c => c.GetProperty("purl").GetString()!).Order(StringComparer.Ordinal));
    }

    [SkippableTheory]
    [InlineData("blake3", "b3sum")]
    [InlineData("sha256", "sha256sum")]
    public void Spdx_of_a_registry_image_of_multi_chunk_files_fetches_under_5_percent_and_matches_the_files(string digester, string tool)
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        Skip.IfNot(BomTests.OnPath(tool), $"{tool} is not installed (tests/setup.sh installs Debian's b3sum)");
        using var server = RegistryServer.Start();
        var src = Cli.Temp("bom-reg-multi");
        var rnd = new Random(21);
        var names = new List<string>();
        for (int i = 0; i < 6; i++)
        {
            var data = new byte[(4 << 20) + i * 4097];   // 5 chunks of the default 1 MiB each, incompressible
            rnd.NextBytes(data);
            File.WriteAllBytes(Path.Combine(src, $"payload{i}.bin"), data);
            names.Add($"/payload{i}.bin");
        }
        var site = Directory.CreateDirectory(Path.Combine(src, "usr/lib/python3/dist-packages/demo-1.0.dist-info")).FullName;
        File.WriteAllText(Path.Combine(site, "METADATA"), "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n");
        names.Add("/usr/lib/python3/dist-packages/demo-1.0.dist-info/METADATA");
        var (boot, o) = BomTests.Build(src, digester);
        var target = Push(server, boot, o, "bom/multi-" + digester);
        long blobBytes = Directory.GetFiles(o).Where(f => Path.GetFileName(f).Length == 64).Sum(f => new FileInfo(f).Length);
        Assert.True(blobBytes > 24L << 20, $"blob bytes {blobBytes}");

        using var proxy = new FaultProxy(server.Port);   // counts every byte the registry sends bom
        var output = Path.Combine(o, "remote.json");
        var (rc, text, err) = RunWithStderr("bom", target.Replace(server.Host, proxy.Host, StringComparison.Ordinal), "-o", output);
        Assert.True(rc == 0, text + err);
        Assert.True(proxy.BytesToClient < blobBytes / 20, $"the proxy passed {proxy.BytesToClient} bytes for {blobBytes} blob bytes:\n{err}");
        Assert.Contains(" 0 computed from 0 bytes", err, StringComparison.Ordinal);
        Console.WriteLine($"BOM-FIGURE multi-chunk {digester}: proxy {proxy.BytesToClient} of {blobBytes} blob bytes; {err.Trim()}");

        using var doc = JsonDocument.Parse(File.ReadAllBytes(output));
        var files = doc.RootElement.GetProperty("files").EnumerateArray().ToDictionary(
            f => f.GetProperty("fileName").GetString()![1..], f => f.GetProperty("checksums")[0].GetProperty("checksumValue").GetString());
        var (code, stdout, serr) = BomTests.Sh(tool, [.. names.Select(n => Path.Join(src, n[1..]))]);
        Assert.True(code == 0, serr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(names.Count, files.Count);
        for (int i = 0; i < names.Count; i++) Assert.Equal(lines[i][..64], files[names[i]]);
        Assert.Contains("pkg:pypi/demo@1.0", doc.RootElement.GetProperty("packages").GetRawText(), StringComparison.Ordinal);
    }

    /// <summary>"fetched N bytes (bootstrap layer B, R chunks C) of an image of S bytes (P%)" from bom's stderr.</summary>
    private static (long Fetched, long Image) Fetched(string err)
    {
        var m = System.Text.RegularExpressions.Regex.Match(err, @"fetched (\d+) bytes \(bootstrap layer (\d+), (\d+) chunks (\d+)\) of an image of (\d+) bytes");
        Assert.True(m.Success, err);
        return (long.Parse(m.Groups[1].Value), long.Parse(m.Groups[5].Value));
    }

    [SkippableFact]
    public void Attach_then_fetch_round_trips_through_the_referrers_tag_schema()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        using var server = RegistryServer.Start();
        var src = Cli.Temp("bom-attach-src");
        Directory.CreateDirectory(Path.Combine(src, "app/node_modules/left-pad"));
        File.WriteAllText(Path.Combine(src, "app/node_modules/left-pad/package.json"), """{"name":"left-pad","version":"1.3.0","license":"WTFPL"}""");
        var (boot, blobs) = BomTests.Build(src);
        var target = Push(server, boot, blobs, "bom/attach");

        var (code, text, err) = RunWithStderr("bom", target, "--attach", "-o", Path.Combine(blobs, "spdx.json"));
        Assert.True(code == 0, text + err);
        Assert.Contains("(tag sha256-", err, StringComparison.Ordinal); // distribution 2.8: no Referrers API, the fallback tag
        (code, text, err) = RunWithStderr("bom", target, "--attach", "--format", "cyclonedx", "-o", Path.Combine(blobs, "cdx.json"));
        Assert.True(code == 0, text + err);

        // The registry holds what the distribution-spec describes: the tag sha256-HEX indexes both referrers.
        using var c = new RegistryClient(server.Options("bom/attach"));
        var index = c.GetManifestAsync("v1").GetAwaiter().GetResult();
        var subject = OciJson.ParseIndex(index.Body).Manifests[0].Digest;
        var referrers = c.GetManifestAsync("sha256-" + subject[7..]).GetAwaiter().GetResult();
        using (var idx = JsonDocument.Parse(referrers.Body))
        {
            Assert.Equal(OciMediaTypes.ImageIndex, idx.RootElement.GetProperty("mediaType").GetString());
            Assert.Equal(["application/spdx+json", "application/vnd.cyclonedx+json"],
                idx.RootElement.GetProperty("manifests").EnumerateArray().Select(m => m.GetProperty("artifactType").GetString()));
            var refManifest = c.GetManifestAsync(idx.RootElement.GetProperty("manifests")[0].GetProperty("digest").GetString()!).GetAwaiter().GetResult();
            using var rm = JsonDocument.Parse(refManifest.Body);
            Assert.Equal(subject, rm.RootElement.GetProperty("subject").GetProperty("digest").GetString());
            Assert.Equal("application/spdx+json", rm.RootElement.GetProperty("artifactType").GetString());
            Assert.Equal("application/vnd.oci.empty.v1+json", rm.RootElement.GetProperty("config").GetProperty("mediaType").GetString());
        }

        var fetchedSpdx = Path.Combine(blobs, "fetched.spdx.json");
        (code, text, err) = RunWithStderr("bom", "--fetch", target, "-o", fetchedSpdx);
        Assert.True(code == 0, text + err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(blobs, "spdx.json")), File.ReadAllBytes(fetchedSpdx));
        var fetchedCdx = Path.Combine(blobs, "fetched.cdx.json");
        (code, text, err) = RunWithStderr("bom", "--fetch", target, "--format", "cyclonedx", "-o", fetchedCdx);
        Assert.True(code == 0, text + err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(blobs, "cdx.json")), File.ReadAllBytes(fetchedCdx));
        using (var doc = JsonDocument.Parse(File.ReadAllBytes(fetchedSpdx)))
            Assert.Contains(doc.RootElement.GetProperty("packages").EnumerateArray(), p => p.GetProperty("name").GetString() == "left-pad");

        // An image with nothing attached: a clear failure, not an empty document.
        var other = Push(server, boot, blobs, "bom/bare");
        (code, text, _) = RunWithStderr("bom", "--fetch", other);
        Assert.Equal(1, code);
        Assert.Contains("no application/spdx+json or application/vnd.cyclonedx+json document is attached", text, StringComparison.Ordinal);
    }

    /// <summary>An OCI image layout of one tar+gzip layer holding a one-package dpkg database, for convert --bom.</summary>
    private static string DpkgLayout()
    {
        static byte[] Sha(byte[] b) => System.Security.Cryptography.SHA256.HashData(b);
        static string Digest(byte[] b) => "sha256:" + Convert.ToHexStringLower(Sha(b));
        var tar = new MemoryStream();
        using (var w = new System.Formats.Tar.TarWriter(tar, System.Formats.Tar.TarEntryFormat.Pax, leaveOpen: true))
        {
            void File_(string name, string text)
            {
                var e = new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, name)
                {
                    DataStream = new MemoryStream(System.Text.Encoding.UTF8.GetBytes(text)), Mode = (UnixFileMode)0x1A4,
                };
                w.WriteEntry(e);
            }
            File_("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
            File_("var/lib/dpkg/status", "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n\n");
            File_("var/lib/dpkg/info/hello.list", "/.\n/usr\n/usr/bin\n/usr/bin/hello\n");
            File_("usr/bin/hello", "#!/bin/sh\necho hello\n");
        }
        var layerTar = tar.ToArray();
        var gz = new MemoryStream();
        using (var z = new System.IO.Compression.GZipStream(gz, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true)) z.Write(layerTar);
        var layer = gz.ToArray();
        var config = System.Text.Encoding.UTF8.GetBytes($$$"""{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["{{{Digest(layerTar)}}}"]},"config":{}}""");
        var manifest = System.Text.Encoding.UTF8.GetBytes($$$"""{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{{{Digest(config)}}}","size":{{{config.Length}}}},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{{{Digest(layer)}}}","size":{{{layer.Length}}}}]}""");
        var dir = Cli.Temp("bom-layout");
        Directory.CreateDirectory(Path.Combine(dir, "blobs/sha256"));
        foreach (var b in new[] { layer, config, manifest }) File.WriteAllBytes(Path.Combine(dir, "blobs/sha256", Convert.ToHexStringLower(Sha(b))), b);
        File.WriteAllText(Path.Combine(dir, "oci-layout"), """{"imageLayoutVersion":"1.0.0"}""");
        File.WriteAllText(Path.Combine(dir, "index.json"), $$$"""{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{{{Digest(manifest)}}}","size":{{{manifest.Length}}},"platform":{"architecture":"amd64","os":"linux"}}]}""");
        return dir;
    }

    [SkippableFact]
    public void Convert_with_bom_attaches_the_converted_images_bill_of_materials()
    {
        Skip.IfNot(RegistryServer.Available, $"{RegistryServer.Binary} is not installed (tests/setup.sh installs docker-registry)");
        using var server = RegistryServer.Start();
        var layout = DpkgLayout();
        var target = $"{server.Host}/bom/converted:v1";
        var (code, text, err) = RunWithStderr("convert", "oci:" + layout, target, "--bom", "--bom-format", "cyclonedx");
        Assert.True(code == 0, text + err);
        Assert.Contains("bom: 1 packages", text, StringComparison.Ordinal);
        var output = Path.Combine(layout, "fetched.json");
        (code, text, err) = RunWithStderr("bom", "--fetch", target, "-o", output);
        Assert.True(code == 0, text + err);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(output));
        Assert.Equal("CycloneDX", doc.RootElement.GetProperty("bomFormat").GetString());
        var hello = Assert.Single(doc.RootElement.GetProperty("components").EnumerateArray().Where(c => c.GetProperty("type").GetString() == "library").ToList());
        Assert.Equal("pkg:deb/debian/hello@2.10-3?arch=amd64&distro=debian-12", hello.GetProperty("purl").GetString());
        Assert.Equal("/usr/bin/hello", Assert.Single(hello.GetProperty("components").EnumerateArray().ToList()).GetProperty("name").GetString());

        Assert.Equal(2, Cli.Run("convert", "oci:" + layout, target, "--bom-format", "spdx").Code); // --bom-format alone
    }
}
