using System.Net;
using System.Net.Sockets;
using VirtioFs.Oci.Tests.Support;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>The integration tests' registry is the one the client tests use (<see cref="RegistryServer"/>, linked from
/// tests/VirtioFs.Oci.Tests/Support); this adds pushing a built image with out/vfs-image.</summary>
internal static class RegistryPush
{
    /// <summary>Pushes a built image (bootstrap + blob directory) with out/vfs-image as <c>HOST/repo:tag</c>.</summary>
    public static string Push(this RegistryServer registry, string bootstrap, string blobDir, string repoAndTag)
    {
        string target = $"{registry.Host}/{repoAndTag}";
        using var p = ProcessRunner.Start(Repo.VfsImage, ["push", bootstrap, "--blob-dir", blobDir, "--target", target]);
        int? code = p.WaitForExit(TimeSpan.FromMinutes(5));
        if (code != 0) throw new InvalidOperationException($"vfs-image push {target} failed ({code}):\n{p.Output}");
        return target;
    }
}

/// <summary>
/// A TCP forwarder in front of the registry that counts the bytes the registry sends back: the daemon is pointed at
/// <see cref="Host"/>, so what it pulls is measured where it crosses the network, not by the daemon's own counters.
/// </summary>
internal sealed class CountingProxy : IDisposable
{
    private readonly TcpListener _listener;
    private readonly int _target;
    private readonly CancellationTokenSource _stop = new();
    private long _downstream;

    public CountingProxy(int targetPort)
    {
        _target = targetPort;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _ = AcceptLoop();
    }

    public int Port { get; }
    public string Host => $"127.0.0.1:{Port}";

    /// <summary>Bytes the registry has sent to clients of the proxy (HTTP headers included).</summary>
    public long BytesFromRegistry => Interlocked.Read(ref _downstream);

    public void Reset() => Interlocked.Exchange(ref _downstream, 0);

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            _ = Serve(client);
        }
    }

    private async Task Serve(TcpClient client)
    {
        using (client)
        using (var upstream = new TcpClient())
        {
            try
            {
                await upstream.ConnectAsync(IPAddress.Loopback, _target, _stop.Token);
                var a = Pump(client.GetStream(), upstream.GetStream(), count: false);
                var b = Pump(upstream.GetStream(), client.GetStream(), count: true);
                await Task.WhenAny(a, b);
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }
    }

    private async Task Pump(NetworkStream from, NetworkStream to, bool count)
    {
        var buf = new byte[64 * 1024];
        try
        {
            int n;
            while ((n = await from.ReadAsync(buf, _stop.Token)) > 0)
            {
                if (count) Interlocked.Add(ref _downstream, n);
                await to.WriteAsync(buf.AsMemory(0, n), _stop.Token);
            }
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        _stop.Dispose();
    }
}
