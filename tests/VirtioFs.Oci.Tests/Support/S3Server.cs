using System.Diagnostics;
using System.Net.Sockets;
using VirtioFs.Oci.ObjectStorage;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// A real S3-compatible server on 127.0.0.1: npm's s3rver (installed into out/s3rver by tests/setup.sh), with one
/// bucket created at start and its single account's key pair S3RVER/S3RVER. s3rver itself checks the access key id of
/// every request but not a V4 signature (lib/middleware/authentication.js: "Signature version 4 calculation is
/// unimplemeneted"), so it runs under tests/s3rver/s3rver-sigv4.js, which recomputes every V4 signature with AWS's own
/// signer (@smithy/signature-v4) from the account's secret and answers SignatureDoesNotMatch: a wrong secret, or a
/// signer that disagrees with AWS's on any request the tests send, fails.
/// </summary>
public sealed class S3Server : IDisposable
{
    public const string Bucket = "vfs-test";
    public const string KeyId = "S3RVER";
    public const string Secret = "S3RVER";
    private readonly Process _process;

    public int Port { get; }
    public string Endpoint => $"127.0.0.1:{Port}";
    public string Root { get; }

    /// <summary>This checkout's root (where VirtioFs.sln is).</summary>
    private static string? RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "VirtioFs.sln"))) return d.FullName;
            return null;
        }
    }

    /// <summary>The launcher (null when setup.sh has not installed s3rver and AWS's signer into out/s3rver).</summary>
    public static string? Script
    {
        get
        {
            if (RepoRoot is not { } root) return null;
            string modules = Path.Combine(root, "out", "s3rver", "node_modules");
            bool installed = File.Exists(Path.Combine(modules, "s3rver", "bin", "s3rver.js"))
                && Directory.Exists(Path.Combine(modules, "@smithy", "signature-v4"))
                && Directory.Exists(Path.Combine(modules, "@aws-crypto", "sha256-js"));
            return installed ? Path.Combine(root, "tests", "s3rver", "s3rver-sigv4.js") : null;
        }
    }

    /// <param name="serviceEndpoint">s3rver's <c>serviceEndpoint</c>: requests for <c>BUCKET.s3.ENDPOINT</c> are
    /// virtual-host-style requests for BUCKET (lib/middleware/vhost.js); null keeps s3rver's amazonaws.com.</param>
    public S3Server(string? serviceEndpoint = null)
    {
        string script = Script ?? throw new InvalidOperationException("s3rver is missing: run tests/setup.sh (npm install of s3rver and @smithy/signature-v4 into out/s3rver)");
        Root = Directory.CreateTempSubdirectory("vfs-s3rver-").FullName;
        Port = RegistryServer.FreePort();
        var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment["NODE_PATH"] = Path.Combine(RepoRoot!, "out", "s3rver", "node_modules");
        foreach (var a in new[] { script, Root, "127.0.0.1", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), Bucket })
            psi.ArgumentList.Add(a);
        if (serviceEndpoint is not null) psi.ArgumentList.Add(serviceEndpoint);
        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited) throw new InvalidOperationException($"s3rver exited with {_process.ExitCode}");
            try
            {
                using var s = new TcpClient();
                s.Connect("127.0.0.1", Port);
                break;
            }
            catch (SocketException) when (deadline.Elapsed < TimeSpan.FromSeconds(60)) { Thread.Sleep(100); }
        }
    }

    /// <summary>Client options for the bucket, through <paramref name="endpoint"/> (a fault or counting proxy) when given.</summary>
    public ObjectStorageOptions Options(string prefix = "", int retries = 3, TimeSpan? timeout = null, string? endpoint = null,
        ObjectStorageCredentials? credentials = null) => new()
        {
            Kind = ObjectStorageKind.S3,
            Scheme = "http",
            Endpoint = endpoint ?? Endpoint,
            Region = "us-east-1",
            Bucket = Bucket,
            ObjectPrefix = prefix,
            Credentials = credentials ?? new ObjectStorageCredentials(KeyId, Secret),
            Transport = new()
            {
                RetryLimit = retries,
                Timeout = timeout ?? TimeSpan.FromSeconds(10),
                RetryDelay = TimeSpan.FromMilliseconds(50),
                MaxRetryDelay = TimeSpan.FromMilliseconds(200),
            },
        };

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}
