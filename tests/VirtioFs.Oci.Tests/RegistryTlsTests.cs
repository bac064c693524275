using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Storage.Backend.Registry;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>The real registry serving https with a certificate from a CA the tests make (root, intermediate, server).</summary>
public sealed class TlsRegistry : IDisposable
{
    public TestCertificates Pki { get; } = new();
    public RegistryServer Server { get; }
    public byte[] Data { get; } = RandomNumberGenerator.GetBytes(100_000);
    public string Digest { get; }

    public TlsRegistry()
    {
        Server = RegistryServer.Start(tlsCertificate: Pki.ServerChainPath, tlsKey: Pki.ServerKeyPath);
        Digest = OciDigest.Sha256(Data);
        using var c = new RegistryClient(Options(caFile: Pki.CaPath));
        c.PushBlobAsync(Digest, Data.Length, () => new MemoryStream(Data)).GetAwaiter().GetResult();
    }

    public RegistryOptions Options(string? caFile = null, bool skipVerify = false, int retries = 3, string? host = null) => new()
    {
        Host = host ?? Server.Host,
        Repository = "vfs/tls",
        Scheme = "https",
        Transport = new()
        {
            CaFile = caFile,
            SkipVerify = skipVerify,
            RetryLimit = retries,
            Timeout = TimeSpan.FromSeconds(5),
            RetryDelay = TimeSpan.FromMilliseconds(200),
            MaxRetryDelay = TimeSpan.FromSeconds(1),
        },
    };

    public void Dispose()
    {
        Server.Dispose();
        Pki.Dispose();
    }
}

/// <summary>https registries: trusted through <c>ca_file</c> (the chain through an intermediate the server sends),
/// refused quickly and with a clear error otherwise (a certificate does not get better by retrying), or accepted
/// unchecked with <c>skip_verify</c>.</summary>
public sealed class RegistryTlsTests(TlsRegistry tls) : IClassFixture<TlsRegistry>
{
    [Fact]
    public void Ca_file_from_the_nydus_config_makes_reads_work()
    {
        Assert.True(tls.Server.Tls);
        var json = $$$"""{"host":"{{{tls.Server.Host}}}","repo":"vfs/tls","scheme":"https","ca_file":"{{{tls.Pki.CaPath}}}","retry_limit":0}""";
        using var be = new RegistryBackend(RegistryBackendConfig.Parse(Encoding.UTF8.GetBytes(json)));
        var buf = new byte[30_000];
        Assert.Equal(0, be.ReadAt(tls.Digest[7..], 60_000, buf));
        Assert.True(tls.Data.AsSpan(60_000, buf.Length).SequenceEqual(buf));
    }

    [Fact]
    public async Task Untrusted_certificate_fails_at_once_with_a_clear_error_not_after_retries()
    {
        var log = new ListLogger();
        using var c = new RegistryClient(tls.Options(retries: 5), log);
        var sw = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(tls.Digest, 0, new byte[10]));
        // Five retries with backoff would take over 3 s; a final error takes one handshake.
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2), sw.Elapsed.ToString());
        Assert.False(e.Transient);
        Assert.Contains("ca_file", e.Message, StringComparison.Ordinal);
        Assert.Contains("skip_verify", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(log.Lines, l => l.StartsWith("6000 ", StringComparison.Ordinal));
        // The backend turns it into EIO.
        using var be = new RegistryBackend(c);
        Assert.Equal(5, be.ReadAt(tls.Digest[7..], 0, new byte[10]));
    }

    [Fact]
    public async Task A_ca_file_of_another_CA_is_refused_and_the_error_says_so()
    {
        using var other = new TestCertificates();
        using var c = new RegistryClient(tls.Options(caFile: other.CaPath));
        var e = await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(tls.Digest, 0, new byte[10]));
        Assert.False(e.Transient);
        Assert.Contains(other.CaPath, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_host_name_is_still_checked_with_a_ca_file()
    {
        // The certificate names 127.0.0.1 only; "localhost" reaches the same server under a name it does not carry.
        using var c = new RegistryClient(tls.Options(caFile: tls.Pki.CaPath, host: $"localhost:{tls.Server.Port}"));
        var e = await Assert.ThrowsAsync<RegistryException>(() => c.ReadBlobAsync(tls.Digest, 0, new byte[10]));
        Assert.False(e.Transient);
        Assert.Contains("NameMismatch", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Skip_verify_accepts_the_certificate()
    {
        using var c = new RegistryClient(tls.Options(skipVerify: true));
        var buf = new byte[1000];
        await c.ReadBlobAsync(tls.Digest, 99_000, buf);
        Assert.True(tls.Data.AsSpan(99_000, 1000).SequenceEqual(buf));
        var json = $$$"""{"host":"{{{tls.Server.Host}}}","repo":"vfs/tls","scheme":"https","skip_verify":true}""";
        using var be = new RegistryBackend(RegistryBackendConfig.Parse(Encoding.UTF8.GetBytes(json)));
        Assert.Equal(0, be.ReadAt(tls.Digest[7..], 0, buf));
        Assert.True(tls.Data.AsSpan(0, 1000).SequenceEqual(buf));
    }

    [Fact]
    public async Task Proxy_with_use_http_gets_the_https_registry_url_as_http_and_without_it_a_refused_tunnel_falls_back()
    {
        using var df = new DfProxy { UpstreamHttps = true };
        var buf = new byte[2000];
        RegistryOptions WithProxy(bool useHttp)
        {
            var o = tls.Options(caFile: tls.Pki.CaPath, retries: 0);
            return new RegistryOptions
            {
                Host = o.Host, Repository = o.Repository, Scheme = o.Scheme,
                Transport = o.Transport with
                {
                    RetryLimit = 0,
                    Proxy = new RegistryProxyOptions { Url = df.Url, PingUrl = df.PingUrl, UseHttp = useHttp },
                },
            };
        }
        using (var c = new RegistryClient(WithProxy(useHttp: true)))
        {
            await c.ReadBlobAsync(tls.Digest, 500, buf);
            Assert.True(tls.Data.AsSpan(500, buf.Length).SequenceEqual(buf));
            Assert.Equal(1, df.BlobRequests);
            Assert.All(df.Targets, t => Assert.StartsWith($"http://{tls.Server.Host}/v2/vfs/tls/blobs/", t, StringComparison.Ordinal));
            Assert.True(c.UsingProxy);
        }
        // Without use_http an https URL needs a CONNECT tunnel, which this proxy refuses (405): the read falls back to
        // the registry, whose certificate is still checked against ca_file.
        using (var c = new RegistryClient(WithProxy(useHttp: false)))
        {
            await c.ReadBlobAsync(tls.Digest, 700, buf);
            Assert.True(tls.Data.AsSpan(700, buf.Length).SequenceEqual(buf));
            Assert.Equal(1, df.BlobRequests);
            Assert.False(c.UsingProxy);
        }
    }
}

/// <summary>The connect timeout bounds a connect that never completes: a listener whose accept queue is full drops
/// further SYNs (Linux tcp_conn_request: a full accept queue drops the SYN), so the client's connect hangs there.</summary>
public sealed class RegistryConnectTimeoutTests
{
    [Fact]
    public async Task Connect_to_a_host_that_never_answers_gives_up_after_the_connect_timeout()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(0);
        var endpoint = (IPEndPoint)listener.LocalEndPoint!;
        // Fill the accept queue (never accepted) until a connect does not complete.
        var fillers = new List<Socket>();
        try
        {
            while (true)
            {
                Assert.True(fillers.Count < 64, "the accept queue never filled up");
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                fillers.Add(s);
                using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
                try { await s.ConnectAsync(endpoint, cts.Token); }
                catch (OperationCanceledException) { break; }
            }
            var log = new ListLogger();
            using var c = new RegistryClient(new RegistryOptions
            {
                Host = $"127.0.0.1:{endpoint.Port}", Repository = "vfs/blackhole",
                Transport = new()
                {
                    ConnectTimeout = TimeSpan.FromMilliseconds(400), Timeout = TimeSpan.FromSeconds(30),
                    RetryLimit = 1, RetryDelay = TimeSpan.FromMilliseconds(10),
                },
            }, log);
            using var be = new RegistryBackend(c);
            var sw = Stopwatch.StartNew();
            Assert.Equal(5, be.ReadAt(OciDigest.Sha256([1])[7..], 0, new byte[10]));
            // Two attempts of one connect timeout each, far inside the 30 s request deadline.
            Assert.True(sw.Elapsed >= TimeSpan.FromMilliseconds(700) && sw.Elapsed < TimeSpan.FromSeconds(3), sw.Elapsed.ToString());
            Assert.Contains(log.Lines, l => l.StartsWith("6000 ", StringComparison.Ordinal));   // a connect timeout is retried
        }
        finally
        {
            foreach (var s in fillers) s.Dispose();
        }
    }
}
