using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend.Registry;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>One anonymous registry for the tests of this class.</summary>
public sealed class AnonymousRegistry : IDisposable
{
    public RegistryServer Server { get; } = RegistryServer.Start();
    public void Dispose() => Server.Dispose();
}

public sealed class RegistryClientTests(AnonymousRegistry reg) : IClassFixture<AnonymousRegistry>
{
    private static byte[] RandomBlob(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static async Task<string> Push(RegistryClient c, byte[] data, long chunk = 0, string? mountFrom = null)
    {
        var d = OciDigest.Sha256(data);
        await c.PushBlobAsync(d, data.Length, () => new MemoryStream(data), mountFrom, chunk);
        return d;
    }

    [Fact]
    public async Task Monolithic_and_chunked_uploads_then_range_reads_return_the_bytes()
    {
        using var c = new RegistryClient(reg.Server.Options("vfs/ranges"));
        var a = RandomBlob(300_000, 1);
        var b = RandomBlob(1_000_000, 2);
        var da = await Push(c, a);
        var db = await Push(c, b, chunk: 256 * 1024);
        Assert.Equal(a.Length, await c.GetBlobSizeAsync(da));
        Assert.Equal(b.Length, await c.GetBlobSizeAsync(db));
        foreach (var (off, len) in new[] { (0, 1), (0, 300_000), (12345, 4096), (299_999, 1) })
        {
            var buf = new byte[len];
            await c.ReadBlobAsync(da, off, buf);
            Assert.True(a.AsSpan(off, len).SequenceEqual(buf), $"range {off}+{len}");
        }
        // Concurrent ranges over the pool, as prefetch issues them.
        var ranges = Enumerable.Range(0, 16).Select(i => ((long)i * 60_000, new Memory<byte>(new byte[50_000]))).ToList();
        await c.ReadBlobRangesAsync(db, ranges);
        foreach (var (off, mem) in ranges) Assert.True(b.AsSpan((int)off, 50_000).SequenceEqual(mem.Span));
        // A range past the end is a final error, not a retry loop.
        var ex = await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(da, a.Length + 10, new byte[10]));
        Assert.False(ex.Transient);
    }

    [Fact]
    public async Task Existing_blob_is_not_uploaded_again_and_mount_crosses_repositories()
    {
        using var src = new RegistryClient(reg.Server.Options("vfs/mount-src"));
        using var dst = new RegistryClient(reg.Server.Options("vfs/mount-dst"));
        var data = RandomBlob(50_000, 3);
        var d = OciDigest.Sha256(data);
        Assert.Equal(RegistryClient.PushOutcome.Uploaded, await src.PushBlobAsync(d, data.Length, () => new MemoryStream(data)));
        int opened = 0;
        Assert.Equal(RegistryClient.PushOutcome.AlreadyPresent, await src.PushBlobAsync(d, data.Length, () => { opened++; return new MemoryStream(data); }));
        Assert.Equal(0, opened);
        Assert.Null(await dst.GetBlobSizeAsync(d));
        Assert.Equal(RegistryClient.PushOutcome.Mounted, await dst.PushBlobAsync(d, data.Length, () => { opened++; return new MemoryStream(data); }, mountFrom: "vfs/mount-src"));
        Assert.Equal(0, opened);
        Assert.Equal(data.Length, await dst.GetBlobSizeAsync(d));
    }

    [Fact]
    public async Task Wrong_digest_upload_is_refused_and_missing_blob_is_404()
    {
        using var c = new RegistryClient(reg.Server.Options("vfs/bad"));
        var data = RandomBlob(1000, 4);
        var wrong = OciDigest.Sha256(RandomBlob(1000, 5));
        var e = await Assert.ThrowsAsync<RegistryException>(() => c.PushBlobAsync(wrong, data.Length, () => new MemoryStream(data)));
        Assert.Equal(400, e.StatusCode);
        var nf = await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(wrong, 0, new byte[10]));
        Assert.True(nf.IsNotFound);
    }

    [Fact]
    public async Task Manifests_put_by_tag_and_fetched_by_tag_and_digest()
    {
        using var c = new RegistryClient(reg.Server.Options("vfs/manifests"));
        var config = OciJson.WriteConfig(new OciPlatform("linux", "amd64"), []);
        var cd = await Push(c, config);
        var m = OciJson.WriteManifest(new OciManifest(OciMediaTypes.ImageManifest, new OciDescriptor(OciMediaTypes.ImageConfig, cd, config.Length), []));
        var md = await c.PutManifestAsync("v1", OciMediaTypes.ImageManifest, m);
        var byTag = await c.GetManifestAsync("v1");
        Assert.Equal(md, byTag.Digest);
        Assert.Equal(OciMediaTypes.ImageManifest, byTag.MediaType);
        var byDigest = await c.GetManifestAsync(md);
        Assert.Equal(m, byDigest.Body);
        var missing = await Assert.ThrowsAsync<RegistryException>(() => c.GetManifestAsync("nope"));
        Assert.True(missing.IsNotFound);
    }

    [Fact]
    public async Task Registry_backend_maps_outcomes_to_errno_and_counts_metrics()
    {
        var log = new ListLogger();
        using var c = new RegistryClient(reg.Server.Options("vfs/backend"), log);
        var data = RandomBlob(200_000, 6);
        var d = await Push(c, data);
        using var be = new RegistryBackend(c);
        var buf = new byte[70_000];
        await c.ReadBlobAsync(d, 1000, buf);
        Assert.True(0 == be.ReadAt(d[7..], 1000, buf), string.Join("\n", log.Lines));
        Assert.True(data.AsSpan(1000, buf.Length).SequenceEqual(buf));
        Assert.Equal(0, be.ReadAt(d, 0, buf));                              // a full digest works too
        Assert.Equal(2, be.ReadAt(OciDigest.Sha256([1, 2])[7..], 0, buf));   // ENOENT
        Assert.Equal(22, be.ReadAt("../etc/passwd", 0, buf));                // EINVAL
        Assert.Equal(22, be.ReadAt(d, ulong.MaxValue - 5, buf));
        var mem = new byte[4096];
        Assert.Equal(0, await be.ReadAtAsync(d[7..], 195_000, mem));
        Assert.True(data.AsSpan(195_000, 4096).SequenceEqual(mem));
        var m = be.Metrics;
        Assert.Equal(6, m.Requests);
        Assert.Equal(3, m.Errors);
        Assert.Equal(2 * 70_000 + 4096, m.Bytes);
        Assert.True(m.MaxLatency > TimeSpan.Zero);
    }

    [Fact]
    public void Backend_config_parses_the_nydus_fields()
    {
        var json = """
            {"host":"127.0.0.1:5000","repo":"a/b","scheme":"http","auth":"dXNlcjpwYXNz","skip_verify":true,
             "timeout":2,"connect_timeout":1.5,"retry_limit":7,
             "proxy":{"url":"http://127.0.0.1:65001","ping_url":"http://127.0.0.1:65001/server/ping","fallback":false,"check_interval":3,
                      "use_http":true,"check_pause_elapsed":60}}
            """u8;
        var o = RegistryBackendConfig.Parse(json);
        Assert.Equal(("127.0.0.1:5000", "a/b", "http", true), (o.Host, o.Repository, o.Scheme, o.Transport.SkipVerify));
        Assert.Equal(new RegistryCredentials("user", "pass"), o.Credentials);
        Assert.Equal((TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(1.5), 7), (o.Transport.Timeout, o.Transport.ConnectTimeout, o.Transport.RetryLimit));
        Assert.Equal(("http://127.0.0.1:65001", false, TimeSpan.FromSeconds(3)), (o.Transport.Proxy!.Url, o.Transport.Proxy.Fallback, o.Transport.Proxy.CheckInterval));
        Assert.Equal(("http://127.0.0.1:65001/server/ping", true, TimeSpan.FromSeconds(60)), (o.Transport.Proxy.PingUrl, o.Transport.Proxy.UseHttp, o.Transport.Proxy.CheckPauseElapsed));
        // nydus defaults: fallback on, 5 s checks, paused after 300 s idle, https kept.
        var d = RegistryBackendConfig.Parse("""{"host":"h","repo":"a","proxy":{"url":"http://p:65001"}}"""u8).Transport.Proxy!;
        Assert.Equal((true, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(300), false, (string?)null),
            (d.Fallback, d.CheckInterval, d.CheckPauseElapsed, d.UseHttp, d.PingUrl));
        Assert.Throws<FormatException>(() => RegistryBackendConfig.Parse("""{"host":"h","repo":"a","proxy":{"url":"p:65001"}}"""u8));
        Assert.Throws<FormatException>(() => RegistryBackendConfig.Parse("""{"host":"h","repo":"a","proxy":{"url":"http://p","ping_url":"ftp://p/x"}}"""u8));
        Assert.Throws<FormatException>(() => RegistryBackendConfig.Parse("""{"host":"h","repo":"A"}"""u8));
        Assert.Throws<FormatException>(() => RegistryBackendConfig.Parse("""{"host":"h","repo":"a","timeout":-1}"""u8));
        Assert.Throws<FormatException>(() => RegistryBackendConfig.Parse("""{"repo":"a"}"""u8));
        Assert.Throws<FormatException>(() => RegistryBackendConfig.Parse("""{"host":"h","repo":"a","auth":"!!"}"""u8));
    }
}

public sealed class RegistryAuthTests
{
    [Fact]
    public async Task Basic_auth_with_htpasswd_works_and_wrong_password_fails_fast()
    {
        using var server = RegistryServer.Start(htpasswdLine: Htpasswd.Line("alice", "wonderland"));
        using var good = new RegistryClient(server.Options("vfs/basic", new RegistryCredentials("alice", "wonderland")));
        var data = Encoding.ASCII.GetBytes("basic auth blob");
        var d = OciDigest.Sha256(data);
        await good.PushBlobAsync(d, data.Length, () => new MemoryStream(data));
        var buf = new byte[5];
        await good.ReadBlobAsync(d, 6, buf);
        Assert.Equal("auth ", Encoding.ASCII.GetString(buf));

        using var bad = new RegistryClient(server.Options("vfs/basic", new RegistryCredentials("alice", "nope"), retries: 5));
        var sw = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RegistryException>(() => bad.ReadBlobAsync(d, 0, buf));
        Assert.Equal(401, e.StatusCode);
        Assert.False(e.Transient);
        Assert.Contains("refused the credentials", e.Message, StringComparison.Ordinal);
        using var anon = new RegistryClient(server.Options("vfs/basic"));
        var noCreds = await Assert.ThrowsAsync<RegistryException>(() => anon.ReadBlobAsync(d, 0, buf));
        Assert.Equal(401, noCreds.StatusCode);
        Assert.Contains("none were given", noCreds.Message, StringComparison.Ordinal);
        // docker config.json supplies the same credentials.
        var cfgDir = Directory.CreateTempSubdirectory("vfs-dockercfg-");
        var cfg = Path.Combine(cfgDir.FullName, "config.json");
        File.WriteAllText(cfg, $"{{\"auths\":{{\"{server.Host}\":{{\"auth\":\"{Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:wonderland"))}\"}}}}}}");
        using var fromCfg = new RegistryClient(server.Options("vfs/basic", DockerConfig.Find(server.Host, cfg)));
        Assert.Equal(data.Length, await fromCfg.GetBlobSizeAsync(d));
        cfgDir.Delete(true);
    }

    /// <summary>
    /// nydus-snapshotter rotates a registry password on a running daemon with PUT /api/v1/config {"registry_auth": ...}
    /// (pkg/daemon/daemon.go UpdateAuthConfig): the same client, without a restart, must then authenticate with the new
    /// pair, and stop using the old one.
    /// </summary>
    [Fact]
    public async Task Credentials_swapped_on_a_running_client_take_effect_at_once()
    {
        if (!RegistryServer.Available) Assert.Fail($"{RegistryServer.Binary} is missing: run tests/setup.sh");
        using var server = RegistryServer.Start(htpasswdLine: Htpasswd.Line("alice", "wonderland"));
        using var good = new RegistryClient(server.Options("vfs/swap", new RegistryCredentials("alice", "wonderland")));
        var data = Encoding.ASCII.GetBytes("rotated credentials blob");
        var d = OciDigest.Sha256(data);
        await good.PushBlobAsync(d, data.Length, () => new MemoryStream(data));

        using var client = new RegistryClient(server.Options("vfs/swap", new RegistryCredentials("alice", "expired")));
        var buf = new byte[7];
        Assert.Equal(401, (await Assert.ThrowsAsync<RegistryException>(() => client.ReadBlobAsync(d, 0, buf))).StatusCode);
        client.UpdateCredentials(RegistryCredentials.FromAuth(Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:wonderland"))));
        Assert.Equal("alice", client.Credentials!.Username);
        await client.ReadBlobAsync(d, 8, buf);
        Assert.Equal("credent", Encoding.ASCII.GetString(buf));
        client.UpdateCredentials(new RegistryCredentials("alice", "revoked"));
        Assert.Equal(401, (await Assert.ThrowsAsync<RegistryException>(() => client.ReadBlobAsync(d, 0, buf))).StatusCode);
    }

    [Fact]
    public async Task Credentials_swapped_under_token_auth_drop_the_cached_token()
    {
        using var tokens = new TokenServer { RequiredCredentials = ("bob", "builder") };
        using var server = RegistryServer.Start(token: tokens);
        using var c = new RegistryClient(server.Options("vfs/tokenswap", new RegistryCredentials("bob", "builder")));
        var data = RandomNumberGenerator.GetBytes(1000);
        var d = OciDigest.Sha256(data);
        await c.PushBlobAsync(d, data.Length, () => new MemoryStream(data));
        var buf = new byte[10];
        await c.ReadBlobAsync(d, 0, buf);
        // A token fetched with the old pair must not outlive it: the next read asks the realm with the new pair.
        c.UpdateCredentials(new RegistryCredentials("bob", "wrong"));
        await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(d, 0, buf));
        c.UpdateCredentials(new RegistryCredentials("bob", "builder"));
        await c.ReadBlobAsync(d, 10, buf);
        Assert.Equal(data.AsSpan(10, 10).ToArray(), buf);
    }

    [Fact]
    public async Task Token_auth_fetches_caches_and_refreshes_tokens()
    {
        using var tokens = new TokenServer { RequiredCredentials = ("bob", "builder") };
        using var server = RegistryServer.Start(token: tokens);
        using var c = new RegistryClient(server.Options("vfs/token", new RegistryCredentials("bob", "builder")));
        var data = RandomNumberGenerator.GetBytes(100_000);
        var d = OciDigest.Sha256(data);
        await c.PushBlobAsync(d, data.Length, () => new MemoryStream(data));
        int afterPush = tokens.Requests;
        Assert.InRange(afterPush, 1, 3);
        var buf = new byte[1000];
        for (int i = 0; i < 20; i++)
        {
            await c.ReadBlobAsync(d, i * 1000, buf);
            Assert.True(data.AsSpan(i * 1000, 1000).SequenceEqual(buf));
        }
        // Pull scope is a different scope from push: at most one more token for twenty reads.
        Assert.InRange(tokens.Requests - afterPush, 0, 1);

        // Short-lived tokens are refreshed before they expire.
        tokens.ExpiresIn = 6; // cached for 6 - max(5, 0.6) = 1 s
        using var c2 = new RegistryClient(server.Options("vfs/token", new RegistryCredentials("bob", "builder")));
        await c2.ReadBlobAsync(d, 0, buf);
        int before = tokens.Requests;
        await c2.ReadBlobAsync(d, 0, buf);
        Assert.Equal(before, tokens.Requests);
        await Task.Delay(1500);
        await c2.ReadBlobAsync(d, 0, buf);
        Assert.Equal(before + 1, tokens.Requests);

        // Wrong credentials at the token endpoint: a clear 401, no retry storm.
        using var bad = new RegistryClient(server.Options("vfs/token", new RegistryCredentials("bob", "x")));
        Assert.Equal(401, (await Assert.ThrowsAsync<RegistryException>(() => bad.ReadBlobAsync(d, 0, buf))).StatusCode);
    }
}
