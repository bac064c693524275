using System.Diagnostics;
using System.Text.Json.Nodes;
using VirtioFs.Integration.Tests.Infrastructure;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Registry images behind authentication, end to end as a user meets them: a plain OCI image (two layers, the upper
/// one overwriting a file and whiting out a file and a directory) is pushed to Debian's docker-registry, converted by
/// <c>out/vfs-image convert</c> into a nydus image in the same registry, and served by <c>out/vfsd --image</c> with
/// credentials from a docker config.json (DOCKER_CONFIG), as <c>docker login</c> leaves them. Two kinds of registry
/// auth (distribution's "auth" config): htpasswd basic auth, and token auth where the registry answers
/// <c>WWW-Authenticate: Bearer realm=...</c> and a token server run by the test demands the same user and password
/// before it signs a token.
/// </summary>
public sealed class RegistryAuthImageTests(ITestOutputHelper output)
{
    internal const string User = "vfs-user";
    internal const string Password = "correct horse battery";

    public enum Auth
    {
        Basic,
        Token,
    }

    /// <summary>The tree both layers flatten to, below <paramref name="prefix"/> ("" for the image root). Layer 1 holds
    /// more than survives; layer 2 overwrites etc/hostname, re-lists etc/ with a newer mtime, whites out data/gone.txt
    /// and the whole of old/, and adds a file and a relative symlink.</summary>
    internal static (LayerEntry[] Lower, LayerEntry[] Upper) TreeLayers(string prefix = "")
    {
        string P(string p) => prefix.Length == 0 ? p : prefix + "/" + p;
        var rnd = new Random(42);
        byte[] big = new byte[(3 << 19) + 123]; // 1.5 MiB + a partial chunk: several chunks, the last one short
        rnd.NextBytes(big);
        byte[] medium = new byte[70_001];
        rnd.NextBytes(medium);
        var lower = new List<LayerEntry>();
        if (prefix.Length > 0) lower.Add(LayerEntry.Dir(prefix));
        lower.AddRange(
        [
            LayerEntry.Dir(P("etc")),
            LayerEntry.File(P("etc/hostname"), "lower\n"u8.ToArray()),
            LayerEntry.File(P("etc/os-release"), "ID=vfs-test\n"u8.ToArray(), mtime: LayerEntry.Epoch + 11),
            LayerEntry.Dir(P("data"), mode: 0x1E8 /* 0750 */, uid: 1000, gid: 100, mtime: LayerEntry.Epoch + 3),
            LayerEntry.File(P("data/big.bin"), big, mtime: LayerEntry.Epoch + 5),
            LayerEntry.File(P("data/medium.bin"), medium),
            LayerEntry.File(P("data/empty"), []),
            LayerEntry.File(P("data/owned.txt"), "mine\n"u8.ToArray(), mode: 0x180 /* 0600 */, uid: 1000, gid: 1000),
            LayerEntry.File(P("data/run.sh"), "#!/bin/sh\necho hi\n"u8.ToArray(), mode: 0x1ED /* 0755 */),
            LayerEntry.File(P("data/gone.txt"), "whited out by the upper layer\n"u8.ToArray()),
            LayerEntry.Dir(P("old")),
            LayerEntry.File(P("old/a"), "a\n"u8.ToArray()),
            LayerEntry.File(P("old/b"), "b\n"u8.ToArray()),
            LayerEntry.Symlink(P("hostname-link"), "etc/hostname"),
        ]);
        LayerEntry[] upper =
        [
            LayerEntry.Dir(P("etc"), mtime: LayerEntry.Epoch + 100),
            LayerEntry.File(P("etc/hostname"), "upper\n"u8.ToArray(), mtime: LayerEntry.Epoch + 101),
            LayerEntry.Whiteout(P("data/gone.txt")),
            LayerEntry.Whiteout(P("old")),
            LayerEntry.File(P("data/added.txt"), "only in the upper layer\n"u8.ToArray(), mtime: LayerEntry.Epoch + 102),
            LayerEntry.Symlink(P("data/big-link"), "big.bin"),
        ];
        return (lower.ToArray(), upper);
    }

    /// <summary>A registry with <paramref name="auth"/> (and its token server, which then needs <see cref="User"/>).</summary>
    internal static (RegistryServer Registry, TokenServer? Tokens) StartRegistry(Auth auth)
    {
        var tokens = auth == Auth.Token ? new TokenServer { RequiredCredentials = (User, Password) } : null;
        var registry = RegistryServer.Start(htpasswdLine: auth == Auth.Basic ? Htpasswd.Line(User, Password) : null, token: tokens);
        return (registry, tokens);
    }

    /// <summary>Runs <c>out/vfs-image convert SRC DST --json ...</c> and returns its report.</summary>
    internal static JsonNode Convert(string src, string dst, string dockerConfig, ITestOutputHelper? log = null)
    {
        using var p = ProcessRunner.Start(Repo.VfsImage, ["convert", src, dst, "--docker-config", dockerConfig, "--json"]);
        int? code = p.WaitForExit(TimeSpan.FromMinutes(3));
        log?.WriteLine(p.Output);
        Assert.True(code == 0, $"vfs-image convert exited {code}:\n{p.Output}");
        // The report is the JSON object on stdout; progress lines, if any, come before it.
        string text = p.Output;
        return JsonNode.Parse(text[text.IndexOf('{', StringComparison.Ordinal)..])!;
    }

    [Theory]
    [InlineData(Auth.Basic)]
    [InlineData(Auth.Token)]
    public async Task A_converted_image_behind_registry_auth_mounts_with_docker_config_credentials_and_wrong_ones_fail_fast(Auth auth)
    {
        var (registry, tokens) = StartRegistry(auth);
        using var _ = registry;
        using var __ = tokens;
        var (lower, upper) = TreeLayers();
        var image = new OciTestImage().Layer(lower).Layer(upper);
        await image.PushAsync(registry.Options("src/app", new RegistryCredentials(User, Password)), "v1");
        using var creds = new DockerConfigDir(User, Password, registry.Host);

        // Without credentials the registry really is closed: convert cannot even read the source.
        using var nobody = new DockerConfigDir("nobody", "nothing", "other.example:5000");
        using (var anon = ProcessRunner.Start(Repo.VfsImage, ["convert", $"{registry.Host}/src/app:v1", $"{registry.Host}/nydus/app:v1", "--docker-config", nobody.File]))
        {
            Assert.Equal(1, anon.WaitForExit(TimeSpan.FromMinutes(1)));
            Assert.Contains("HTTP 401 Unauthorized", anon.Output, StringComparison.Ordinal);
        }

        Convert($"{registry.Host}/src/app:v1", $"{registry.Host}/nydus/app:v1", creds.File, output);
        string reference = $"{registry.Host}/nydus/app:v1";

        using var ws = new ImageWorkspace();
        // Tokens that live 2 s: the chunks read after the pause need a fresh one, which the registry must accept.
        if (tokens is not null) tokens.ExpiresIn = 2;
        using (var m = ws.MountWithEnvironment(creds.Environment, "--image", reference, "--cache-dir", ws.CacheDir))
        {
            Assert.Equal("upper\n", File.ReadAllText(m.M("etc/hostname")));
            int tokensBeforePause = tokens?.Requests ?? 0;
            if (tokens is not null) Thread.Sleep(TimeSpan.FromSeconds(2.5));
            var diffs = image.Differences(m.MountPoint);
            Assert.True(diffs.Count == 0, string.Join("\n", diffs.Take(40)));
            var (code, log) = m.Stop();
            output.WriteLine(log);
            Assert.Equal(0, code);
            Assert.Equal(0, VfsdMount.Metrics(log)["read_errors"]);
            Assert.True(VfsdMount.Metrics(log)["backend_reads"] > 0, "file data came from the registry");
            if (tokens is not null) Assert.True(tokens.Requests > tokensBeforePause, "vfsd fetched a new token once the old one expired");
        }

        // The same credentials as nydusd's `auth` in --config, with no docker config.json that knows this registry.
        string authConfig = Path.Combine(ws.Root, "auth.json");
        string basic = System.Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{User}:{Password}"));
        File.WriteAllText(authConfig, """{"device":{"backend":{"type":"registry","config":{"auth":"AUTH"}}}}""".Replace("AUTH", basic, StringComparison.Ordinal));
        using (var m = ws.MountWithEnvironment(nobody.Environment, "--image", reference, "--config", authConfig, "--cache-dir", Path.Combine(ws.Root, "cache-auth")))
        {
            Assert.Equal("upper\n", File.ReadAllText(m.M("etc/hostname")));
            Assert.True(image.Differences(m.MountPoint).Count == 0);
            Assert.Equal(0, m.Stop().ExitCode);
        }

        // Wrong credentials, or none for this registry: vfsd gives up at once with an error that says so, and mounts
        // nothing. A fresh cache directory each time, so no bootstrap from the run above can stand in for the registry.
        using var wrong = new DockerConfigDir(User, "wrong password", registry.Host);
        foreach (var (config, why) in new[] { (wrong, "the registry refused the credentials"), (nobody, "the registry requires credentials and none were given") })
        {
            string mnt = ws.NewMountPoint();
            var clock = Stopwatch.StartNew();
            using var bad = ProcessRunner.Start(Repo.Vfsd, ["mount", "--image", reference, "--cache-dir", Path.Combine(ws.Root, "cache-" + Guid.NewGuid().ToString("N")), mnt],
                environment: config.Environment);
            int? badCode = bad.WaitForExit(TimeSpan.FromSeconds(60));
            output.WriteLine(bad.Output);
            Assert.Equal(1, badCode);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"gave up after {clock.Elapsed}");
            Assert.Contains(why, bad.Output, StringComparison.Ordinal);
            Assert.Contains("401", bad.Output, StringComparison.Ordinal);
            Assert.False(ImageWorkspace.IsMounted(mnt));
        }
    }
}

/// <summary>
/// The guest side of the same path: <c>vfsd --image</c> from the token-auth registry is the virtio-fs device of a QEMU
/// guest. The image also holds a static busybox and a 64 MiB payload nobody reads, and vfsd reaches the registry
/// through <see cref="CountingProxy"/>, so what lazy pulling is for is counted where it crosses the network: the guest
/// checks the tree and starts a shell from the image after the registry sent a small fraction of the image's blob.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class RegistryAuthImageGuestTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_guest_reads_a_token_auth_image_and_starts_a_shell_from_it_after_pulling_a_small_fraction()
    {
        var (registry, tokens) = RegistryAuthImageTests.StartRegistry(RegistryAuthImageTests.Auth.Token);
        using var _ = registry;
        using var __ = tokens!;
        using var proxy = new CountingProxy(registry.Port);

        var (lower, upper) = RegistryAuthImageTests.TreeLayers("tree");
        var payload = new byte[64 << 20];
        new Random(64).NextBytes(payload);
        var image = new OciTestImage().Layer(
        [
            .. lower,
            LayerEntry.Dir("bin"),
            LayerEntry.File("bin/busybox", File.ReadAllBytes(RegistryImageTests.BusyboxPath()), mode: 0x1ED /* 0755 */),
            LayerEntry.Symlink("bin/sh", "busybox"),
            LayerEntry.Dir("payload"),
            LayerEntry.File("payload/big.bin", payload),
        ]).Layer(upper);
        var creds = new RegistryCredentials(RegistryAuthImageTests.User, RegistryAuthImageTests.Password);
        await image.PushAsync(registry.Options("src/guest", creds), "v1");
        // vfsd asks for the proxy's address, so the docker config has an entry for it as well as for the registry.
        using var config = new DockerConfigDir(RegistryAuthImageTests.User, RegistryAuthImageTests.Password, registry.Host, proxy.Host);
        var report = RegistryAuthImageTests.Convert($"{registry.Host}/src/guest:v1", $"{registry.Host}/nydus/guest:v1", config.File);
        long blobBytes = (long)report["blob_bytes"]!;
        Assert.True(blobBytes > payload.Length, $"the payload is random, so the blob cannot be smaller: {blobBytes}");

        using var ws = new ImageWorkspace();
        int tokensBefore = tokens!.Requests;
        proxy.Reset();
        using var vfsd = Vfsd.StartWithEnvironment(config.Environment,
            "--image", $"{proxy.Host}/nydus/guest:v1", "--cache-dir", ws.CacheDir, "--tag", "vfs", "--thread-pool-size", "2");
        string script = TestTree.GuestManifestScript("/mnt/vfs/tree") + "\n"
            + "echo \"@@SHELL $(chroot /mnt/vfs /bin/busybox sh -c 'echo ok')\"\n";
        var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output);
        long pulled = proxy.BytesFromRegistry;
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
        output.WriteLine($"registry sent {pulled} bytes for a {blobBytes}-byte blob\n{vfsd.Process.Output}");

        Assert.Equal(0, result.ExitCode);
        PassthroughGuestTests.AssertSameManifest(image.GuestManifest("tree"), result.Lines("M"));
        Assert.Equal("ok", result.Single("SHELL"));
        Assert.True(tokens.Requests > tokensBefore, "vfsd fetched its tokens from the token server");
        Assert.True(pulled > 0, "the manifest, bootstrap and chunks came through the proxy");
        Assert.True(pulled < blobBytes / 10, $"the registry sent {pulled} bytes for a {blobBytes}-byte blob");
    }
}
