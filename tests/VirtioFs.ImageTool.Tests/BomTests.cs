using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using VirtioFs.ImageTool.Bom;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// vfs-image bom on real trees: a Debian minbase tree from debootstrap (tests/setup.sh builds it once into
/// <see cref="DebianTree"/>), a Python venv and an npm tree the tests build, an Alpine package database
/// (tests/fixtures/alpine), .NET deps.json and a Go binary's build info. Package lists are compared with what the
/// ecosystems' own tools print for the same tree, and file digests with b3sum / sha256sum of the files.
/// </summary>
[Collection(BomTests.StderrCollection)]
public sealed class BomTests
{
    /// <summary>Tests that capture Console.Error (bom's summary lines) run one at a time.</summary>
    public const string StderrCollection = "bom stderr";

    /// <summary>Where tests/setup.sh keeps the debootstrap --variant=minbase tree (VFS_BOM_DEBIAN_TREE overrides).</summary>
    public static string DebianTree => Environment.GetEnvironmentVariable("VFS_BOM_DEBIAN_TREE") is { Length: > 0 } t ? t : "/var/cache/virtiofs-tests/debian-minbase";

    private static readonly Lazy<(string Boot, string Blobs, JsonDocument Spdx)> Debian = new(() =>
    {
        var (boot, blobs) = Build(DebianTree);
        return (boot, blobs, Bom(boot, blobs, "spdx"));
    });

    internal static (string Boot, string Blobs) Build(string dir, string digester = "blake3")
    {
        var o = Cli.Temp("bom-img");
        var boot = Path.Combine(o, "image.boot");
        var (code, text) = Cli.Run("create", dir, "--blob-dir", o, "--bootstrap", boot, "--digester", digester);
        Assert.True(code == 0, text);
        return (boot, o);
    }

    internal static JsonDocument Bom(string boot, string blobs, string format, params string[] extra)
    {
        var output = Path.Combine(Path.GetDirectoryName(boot)!, $"bom.{format}.json");
        var (code, text) = Cli.Run(["bom", boot, "--blob-dir", blobs, "--format", format, "-o", output, .. extra]);
        Assert.True(code == 0, text);
        return JsonDocument.Parse(File.ReadAllBytes(output));
    }

    internal static (int Code, string Out, string Err) Sh(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout, err.Result);
    }

    internal static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => d.Length > 0 && File.Exists(Path.Combine(d, tool)));

    private static IEnumerable<JsonElement> Packages(JsonDocument spdx) =>
        spdx.RootElement.GetProperty("packages").EnumerateArray().Where(p => p.GetProperty("SPDXID").GetString() != "SPDXRef-Image");

    private static string PurlOf(JsonElement p) => p.GetProperty("externalRefs")[0].GetProperty("referenceLocator").GetString()!;

    /// <summary>fileName ("./usr/bin/bash") → checksum value, and the algorithm every file uses.</summary>
    private static (Dictionary<string, string> Files, string Algorithm) FileDigests(JsonDocument spdx)
    {
        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        var algs = new HashSet<string>();
        foreach (var f in spdx.RootElement.GetProperty("files").EnumerateArray())
        {
            var c = Assert.Single(f.GetProperty("checksums").EnumerateArray().ToList());
            algs.Add(c.GetProperty("algorithm").GetString()!);
            files[f.GetProperty("fileName").GetString()!] = c.GetProperty("checksumValue").GetString()!;
        }
        return (files, Assert.Single(algs));
    }

    /// <summary>Runs b3sum or sha256sum over every file, in batches that fit a command line.</summary>
    private static Dictionary<string, string> ToolDigests(string tool, string root, IEnumerable<string> relative)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var batch in relative.Chunk(400))
        {
            var (code, stdout, err) = Sh(tool, [.. batch.Select(r => Path.Join(root, r[1..]))]);
            Assert.True(code == 0, err);
            var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(batch.Length, lines.Length);
            for (int i = 0; i < batch.Length; i++) result[batch[i]] = lines[i][..64];
        }
        return result;
    }

    private static void AssertEveryRegularFile(string root, Dictionary<string, string> files)
    {
        // find -type f: regular files only (no symlinks, device nodes or fifos), symlinked directories not followed.
        var (code, stdout, err) = Sh("find", root, "-type", "f", "-printf", "./%P\\n");
        Assert.True(code == 0, err);
        var onDisk = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(onDisk.Order(StringComparer.Ordinal), files.Keys.Order(StringComparer.Ordinal));
    }

    [SkippableFact]
    public void Debian_packages_equal_dpkg_query_and_carry_deb_purls()
    {
        Skip.IfNot(Directory.Exists(Path.Combine(DebianTree, "var/lib/dpkg")), $"no Debian tree at {DebianTree}: tests/setup.sh builds it with debootstrap --variant=minbase");
        var spdx = Debian.Value.Spdx;
        var (code, stdout, err) = Sh("dpkg-query", "-W", $"--admindir={DebianTree}/var/lib/dpkg", "-f", "${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n");
        Assert.True(code == 0, err);
        var expected = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t'))
            .Where(f => f[3] != "config-files").Select(f => $"{f[0]} {f[1]} {f[2]}").Order(StringComparer.Ordinal).ToList();
        var got = Packages(spdx).Select(p => (Name: p.GetProperty("name").GetString()!, Version: p.GetProperty("versionInfo").GetString()!, Purl: PurlOf(p))).ToList();
        Assert.True(expected.Count > 50, $"only {expected.Count} packages in the tree");
        Assert.Equal(expected, got.Select(p => $"{p.Name} {p.Version} {System.Web.HttpUtility.ParseQueryString(new Uri(p.Purl.Replace("pkg:", "pkg://", StringComparison.Ordinal)).Query)["arch"]}").Order(StringComparer.Ordinal));
        // purl-spec: pkg:deb/debian/NAME@VERSION?arch=..&distro=debian-12, the version percent-encoded (epoch ':' → %3A).
        Assert.All(got, p => Assert.StartsWith($"pkg:deb/debian/{Purl.Encode(p.Name)}@{Purl.Encode(p.Version)}?arch=", p.Purl, StringComparison.Ordinal));
        var osVersion = File.ReadAllLines(Path.Combine(DebianTree, "usr/lib/os-release")).First(l => l.StartsWith("VERSION_ID=", StringComparison.Ordinal))[11..].Trim('"');
        Assert.All(got, p => Assert.Contains($"distro=debian-{osVersion}", p.Purl, StringComparison.Ordinal));
        Assert.Contains(got, p => p.Version.Contains(':', StringComparison.Ordinal) && p.Purl.Contains("%3A", StringComparison.Ordinal));
    }

    [SkippableFact]
    public void Debian_file_digests_equal_b3sum_of_every_file()
    {
        Skip.IfNot(Directory.Exists(Path.Combine(DebianTree, "var/lib/dpkg")), $"no Debian tree at {DebianTree}: tests/setup.sh builds it with debootstrap --variant=minbase");
        Skip.IfNot(OnPath("b3sum"), "b3sum is not installed (tests/setup.sh installs Debian's b3sum)");
        var (files, alg) = FileDigests(Debian.Value.Spdx);
        Assert.Equal("BLAKE3", alg);
        AssertEveryRegularFile(DebianTree, files);
        var b3 = ToolDigests("b3sum", DebianTree, files.Keys);
        var wrong = files.Where(f => b3[f.Key] != f.Value).Select(f => f.Key).ToList();
        Assert.True(wrong.Count == 0, $"{wrong.Count} digests differ from b3sum, e.g. {string.Join(", ", wrong.Take(5))}");
        // Every digest, the files of several chunks too, came from the bootstrap's merkle rows: no data was hashed.
        Assert.Contains($"{files.Count} of {files.Count} come from the RAFS bootstrap", Debian.Value.Spdx.RootElement.GetProperty("comment").GetString(), StringComparison.Ordinal);
        // Sizes too, from the bootstrap.
        foreach (var f in Debian.Value.Spdx.RootElement.GetProperty("files").EnumerateArray().Take(500))
            Assert.Equal($"size {new FileInfo(Path.Join(DebianTree, f.GetProperty("fileName").GetString()![1..])).Length}", f.GetProperty("comment").GetString());
    }

    [SkippableFact]
    public void Debian_packages_contain_the_files_their_dpkg_list_names_through_the_usrmerge_symlinks()
    {
        Skip.IfNot(Directory.Exists(Path.Combine(DebianTree, "var/lib/dpkg")), $"no Debian tree at {DebianTree}: tests/setup.sh builds it with debootstrap --variant=minbase");
        var spdx = Debian.Value.Spdx;
        var ids = Packages(spdx).ToDictionary(p => p.GetProperty("SPDXID").GetString()!, p => p.GetProperty("name").GetString()!);
        var files = spdx.RootElement.GetProperty("files").EnumerateArray().ToDictionary(f => f.GetProperty("SPDXID").GetString()!, f => f.GetProperty("fileName").GetString()!);
        var contains = spdx.RootElement.GetProperty("relationships").EnumerateArray()
            .Where(r => r.GetProperty("relationshipType").GetString() == "CONTAINS" && ids.ContainsKey(r.GetProperty("spdxElementId").GetString()!))
            .GroupBy(r => ids[r.GetProperty("spdxElementId").GetString()!])
            .ToDictionary(g => g.Key, g => g.Select(r => files[r.GetProperty("relatedSpdxElement").GetString()!]).ToHashSet());
        // bash.list names /bin/bash; with usrmerge /bin is a symlink to usr/bin, so the file is ./usr/bin/bash.
        Assert.Contains("/bin/bash", File.ReadAllLines(Path.Combine(DebianTree, "var/lib/dpkg/info/bash.list")));
        Assert.Contains("./usr/bin/bash", contains["bash"]);
        // A Multi-Arch: same package's list is named PKG:ARCH.list.
        Assert.True(File.Exists(Path.Combine(DebianTree, "var/lib/dpkg/info/libc6:amd64.list")));
        Assert.Contains(contains["libc6"], f => f.StartsWith("./usr/lib/x86_64-linux-gnu/libc.so", StringComparison.Ordinal));
        // Every regular file a .list names is related to its package.
        var list = File.ReadAllLines(Path.Combine(DebianTree, "var/lib/dpkg/info/coreutils.list"));
        var listed = list.Where(l => l.Length > 1 && File.Exists(Path.Join(DebianTree, l)) && new FileInfo(Path.Join(DebianTree, l)).LinkTarget is null).ToArray();
        var (rc, real, rerr) = Sh("realpath", ["-e", .. listed.Select(l => Path.Join(DebianTree, l))]);
        Assert.True(rc == 0, rerr);
        var treeReal = Sh("realpath", DebianTree).Out.Trim();
        var regular = real.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(r => "." + r[treeReal.Length..]).ToHashSet();
        Assert.NotEmpty(regular);
        Assert.Subset(contains["coreutils"], regular);
    }

    [SkippableFact]
    public void Spdx_output_passes_the_SPDX_2_3_json_schema()
    {
        Skip.IfNot(Directory.Exists(Path.Combine(DebianTree, "var/lib/dpkg")), $"no Debian tree at {DebianTree}: tests/setup.sh builds it with debootstrap --variant=minbase");
        var schema = JsonSchema.FromText(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "fixtures/spdx/spdx-schema-2.3.json")));
        var result = schema.Evaluate(Debian.Value.Spdx.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        Assert.True(result.IsValid, string.Join("\n", (result.Details ?? []).Where(d => d.Errors is not null).Take(10)
            .Select(d => $"{d.InstanceLocation}: {string.Join("; ", d.Errors!.Values)}")));
        // And the schema rejects what it should: a file without checksums.
        var broken = JsonNode.Parse(Debian.Value.Spdx.RootElement.GetRawText())!;
        broken["files"]![0]!.AsObject().Remove("checksums");
        using var brokenDoc = JsonDocument.Parse(broken.ToJsonString());
        Assert.False(schema.Evaluate(brokenDoc.RootElement).IsValid);
    }

    [SkippableFact]
    public void CycloneDx_output_lists_the_packages_and_nests_files_under_their_package()
    {
        Skip.IfNot(Directory.Exists(Path.Combine(DebianTree, "var/lib/dpkg")), $"no Debian tree at {DebianTree}: tests/setup.sh builds it with debootstrap --variant=minbase");
        var (boot, blobs, spdx) = Debian.Value;
        using var cdx = Bom(boot, blobs, "cyclonedx");
        var root = cdx.RootElement;
        Assert.Equal("CycloneDX", root.GetProperty("bomFormat").GetString());
        Assert.Equal("1.5", root.GetProperty("specVersion").GetString());
        Assert.Matches("^urn:uuid:[0-9a-f-]{36}$", root.GetProperty("serialNumber").GetString());
        var libs = root.GetProperty("components").EnumerateArray().Where(c => c.GetProperty("type").GetString() == "library").ToList();
        Assert.Equal(Packages(spdx).Select(PurlOf).Order(StringComparer.Ordinal), libs.Select(l => l.GetProperty("purl").GetString()!).Order(StringComparer.Ordinal));
        var bash = libs.Single(l => l.GetProperty("name").GetString() == "bash");
        var bin = bash.GetProperty("components").EnumerateArray().Single(c => c.GetProperty("name").GetString() == "/usr/bin/bash");
        var hash = Assert.Single(bin.GetProperty("hashes").EnumerateArray().ToList());
        Assert.Equal("BLAKE3", hash.GetProperty("alg").GetString());
        Assert.Equal(FileDigests(spdx).Files["./usr/bin/bash"], hash.GetProperty("content").GetString());
        // Every regular file appears once, nested or at the top level.
        var allFiles = root.GetProperty("components").EnumerateArray()
            .SelectMany(c => c.GetProperty("type").GetString() == "file" ? [c] : c.TryGetProperty("components", out var n) ? n.EnumerateArray().ToArray() : []).ToList();
        Assert.Equal(spdx.RootElement.GetProperty("files").GetArrayLength(), allFiles.Count);

        // --file-digests bootstrap: every file's hash from the bootstrap's merkle rows, the same as SPDX's.
        var spdxDigests = FileDigests(spdx).Files;
        using (var fromRows = Bom(boot, blobs, "cyclonedx", "--file-digests", "bootstrap"))
        {
            var rowFiles = fromRows.RootElement.GetProperty("components").EnumerateArray()
                .SelectMany(c => c.GetProperty("type").GetString() == "file" ? [c] : c.TryGetProperty("components", out var n) ? n.EnumerateArray().ToArray() : []).ToList();
            Assert.Equal(spdxDigests.Count, rowFiles.Count);
            Assert.All(rowFiles, f => Assert.Equal(spdxDigests["." + f.GetProperty("name").GetString()], f.GetProperty("hashes")[0].GetProperty("content").GetString()));
        }

        // An image without file digests (merkle version 2, as older vfs-image wrote): files of several chunks keep
        // their chunk digests and claim no content hash.
        var oldBoot = Path.Combine(Cli.Temp("bom-v2"), "image.boot");
        File.Copy(boot, oldBoot);
        Rafs.Tests.Support.MerkleRewrite.ToVersion2(oldBoot);
        using var lean = Bom(oldBoot, blobs, "cyclonedx", "--file-digests", "bootstrap");
        var leanFiles = lean.RootElement.GetProperty("components").EnumerateArray()
            .SelectMany(c => c.GetProperty("type").GetString() == "file" ? [c] : c.TryGetProperty("components", out var n) ? n.EnumerateArray().ToArray() : []).ToList();
        var big = leanFiles.Where(f => !f.TryGetProperty("hashes", out _)).ToList();
        Assert.NotEmpty(big);
        Assert.All(big, f => Assert.True(long.Parse(f.GetProperty("properties").EnumerateArray().Single(p => p.GetProperty("name").GetString() == "vfs-image:size").GetProperty("value").GetString()!) > 1 << 20));
        Assert.All(big, f => Assert.Matches("^blake3:[0-9a-f]{64}(,[0-9a-f]{64})+$", f.GetProperty("properties").EnumerateArray().Single(p => p.GetProperty("name").GetString() == "vfs-image:chunk-digests").GetProperty("value").GetString()));
        Assert.All(leanFiles.Except(big), f => Assert.Equal(spdxDigests["." + f.GetProperty("name").GetString()], f.GetProperty("hashes")[0].GetProperty("content").GetString()));
    }

    [SkippableFact]
    public void Python_venv_packages_equal_pip_list_and_sha256_digests_equal_sha256sum()
    {
        Skip.IfNot(File.Exists("/usr/bin/python3"), "/usr/bin/python3 is not installed");
        var dir = Cli.Temp("bom-venv");
        var venv = Path.Combine(dir, "venv");
        var (code, _, err) = Sh("/usr/bin/python3", "-m", "venv", venv);
        Skip.If(code != 0, $"python3 -m venv failed (python3-venv missing?): {err}");
        (code, var freeze, err) = Sh(Path.Combine(venv, "bin/pip"), "list", "--format=freeze", "--disable-pip-version-check");
        Assert.True(code == 0, err);
        var expected = freeze.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split("==")).Select(f => $"{Language.NormalizePython(f[0])} {f[1]}").Order().ToList();
        Assert.Contains(expected, e => e.StartsWith("pip ", StringComparison.Ordinal));

        var (boot, blobs) = Build(dir, "sha256");
        using var spdx = Bom(boot, blobs, "spdx");
        var got = Packages(spdx).Where(p => PurlOf(p).StartsWith("pkg:pypi/", StringComparison.Ordinal)).ToList();
        Assert.Equal(expected, got.Select(p => $"{Language.NormalizePython(p.GetProperty("name").GetString()!)} {p.GetProperty("versionInfo").GetString()}").Order());
        Assert.All(got, p => Assert.Equal($"pkg:pypi/{Language.NormalizePython(p.GetProperty("name").GetString()!)}@{p.GetProperty("versionInfo").GetString()}", PurlOf(p)));

        var (files, alg) = FileDigests(spdx);
        Assert.Equal("SHA256", alg);
        AssertEveryRegularFile(dir, files);
        var sums = ToolDigests("sha256sum", dir, files.Keys);
        Assert.All(files, f => Assert.Equal(sums[f.Key], f.Value));
    }

    [SkippableFact]
    public void Npm_tree_packages_equal_npm_ls()
    {
        Skip.IfNot(OnPath("npm"), "npm is not installed");
        var dir = Cli.Temp("bom-npm");
        File.WriteAllText(Path.Combine(dir, "package.json"), """{"name":"bom-fixture","version":"1.0.0","private":true}""");
        // is-odd 3.0.1 depends on is-number 6; @types/node is scoped: both purl namespace forms.
        var (code, _, err) = Sh("npm", "install", "--prefix", dir, "--no-audit", "--no-fund", "--silent", "is-odd@3.0.1", "@types/node@20.11.0", "is-number@7.0.0");
        Skip.If(code != 0, $"npm install failed (no npm registry?): {err}");
        (code, var lsJson, err) = Sh("npm", "ls", "--prefix", dir, "--all", "--json");
        Assert.True(code == 0, err);
        var expected = new SortedSet<string>(StringComparer.Ordinal);
        void Walk(JsonElement deps)
        {
            foreach (var d in deps.EnumerateObject())
            {
                expected.Add($"{d.Name} {d.Value.GetProperty("version").GetString()}");
                if (d.Value.TryGetProperty("dependencies", out var sub)) Walk(sub);
            }
        }
        using (var ls = JsonDocument.Parse(lsJson)) Walk(ls.RootElement.GetProperty("dependencies"));
        Assert.Contains("is-number 6.0.0", expected); // the nested copy under is-odd
        Assert.Contains("is-number 7.0.0", expected);

        var (boot, blobs) = Build(dir);
        using var spdx = Bom(boot, blobs, "spdx");
        var got = Packages(spdx).Where(p => PurlOf(p).StartsWith("pkg:npm/", StringComparison.Ordinal)).ToList();
        Assert.Equal(expected, new SortedSet<string>(got.Select(p => $"{p.GetProperty("name").GetString()} {p.GetProperty("versionInfo").GetString()}"), StringComparer.Ordinal));
        Assert.Equal(expected.Count, got.Count);
        Assert.Contains(got, p => PurlOf(p) == "pkg:npm/%40types/node@20.11.0");
        Assert.Contains(got, p => PurlOf(p) == "pkg:npm/is-number@6.0.0");
    }

    [Fact]
    public void Alpine_database_gives_apk_purls_and_the_files_each_package_lists()
    {
        var dir = Cli.Temp("bom-alpine");
        Directory.CreateDirectory(Path.Combine(dir, "lib/apk/db"));
        File.Copy(Path.Combine(AppContext.BaseDirectory, "fixtures/alpine/installed"), Path.Combine(dir, "lib/apk/db/installed"));
        Directory.CreateDirectory(Path.Combine(dir, "etc/ssl/certs"));
        Directory.CreateDirectory(Path.Combine(dir, "bin"));
        File.WriteAllText(Path.Combine(dir, "etc/os-release"), "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n");
        File.WriteAllText(Path.Combine(dir, "lib/ld-musl-x86_64.so.1"), "musl");
        File.CreateSymbolicLink(Path.Combine(dir, "lib/libc.musl-x86_64.so.1"), "ld-musl-x86_64.so.1");
        File.WriteAllText(Path.Combine(dir, "bin/busybox"), "busybox");
        File.WriteAllText(Path.Combine(dir, "etc/securetty"), "console\n");
        File.WriteAllText(Path.Combine(dir, "lib/libz.so.1.3.1"), "zlib");
        File.CreateSymbolicLink(Path.Combine(dir, "lib/libz.so.1"), "libz.so.1.3.1");
        File.WriteAllText(Path.Combine(dir, "etc/ssl/certs/ca-certificates.crt"), "certs");
        File.CreateSymbolicLink(Path.Combine(dir, "etc/ssl/cert.pem"), "certs/ca-certificates.crt");

        var (boot, blobs) = Build(dir);
        using var spdx = Bom(boot, blobs, "spdx");
        var pkgs = Packages(spdx).ToDictionary(p => p.GetProperty("name").GetString()!);
        Assert.Equal(["busybox", "ca-certificates-bundle", "musl", "zlib"], pkgs.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3&upstream=musl", PurlOf(pkgs["musl"]));
        Assert.Equal("pkg:apk/alpine/ca-certificates-bundle@20240705-r0?arch=x86_64&distro=alpine-3.20.3&upstream=ca-certificates", PurlOf(pkgs["ca-certificates-bundle"]));
        Assert.Equal("GPL-2.0-only", pkgs["busybox"].GetProperty("licenseDeclared").GetString());
        Assert.Equal("MPL-2.0 AND MIT", pkgs["ca-certificates-bundle"].GetProperty("licenseDeclared").GetString());
        var files = spdx.RootElement.GetProperty("files").EnumerateArray().ToDictionary(f => f.GetProperty("SPDXID").GetString()!, f => f.GetProperty("fileName").GetString()!);
        string Contained(string pkg) => string.Join(",", spdx.RootElement.GetProperty("relationships").EnumerateArray()
            .Where(r => r.GetProperty("spdxElementId").GetString() == pkgs[pkg].GetProperty("SPDXID").GetString() && r.GetProperty("relationshipType").GetString() == "CONTAINS")
            .Select(r => files[r.GetProperty("relatedSpdxElement").GetString()!]).Order(StringComparer.Ordinal));
        Assert.Equal("./lib/ld-musl-x86_64.so.1", Contained("musl")); // the symlink is not a regular file
        Assert.Equal("./bin/busybox,./etc/securetty", Contained("busybox")); // udhcpd.conf is listed but absent
        Assert.Equal("./etc/ssl/certs/ca-certificates.crt", Contained("ca-certificates-bundle"));
    }

    [Fact]
    public void DotNet_deps_json_gives_nuget_packages()
    {
        var dir = Cli.Temp("bom-dotnet");
        // This test assembly's own deps.json, written by the SDK that built it.
        var deps = Directory.GetFiles(AppContext.BaseDirectory, "*.deps.json").First(f => f.Contains("ImageTool.Tests", StringComparison.Ordinal));
        Directory.CreateDirectory(Path.Combine(dir, "app"));
        File.Copy(deps, Path.Combine(dir, "app", Path.GetFileName(deps)));
        var expected = new List<string>();
        using (var d = JsonDocument.Parse(File.ReadAllBytes(deps)))
        {
            foreach (var lib in d.RootElement.GetProperty("libraries").EnumerateObject())
                if (lib.Value.GetProperty("type").GetString() == "package") expected.Add($"pkg:nuget/{lib.Name.Replace('/', '@')}");
        }
        Assert.Contains(expected, e => e.StartsWith("pkg:nuget/xunit.core@", StringComparison.Ordinal));
        var (boot, blobs) = Build(dir);
        using var spdx = Bom(boot, blobs, "spdx");
        Assert.Equal(expected.Order(StringComparer.Ordinal), Packages(spdx).Select(PurlOf).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Go_build_info_in_an_ELF_binary_gives_golang_modules()
    {
        var dir = Cli.Temp("bom-go");
        Directory.CreateDirectory(Path.Combine(dir, "usr/local/bin"));
        var path = Path.Combine(dir, "usr/local/bin/app");
        File.WriteAllBytes(path, GoElf.Build("go1.22.4",
            "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgithub.com/spf13/cobra\tv1.8.0\th1:x=\ndep\tgolang.org/x/sys\tv0.20.0\th1:y=\n=>\tgolang.org/x/sys\tv0.21.0\th1:z=\n",
            (int)Catalogers.GoMinBinarySize + 4096));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.UserWrite);
        var (boot, blobs) = Build(dir);
        using var spdx = Bom(boot, blobs, "spdx");
        Assert.Equal(
            ["pkg:golang/example.com/app", "pkg:golang/github.com/spf13/cobra@v1.8.0", "pkg:golang/golang.org/x/sys@v0.21.0"],
            Packages(spdx).Select(PurlOf).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void An_rpm_database_is_refused_by_name()
    {
        var dir = Cli.Temp("bom-rpm");
        Directory.CreateDirectory(Path.Combine(dir, "var/lib/rpm"));
        File.WriteAllText(Path.Combine(dir, "var/lib/rpm/rpmdb.sqlite"), "SQLite format 3\0");
        var (boot, blobs) = Build(dir);
        var (code, text) = Cli.Run("bom", boot, "--blob-dir", blobs, "-o", Path.Combine(dir, "x.json"));
        Assert.Equal(1, code);
        Assert.Contains("/var/lib/rpm/rpmdb.sqlite", text, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(dir, "x.json")));
    }

    [Fact]
    public void Bad_options_are_usage_errors()
    {
        Assert.Equal(2, Cli.Run("bom").Code);
        Assert.Equal(2, Cli.Run("bom", "x.boot").Code); // no --blob-dir
        Assert.Equal(2, Cli.Run("bom", "x.boot", "--blob-dir", "d", "--format", "swid").Code);
        Assert.Equal(2, Cli.Run("bom", "x.boot", "--blob-dir", "d", "--frobnicate").Code);
        Assert.Equal(2, Cli.Run("bom", "x.boot", "--blob-dir", "d", "--file-digests", "md5", "--format", "cyclonedx").Code);
    }

    [SkippableTheory]
    [InlineData("blake3", "b3sum")]
    [InlineData("sha256", "sha256sum")]
    public void Files_of_several_chunks_take_their_digest_from_the_bootstrap_and_older_images_fall_back_to_reading(string digester, string tool)
    {
        Skip.IfNot(OnPath(tool), $"{tool} is not installed (tests/setup.sh installs Debian's b3sum)");
        var src = Cli.Temp("bom-multi");
        var rnd = new Random(5);
        foreach (var (name, size) in new[] { ("big", (3 << 20) + 777), ("exact", 1 << 20), ("small", 10), ("empty", 0) })
        {
            var data = new byte[size];
            rnd.NextBytes(data);
            File.WriteAllBytes(Path.Combine(src, name), data);
        }
        var (boot, blobs) = Build(src, digester);
        var expected = ToolDigests(tool, src, ["./big", "./exact", "./small", "./empty"]);

        // Version 3 rows: every digest from the bootstrap, none computed, so --file-digests bootstrap can write SPDX too.
        var (spdx, err) = BomWithStderr(boot, blobs, "spdx");
        Assert.Equal(expected, FileDigests(spdx).Files);
        Assert.Contains("4 digests from the bootstrap, 0 computed from 0 bytes", err, StringComparison.Ordinal);
        var (spdxNoData, _) = BomWithStderr(boot, blobs, "spdx", "--file-digests", "bootstrap");
        Assert.Equal(expected, FileDigests(spdxNoData).Files);

        // The same image as an older vfs-image wrote it (merkle version 2, no file digests): the file of several
        // chunks is read and hashed, the others still come from their chunk digest; SPDX without reading is refused.
        Rafs.Tests.Support.MerkleRewrite.ToVersion2(boot);
        var (old, oldErr) = BomWithStderr(boot, blobs, "spdx");
        Assert.Equal(expected, FileDigests(old).Files);
        Assert.Contains($"3 digests from the bootstrap, 1 computed from {(3 << 20) + 777} bytes", oldErr, StringComparison.Ordinal);
        var (code, text) = Cli.Run("bom", boot, "--blob-dir", blobs, "--format", "spdx", "--file-digests", "bootstrap", "-o", Path.Combine(blobs, "refused.json"));
        Assert.Equal(1, code);
        Assert.Contains("/big", text, StringComparison.Ordinal);
        Assert.Contains("--format cyclonedx", text, StringComparison.Ordinal);
    }

    private static (JsonDocument Doc, string Err) BomWithStderr(string boot, string blobs, string format, params string[] extra)
    {
        var err = new StringWriter();
        var old = Console.Error;
        Console.SetError(err);
        try { return (Bom(boot, blobs, format, extra), err.ToString()); }
        finally { Console.SetError(old); }
    }

    [SkippableFact]
    public void Images_built_by_nydus_image_give_content_digests_that_match_their_unpacked_files()
    {
        Skip.IfNot(OnPath("b3sum"), "b3sum is not installed (tests/setup.sh installs Debian's b3sum)");
        using var tex = new VirtioFs.Tests.Fixtures.NydusTexture();
        foreach (var (boot, blobs, alg) in new[] { (tex.V6Bootstrap, tex.V6BlobDir, "BLAKE3"), (tex.V5Sha256Bootstrap, tex.V5BlobDir, "SHA256") })
        {
            var tree = Cli.Temp("bom-nydus");
            var (code, text) = Cli.Run("unpack", boot, tree, "--blob-dir", blobs);
            Assert.True(code == 0, text);
            var output = Path.Combine(tree, "..", Path.GetFileName(tree) + ".json");
            (code, text) = Cli.Run("bom", boot, "--blob-dir", blobs, "-o", output);
            Assert.True(code == 0, text);
            using var spdx = JsonDocument.Parse(File.ReadAllBytes(output));
            var (files, got) = FileDigests(spdx);
            Assert.Equal(alg, got);
            AssertEveryRegularFile(tree, files);
            var sums = ToolDigests(alg == "BLAKE3" ? "b3sum" : "sha256sum", tree, files.Keys);
            Assert.All(files, f => Assert.Equal(sums[f.Key], f.Value));
        }
    }

    [Fact]
    public void Hostile_parser_input_is_refused_without_throwing_anything_else()
    {
        var rnd = new Random(13);
        byte[] magic = [0xff, .. " Go buildinf:"u8, 8, 2];
        for (int i = 0; i < 2000; i++)
        {
            var b = new byte[rnd.Next(0, 200)];
            rnd.NextBytes(b);
            if (i % 2 == 0 && b.Length >= 16) magic.CopyTo(b, 0); // past the magic: varints and lengths are random
            _ = GoBuildInfo.Parse(b);
            _ = Catalogers.ControlParagraphs(Encoding.Latin1.GetString(b)).Count();
            try { _ = Referrers.List(b); } catch (InvalidDataException) { }
        }
        // A length prefix past the end, and a huge varint.
        Assert.Null(GoBuildInfo.Parse([.. magic, .. new byte[16], 0x7f, (byte)'g']));
        Assert.Null(GoBuildInfo.Parse([.. magic, .. new byte[16], 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]));
        // An ELF whose section table lies past its end, or claims 65535 sections: no Go modules, no error.
        var dir = Cli.Temp("bom-hostile");
        var elf = GoElf.Build("go1.22", "path\tx\n", (int)Catalogers.GoMinBinarySize);
        BitConverter.TryWriteBytes(elf.AsSpan(0x28), (ulong)elf.Length * 4);
        File.WriteAllBytes(Path.Combine(dir, "far"), elf);
        var many = GoElf.Build("go1.22", "path\tx\n", (int)Catalogers.GoMinBinarySize);
        BitConverter.TryWriteBytes(many.AsSpan(0x3C), (ushort)0xffff);
        File.WriteAllBytes(Path.Combine(dir, "many"), many);
        foreach (var f in new[] { "far", "many" }) File.SetUnixFileMode(Path.Combine(dir, f), UnixFileMode.UserRead | UnixFileMode.UserExecute);
        // A symlink loop and a dpkg list naming paths through it.
        Directory.CreateDirectory(Path.Combine(dir, "var/lib/dpkg/info"));
        File.CreateSymbolicLink(Path.Combine(dir, "loop"), "loop/x");
        File.WriteAllText(Path.Combine(dir, "var/lib/dpkg/status"), "Package: p\nVersion: 1\nStatus: install ok installed\n");
        File.WriteAllText(Path.Combine(dir, "var/lib/dpkg/info/p.list"), "/loop/a/b\n/../../etc/passwd\n/many\n");
        var (boot, blobs) = Build(dir);
        using var spdx = Bom(boot, blobs, "spdx");
        var p = Assert.Single(Packages(spdx)); // "far" (not listed) was read for Go build info, and is not Go
        Assert.Equal("pkg:deb/debian/p@1", PurlOf(p));
        var contained = spdx.RootElement.GetProperty("relationships").EnumerateArray().Count(r => r.GetProperty("spdxElementId").GetString() == p.GetProperty("SPDXID").GetString());
        Assert.Equal(1, contained); // /many; the loop and the path above the root resolve to nothing
    }

    [Theory]
    [InlineData("deb", "debian", "perl-base", "1:5.36.0-7+deb12u2", "pkg:deb/debian/perl-base@1%3A5.36.0-7%2Bdeb12u2")]
    [InlineData("npm", "@babel", "core", "7.0.0", "pkg:npm/%40babel/core@7.0.0")]
    [InlineData("golang", "github.com/spf13", "cobra", "v1.8.0", "pkg:golang/github.com/spf13/cobra@v1.8.0")]
    public void Purls_percent_encode_what_is_not_unreserved(string type, string ns, string name, string version, string expected)
        => Assert.Equal(expected, Purl.Make(type, ns, name, version));
}

/// <summary>Builds a minimal ELF64 little-endian file with a .go.buildinfo section in the Go 1.18+ inline format
/// (go/src/debug/buildinfo/buildinfo.go): the layout the Go linker writes, for a test that has no Go toolchain.</summary>
internal static class GoElf
{
    public static byte[] Build(string goVersion, string modInfo, int minSize)
    {
        static byte[] Varint(int n)
        {
            var l = new List<byte>();
            while (n >= 0x80) { l.Add((byte)(n | 0x80)); n >>= 7; }
            l.Add((byte)n);
            return [.. l];
        }
        // modinfo framed by the 16-byte sentinels cmd/go writes (the byte before the end sentinel is a newline).
        var start = Convert.FromHexString("3077af0c9274080241e1c107e6d618e6");
        var end = Convert.FromHexString("f932433186182072008242104116d8f2");
        byte[] mod = [.. start, .. Encoding.UTF8.GetBytes(modInfo), .. end];
        var bi = new List<byte>();
        bi.Add(0xff);
        bi.AddRange(" Go buildinf:"u8.ToArray());
        bi.Add(8);     // pointer size
        bi.Add(2);     // flags: inline strings, little-endian
        bi.AddRange(new byte[16]);
        var v = Encoding.UTF8.GetBytes(goVersion);
        bi.AddRange(Varint(v.Length)); bi.AddRange(v);
        bi.AddRange(Varint(mod.Length)); bi.AddRange(mod);

        var names = "\0.shstrtab\0.go.buildinfo\0"u8.ToArray();
        int biOff = 0x1000, namesOff = biOff + bi.Count, shOff = Math.Max(minSize, (namesOff + names.Length + 7) & ~7);
        var f = new byte[shOff + 3 * 64];
        f[0] = 0x7f;
        "ELF"u8.CopyTo(f.AsSpan(1));
        f[4] = 2; f[5] = 1; f[6] = 1;
        BitConverter.TryWriteBytes(f.AsSpan(0x10), (ushort)2);     // ET_EXEC
        BitConverter.TryWriteBytes(f.AsSpan(0x12), (ushort)62);    // EM_X86_64
        BitConverter.TryWriteBytes(f.AsSpan(0x28), (ulong)shOff);  // e_shoff
        BitConverter.TryWriteBytes(f.AsSpan(0x3A), (ushort)64);    // e_shentsize
        BitConverter.TryWriteBytes(f.AsSpan(0x3C), (ushort)3);     // e_shnum
        BitConverter.TryWriteBytes(f.AsSpan(0x3E), (ushort)1);     // e_shstrndx
        bi.CopyTo(f, biOff);
        names.CopyTo(f, namesOff);
        void Section(int i, uint name, int off, int size)
        {
            var s = f.AsSpan(shOff + i * 64);
            BitConverter.TryWriteBytes(s, name);
            BitConverter.TryWriteBytes(s[0x18..], (ulong)off);
            BitConverter.TryWriteBytes(s[0x20..], (ulong)size);
        }
        Section(1, 1, namesOff, names.Length);        // .shstrtab
        Section(2, 11, biOff, bi.Count);               // .go.buildinfo
        return f;
    }
}
