using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Daemon.Api;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// nydus-snapshotter's liveness monitor (pkg/manager/monitor.go Subscribe/Run) connects to the API socket, sends
/// nothing, and waits for EPOLLHUP|EPOLLERR on it: a hang-up is the daemon's death, and it runs the recovery policy.
/// So an idle connection must stay open as long as the client keeps it (vfsd used to close it after 60 s), while a
/// client that starts a request and stalls (slow loris) is still cut off.
/// </summary>
public sealed class ApiIdleConnectionTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-api-idle-").FullName;
    private ApiServer _server = null!;

    private string Sock => Path.Combine(_dir, "api.sock");

    public Task InitializeAsync()
    {
        // The default options (no idle timeout) but for a short request deadline, so the slow-loris half is quick.
        _server = new ApiServer(Sock, new FakeDaemonControl(), NullLogger.Instance, new ApiServerOptions { RequestTimeout = TimeSpan.FromSeconds(2) });
        _server.Start();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        Directory.Delete(_dir, true);
    }

    private async Task<Socket> Connect()
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(Sock));
        return s;
    }

    /// <summary>True when the server has hung up: the socket reads as readable with nothing to read (EOF), or errs.</summary>
    private static bool HungUp(Socket s) =>
        s.Poll(0, SelectMode.SelectError) || (s.Poll(0, SelectMode.SelectRead) && s.Available == 0);

    private static async Task<string> Get(Socket s)
    {
        await s.SendAsync("GET /api/v1/daemon HTTP/1.1\r\nHost: unix\r\n\r\n"u8.ToArray());
        var sb = new StringBuilder();
        var buf = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!sb.ToString().Contains("\"state\"", StringComparison.Ordinal))
        {
            int n = await s.ReceiveAsync(buf, SocketFlags.None, cts.Token);
            if (n == 0) break;
            sb.Append(Encoding.ASCII.GetString(buf, 0, n));
        }
        return sb.ToString();
    }

    [Fact]
    public async Task Idle_connections_outlive_the_old_60_s_timeout_and_a_stalled_request_does_not()
    {
        var clock = Stopwatch.StartNew();
        using Socket monitor = await Connect();       // as the liveness monitor: connected, silent
        using Socket pooled = await Connect();        // as Go's pooled keep-alive connection: one request, then idle
        Assert.StartsWith("HTTP/1.1 200 OK", await Get(pooled), StringComparison.Ordinal);
        using Socket loris = await Connect();
        await loris.SendAsync("GET /api/v1/daemon HTTP/1.1\r\nHost: un"u8.ToArray());

        // The stalled request is cut off at its deadline ...
        Assert.True(SpinWait.SpinUntil(() => HungUp(loris), TimeSpan.FromSeconds(15)), "a request that stalls mid-way is closed");
        // ... the silent ones are not, for longer than the 60 s vfsd used to allow.
        while (clock.Elapsed < TimeSpan.FromSeconds(65))
        {
            Assert.False(HungUp(monitor), $"idle monitor connection hung up after {clock.Elapsed}");
            Assert.False(HungUp(pooled), $"idle keep-alive connection hung up after {clock.Elapsed}");
            await Task.Delay(1000);
        }
        Assert.StartsWith("HTTP/1.1 200 OK", await Get(monitor), StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 200 OK", await Get(pooled), StringComparison.Ordinal);
        Assert.False(HungUp(monitor));
    }

    [Fact]
    public void The_default_never_closes_an_idle_connection()
    {
        var defaults = new ApiServerOptions();
        Assert.Equal(Timeout.InfiniteTimeSpan, defaults.IdleTimeout);
        Assert.True(defaults.RequestTimeout > TimeSpan.Zero, "a request that stalls mid-way has a deadline");
        Assert.True(defaults.MaxConnections >= 32);
    }
}
