using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend.Registry;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>
/// The Dragonfly proxy as nydusd configures it (<c>proxy.url</c>, <c>ping_url</c>, <c>fallback</c>, <c>check_interval</c>):
/// a dfdaemon-like forward proxy the tests start and stop sits beside the real registry. Reads go through it while it
/// answers, straight to the registry while it does not (fallback) or fail with EIO (no fallback), and through it again
/// once its ping answers.
/// </summary>
public sealed class RegistryProxyTests(AnonymousRegistry reg) : IClassFixture<AnonymousRegistry>, IDisposable
{
    private readonly DfProxy _df = new();
    private readonly ListLogger _log = new();

    private async Task<(byte[] Data, string Id)> Seed(string repo)
    {
        var data = RandomNumberGenerator.GetBytes(200_000);
        var d = OciDigest.Sha256(data);
        using var c = new RegistryClient(reg.Server.Options(repo));
        await c.PushBlobAsync(d, data.Length, () => new MemoryStream(data));
        return (data, d[7..]);
    }

    /// <summary>A backend from a nydus registry backend config with a proxy section, as nydusd reads it.</summary>
    private RegistryBackend Backend(string repo, bool fallback, bool ping = true, double checkInterval = 0.3)
    {
        var pingField = ping ? $"\"ping_url\":\"{_df.PingUrl}\"," : "";
        string fb = fallback ? "true" : "false";
        string interval = checkInterval.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var json = $$$"""
            {"host":"{{{reg.Server.Host}}}","repo":"{{{repo}}}","scheme":"http","timeout":3,"connect_timeout":1,"retry_limit":1,
             "proxy":{"url":"{{{_df.Url}}}",{{{pingField}}}"fallback":{{{fb}}},"check_interval":{{{interval}}}}}
            """;
        var o = RegistryBackendConfig.Parse(Encoding.UTF8.GetBytes(json));
        Assert.Equal(fallback, o.Transport.Proxy!.Fallback);
        return new RegistryBackend(new RegistryClient(o, _log), ownsClient: true, _log);
    }

    private string Log => string.Join("\n", _log.Lines);

    private static async Task Until(Func<bool> condition, string what)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), "timed out waiting until " + what);
            await Task.Delay(20);
        }
    }

    private static void Read(RegistryBackend be, string id, byte[] data, int offset, int length, string log)
    {
        var buf = new byte[length];
        Assert.True(0 == be.ReadAt(id, (ulong)offset, buf), log);
        Assert.True(data.AsSpan(offset, length).SequenceEqual(buf), "wrong bytes at " + offset);
    }

    [Fact]
    public async Task Reads_go_through_the_proxy_fall_back_while_it_is_down_and_return_when_its_ping_answers()
    {
        var (data, id) = await Seed("vfs/df-fallback");
        using var be = Backend("vfs/df-fallback", fallback: true);
        Read(be, id, data, 0, 10_000, Log);
        Read(be, id, data, 50_000, 10_000, Log);
        Assert.Equal(2, _df.BlobRequests);
        // nydusd's reqwest client uses the proxy as an HTTP forward proxy: absolute-form requests for the registry URL.
        Assert.All(_df.Origins, o => Assert.Equal(reg.Server.Host, o));
        Assert.Equal(0, _df.OriginFormRequests);
        Assert.True(be.Client.UsingProxy);

        // dfdaemon dies: the next read goes straight to the registry, without an error and without waiting out a timeout.
        _df.Stop();
        var sw = Stopwatch.StartNew();
        Read(be, id, data, 100_000, 10_000, Log);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2), sw.Elapsed.ToString());
        Assert.False(be.Client.UsingProxy);
        Assert.Equal(2, _df.BlobRequests);
        // It stays down across several failed pings, and reads keep working.
        await Task.Delay(700);
        Assert.False(be.Client.UsingProxy);
        Read(be, id, data, 110_000, 10_000, Log);

        // It comes back on the same port: after a check interval the ping answers and reads use it again.
        _df.Start();
        await Until(() => be.Client.UsingProxy, "the proxy is healthy again");
        Read(be, id, data, 120_000, 10_000, Log);
        Assert.Equal(3, _df.BlobRequests);

        // A ping that fails marks it down even before a read fails (nydusd's health thread), and recovery follows the ping.
        _df.PingStatus = 503;
        await Until(() => !be.Client.UsingProxy, "a failing ping marks the proxy down");
        Read(be, id, data, 130_000, 10_000, Log);
        Assert.Equal(3, _df.BlobRequests);
        _df.PingStatus = 200;
        await Until(() => be.Client.UsingProxy, "a good ping marks it up");
        Read(be, id, data, 140_000, 10_000, Log);
        Assert.Equal(4, _df.BlobRequests);

        // A proxy that answers 5xx is bypassed for that read too.
        _df.BlobStatus = 502;
        Read(be, id, data, 150_000, 10_000, Log);
        Assert.Equal(5, _df.BlobRequests);
        Assert.False(be.Client.UsingProxy);
        _df.BlobStatus = 0;
        Assert.Equal(0, be.Metrics.Errors);
        Assert.Contains(_log.Lines, l => l.StartsWith("6004 ", StringComparison.Ordinal));
        Assert.Contains(_log.Lines, l => l.StartsWith("6005 ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Without_fallback_a_dead_proxy_is_EIO_until_its_ping_answers_again()
    {
        var (data, id) = await Seed("vfs/df-nofallback");
        using var be = Backend("vfs/df-nofallback", fallback: false);
        Read(be, id, data, 0, 4096, Log);
        Assert.Equal(1, _df.BlobRequests);

        _df.Stop();
        var buf = new byte[4096];
        for (int i = 0; i < 3; i++)
        {
            // Never straight to the registry: every read fails, each within the deadline.
            var sw = Stopwatch.StartNew();
            Assert.Equal(5, be.ReadAt(id, 4096, buf));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(3), sw.Elapsed.ToString());
        }
        Assert.False(be.Client.UsingProxy);

        _df.Start();
        await Until(() => be.Client.UsingProxy, "the proxy is healthy again");
        Read(be, id, data, 8192, 4096, Log);
        Assert.Equal(2, _df.BlobRequests);

        // A 5xx from the proxy is the answer too (nydusd returns the proxy's response when fallback is off).
        _df.BlobStatus = 503;
        Assert.Equal(5, be.ReadAt(id, 4096, buf));
        Assert.True(_df.BlobRequests > 2);
        _df.BlobStatus = 0;
        await Until(() => be.Client.UsingProxy, "the ping brings it back");
        Read(be, id, data, 12_288, 4096, Log);
    }

    [Fact]
    public async Task Without_a_ping_url_a_failed_proxy_is_tried_again_after_the_check_interval()
    {
        var (data, id) = await Seed("vfs/df-noping");
        using var be = Backend("vfs/df-noping", fallback: true, ping: false, checkInterval: 0.2);
        Read(be, id, data, 0, 1000, Log);
        Assert.Equal(1, _df.BlobRequests);
        _df.Stop();
        Read(be, id, data, 1000, 1000, Log);
        Assert.False(be.Client.UsingProxy);
        await Until(() => be.Client.UsingProxy, "the proxy gets another chance");
        Read(be, id, data, 2000, 1000, Log);          // still down: falls back again
        _df.Start();
        await Until(() => be.Client.UsingProxy, "the proxy gets another chance");
        Read(be, id, data, 3000, 1000, Log);
        Assert.Equal(2, _df.BlobRequests);
        Assert.Equal(0, _df.Pings);
    }

    [Fact]
    public async Task Redirected_storage_reads_go_through_the_proxy_too_without_the_registry_credentials()
    {
        using var storage = new BlobStorage();
        using var front = new RedirectFront(storage);
        var data = RandomNumberGenerator.GetBytes(50_000);
        var d = OciDigest.Sha256(data);
        storage.Add(d, data);
        using var c = new RegistryClient(new RegistryOptions
        {
            Host = front.Host, Repository = "vfs/p2p", Credentials = RedirectFront.Credentials,
            Transport = new()
            {
                RetryLimit = 1,
                Proxy = new RegistryProxyOptions { Url = _df.Url, PingUrl = _df.PingUrl, CheckInterval = TimeSpan.FromSeconds(1) },
            },
        }, _log);
        var buf = new byte[5000];
        await c.ReadBlobAsync(d, 1234, buf);
        Assert.True(data.AsSpan(1234, 5000).SequenceEqual(buf), Log);
        // dfdaemon fetched both the registry's answer and the storage URL (that is where P2P saves the traffic).
        Assert.Contains(front.Host, _df.Origins);
        Assert.Contains(storage.Server.Authority, _df.Origins);
        Assert.Equal(0, storage.RequestsWithAuthorization);
    }

    public void Dispose() => _df.Dispose();
}
