using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// A real CNCF distribution registry (Debian docker-registry, 2.8) on 127.0.0.1 with its own config and storage in a
/// temp directory: anonymous, htpasswd basic auth, or token auth against a <see cref="TokenServer"/>. Shared by the
/// Oci, Storage and ImageTool tests (linked into those projects).
/// </summary>
public sealed class RegistryServer : IDisposable
{
    public const string Binary = "/usr/bin/docker-registry";
    private Process? _process;
    private readonly System.Text.StringBuilder _log = new();

    public int Port { get; }
    public string Host => $"127.0.0.1:{Port}";
    /// <summary>True when the registry serves https (started with a certificate).</summary>
    public bool Tls { get; private init; }
    public string Root { get; }

    private RegistryServer(string root, int port)
    {
        Root = root;
        Port = port;
    }

    /// <summary>True while the registry process runs (false after <see cref="Stop"/>).</summary>
    public bool Running => _process is { HasExited: false };

    public static bool Available => File.Exists(Binary);

    /// <summary>Starts a registry; <paramref name="htpasswdLine"/> turns on basic auth, <paramref name="token"/> token auth;
    /// <paramref name="tlsCertificate"/> and <paramref name="tlsKey"/> (PEM files: the certificate with any intermediates
    /// after it, and its key) make it serve https (distribution config <c>http.tls</c>); <paramref name="redirectTo"/> turns on
    /// distribution's redirect storage middleware, so blob GETs are answered with 307 to that base URL plus the blob's path
    /// in the storage tree (<c>/docker/registry/v2/blobs/sha256/ab/ab…/data</c>, a file under <see cref="Root"/>/data).</summary>
    public static RegistryServer Start(string? htpasswdLine = null, TokenServer? token = null, string? tlsCertificate = null, string? tlsKey = null,
        string? redirectTo = null)
    {
        if ((tlsCertificate is null) != (tlsKey is null)) throw new ArgumentException("TLS needs both a certificate and a key");
        if (!Available) throw new InvalidOperationException($"{Binary} is missing: run tests/setup.sh (package docker-registry)");
        var root = Path.Combine(Path.GetTempPath(), $"vfs-registry-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path.Combine(root, "data"));
        int port = FreePort();
        string auth = "";
        if (htpasswdLine is not null)
        {
            File.WriteAllText(Path.Combine(root, "htpasswd"), htpasswdLine + "\n");
            auth = $"auth:\n  htpasswd:\n    realm: vfs-basic\n    path: {root}/htpasswd\n";
        }
        else if (token is not null)
        {
            auth = $"auth:\n  token:\n    realm: {token.Realm}\n    service: {token.Service}\n    issuer: {token.Issuer}\n    rootcertbundle: {token.CertificatePath}\n";
        }
        string tls = tlsCertificate is null ? "" : $"  tls:\n    certificate: {tlsCertificate}\n    key: {tlsKey}";
        string middleware = redirectTo is null ? "" : $"middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {redirectTo}";
        var config = $"""
            version: 0.1
            log:
              level: error
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: {root}/data
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{port}
              secret: vfs-test-secret
            {tls}
            {middleware}
            {auth}
            """;
        File.WriteAllText(Path.Combine(root, "config.yml"), config);
        var server = new RegistryServer(root, port) { Tls = tlsCertificate is not null };
        try
        {
            server.Launch();
        }
        catch
        {
            server.Dispose();
            throw;
        }
        return server;
    }

    /// <summary>Starts the registry process on this server's port and storage and waits until it accepts connections.</summary>
    private void Launch()
    {
        var psi = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add(Path.Combine(Root, "config.yml"));
        var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _process = p;
        var deadline = Stopwatch.StartNew();
        while (!Accepts(Port))
        {
            if (p.HasExited) { string l; lock (_log) l = _log.ToString(); throw new InvalidOperationException($"registry exited: {l}"); }
            if (deadline.Elapsed > TimeSpan.FromSeconds(60)) throw new TimeoutException("registry did not start within 60 s");
            Thread.Sleep(50);
        }
    }

    /// <summary>Kills the registry: connections are refused until <see cref="Resume"/>, which serves the same storage on
    /// the same port (how tests take the network away under a running daemon and bring it back).</summary>
    public void Stop()
    {
        if (_process is not { HasExited: false } p) return;
        p.Kill(entireProcessTree: true);
        p.WaitForExit(5000);
        var clock = Stopwatch.StartNew();
        while (Accepts(Port) && clock.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
    }

    /// <summary>Starts the registry again after <see cref="Stop"/>.</summary>
    public void Resume()
    {
        if (Running) return;
        _process?.Dispose();
        Launch();
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

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    public RegistryOptions Options(string repo, RegistryCredentials? creds = null, int retries = 3, TimeSpan? timeout = null, string? host = null) => new()
    {
        Host = host ?? Host,
        Scheme = Tls && host is null ? "https" : null,
        Repository = repo,
        Credentials = creds,
        Transport = new()
        {
            RetryLimit = retries,
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
            RetryDelay = TimeSpan.FromMilliseconds(20),
            MaxRetryDelay = TimeSpan.FromMilliseconds(200),
        },
    };

    public void Dispose()
    {
        if (_process is not null)
        {
            try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); _process.WaitForExit(5000); } catch (InvalidOperationException) { }
            _process.Dispose();
        }
        try { Directory.Delete(Root, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
