using System.Diagnostics;
using System.Security.Cryptography;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend.Registry;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>Reads through a fault-injecting TCP proxy: transient faults are retried into correct data, persistent ones
/// give EIO within the deadline, and reads recover when the faults stop.</summary>
public sealed class RegistryFaultTests(AnonymousRegistry reg) : IClassFixture<AnonymousRegistry>
{
    private async Task<(byte[] Data, string Digest)> Seed(string repo)
    {
        var data = RandomNumberGenerator.GetBytes(400_000);
        var d = OciDigest.Sha256(data);
        using var c = new RegistryClient(reg.Server.Options(repo));
        await c.PushBlobAsync(d, data.Length, () => new MemoryStream(data));
        return (data, d);
    }

    [Theory]
    [InlineData(Fault.Drop)]
    [InlineData(Fault.Http500)]
    [InlineData(Fault.Http429)]
    [InlineData(Fault.Truncate)]
    [InlineData(Fault.Slow)]
    [InlineData(Fault.Refuse)]
    public async Task Transient_faults_are_retried_into_correct_data(Fault fault)
    {
        var (data, d) = await Seed("vfs/faults");
        using var proxy = new FaultProxy(reg.Server.Port) { SlowDelay = TimeSpan.FromSeconds(3) };
        var log = new ListLogger();
        using var be = new RegistryBackend(new RegistryClient(reg.Server.Options("vfs/faults", retries: 4, timeout: TimeSpan.FromSeconds(1), host: proxy.Host), log), ownsClient: true);
        var buf = new byte[100_000];
        // Warm the pool so later faults hit a live keep-alive connection (a refused connect needs a fresh client).
        if (fault != Fault.Refuse) Assert.Equal(0, be.ReadAt(d[7..], 0, buf));
        proxy.Set(fault, count: 2);
        Array.Clear(buf);
        Assert.True(0 == be.ReadAt(d[7..], 150_000, buf), string.Join("\n", log.Lines));
        Assert.True(data.AsSpan(150_000, buf.Length).SequenceEqual(buf));
        Assert.Equal(2, proxy.Hits);
        Assert.Contains(log.Lines, l => l.StartsWith("6000 ", StringComparison.Ordinal)); // retries were logged
    }

    [Fact]
    public async Task Persistent_failure_is_EIO_within_the_deadline_and_recovers()
    {
        var (data, d) = await Seed("vfs/outage");
        using var proxy = new FaultProxy(reg.Server.Port);
        using var be = new RegistryBackend(new RegistryClient(reg.Server.Options("vfs/outage", retries: 2, timeout: TimeSpan.FromSeconds(1), host: proxy.Host)), ownsClient: true);
        var buf = new byte[10_000];
        foreach (var fault in new[] { Fault.Http500, Fault.Drop, Fault.Slow })
        {
            proxy.Set(fault);
            var sw = Stopwatch.StartNew();
            Assert.Equal(5, be.ReadAt(d[7..], 0, buf));
            // 3 attempts of at most 1 s each plus two backoffs of at most 0.2 s.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(6), $"{fault}: {sw.Elapsed}");
            proxy.Set(Fault.None);
            Assert.Equal(0, be.ReadAt(d[7..], 5000, buf));
            Assert.True(data.AsSpan(5000, buf.Length).SequenceEqual(buf));
        }
        var m = be.Metrics;
        Assert.Equal(3, m.Errors);
        Assert.Equal(6, m.Requests);
    }

    [Fact]
    public async Task Four_hundreds_are_not_retried()
    {
        var (_, d) = await Seed("vfs/noretry");
        using var proxy = new FaultProxy(reg.Server.Port);
        using var c = new RegistryClient(reg.Server.Options("vfs/noretry", retries: 5, host: proxy.Host));
        var missing = OciDigest.Sha256([9]);
        await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(missing, 0, new byte[4]));
        Assert.Equal(0, proxy.Hits);
        // A 429 is retried (Too Many Requests asks the client to come back), a 404 is not.
        proxy.Set(Fault.Http429, count: 1);
        await c.ReadBlobAsync(d, 0, new byte[4]);
        Assert.Equal(1, proxy.Hits);
    }

    [Fact]
    public async Task Proxy_is_used_while_healthy_bypassed_when_down_and_used_again_after_recovery()
    {
        var (data, d) = await Seed("vfs/proxied");
        using var proxy = new FaultProxy(reg.Server.Port);
        var o = reg.Server.Options("vfs/proxied", retries: 1, timeout: TimeSpan.FromSeconds(2));
        var opts = new RegistryOptions
        {
            Host = o.Host, Repository = o.Repository,
            Transport = o.Transport with
            {
                RetryLimit = 1,
                Proxy = new RegistryProxyOptions { Url = $"http://{proxy.Host}", Fallback = true, CheckInterval = TimeSpan.FromMilliseconds(300) },
            },
        };
        using var be = new RegistryBackend(opts);
        var buf = new byte[20_000];
        Assert.Equal(0, be.ReadAt(d[7..], 0, buf));
        Assert.True(be.Client.UsingProxy);
        proxy.Set(Fault.Drop);
        Assert.Equal(0, be.ReadAt(d[7..], 1000, buf));           // fell back to the registry
        Assert.True(data.AsSpan(1000, buf.Length).SequenceEqual(buf));
        Assert.False(be.Client.UsingProxy);
        int hits = proxy.Hits;
        Assert.Equal(0, be.ReadAt(d[7..], 2000, buf));           // straight to the registry: the proxy is not tried
        Assert.Equal(hits, proxy.Hits);
        proxy.Set(Fault.None);
        var sw = Stopwatch.StartNew();
        while (!be.Client.UsingProxy && sw.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(50);
        Assert.True(be.Client.UsingProxy);
        proxy.Set(Fault.Http500, count: 1);
        Assert.Equal(0, be.ReadAt(d[7..], 3000, buf));           // a 5xx from the proxy also falls back
        Assert.True(data.AsSpan(3000, buf.Length).SequenceEqual(buf));
        Assert.Equal(1, proxy.Hits - hits);
    }
}
