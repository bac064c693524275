using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>
/// Debian's <c>docker-registry</c> (the CNCF distribution registry) on 127.0.0.1 with its storage in a temp directory.
/// It can be stopped and started again on the same port with the same storage, which is how the tests make the
/// network go away under a running daemon and come back.
/// </summary>
internal sealed class Registry : IDisposable
{
    public const string Binary = "/usr/bin/docker-registry";

    private readonly string _config;
    private ProcessRunner? _process;

    private Registry(string root, int port)
    {
        Root = root;
        Port = port;
        Directory.CreateDirectory(Path.Combine(root, "data"));
        _config = Path.Combine(root, "config.yml");
        File.WriteAllText(_config, $"""
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: {root}/data
            http:
              addr: 127.0.0.1:{port}
              secret: vfs-integration
            """);
    }

    public string Root { get; }
    public int Port { get; }
    public string Host => $"127.0.0.1:{Port}";
    public bool Running => _process is { HasExited: false };

    public static Registry Start()
    {
        if (!File.Exists(Binary)) throw new InvalidOperationException($"{Binary} is missing: run tests/setup.sh (package docker-registry)");
        var r = new Registry(Directory.CreateTempSubdirectory("vfs-it-registry-").FullName, FreePort());
        r.Resume();
        return r;
    }

    /// <summary>Starts the registry process (again) and waits until it accepts connections.</summary>
    public void Resume()
    {
        if (Running) return;
        _process?.Dispose();
        _process = ProcessRunner.Start(Binary, ["serve", _config]);
        var clock = Stopwatch.StartNew();
        while (!Accepts(Port))
        {
            if (_process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new InvalidOperationException($"docker-registry did not start on {Host}:\n{_process.Output}");
            }
            Thread.Sleep(30);
        }
    }

    /// <summary>Kills the registry: connections are refused until <see cref="Resume"/>.</summary>
    public void Stop()
    {
        _process?.Kill();
        var clock = Stopwatch.StartNew();
        while (Accepts(Port) && clock.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
    }

    /// <summary>Pushes a built image (bootstrap + blob directory) with out/vfs-image as <c>HOST/repo:tag</c>.</summary>
    public string Push(string bootstrap, string blobDir, string repoAndTag)
    {
        string target = $"{Host}/{repoAndTag}";
        using var p = ProcessRunner.Start(Repo.VfsImage, ["push", bootstrap, "--blob-dir", blobDir, "--target", target]);
        int? code = p.WaitForExit(TimeSpan.FromMinutes(5));
        if (code != 0) throw new InvalidOperationException($"vfs-image push {target} failed ({code}):\n{p.Output}");
        return target;
    }

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static bool Accepts(int port)
    {
        try
        {
            using var c = new TcpClient();
            c.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        _process?.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
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
