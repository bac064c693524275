using System.Diagnostics;
using System.Net.Sockets;
using VirtioFs.Oci.ObjectStorage;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// A real S3-compatible server on 127.0.0.1: npm's s3rver (installed into out/s3rver by tests/setup.sh), with one
/// bucket created at start and its single account's key pair S3RVER/S3RVER. s3rver checks the access key id of every
/// request (an unknown one is InvalidAccessKeyId) and verifies Signature V2 but accepts any well-formed V4 signature
/// (lib/middleware/authentication.js: "Signature version 4 calculation is unimplemented"), so the V4 signer is checked
/// against AWS's published examples instead (AwsSignatureV4Tests).
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

    /// <summary>The s3rver entry point in this checkout's out/ directory (null when setup.sh has not installed it).</summary>
    public static string? Script
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            {
                if (!File.Exists(Path.Combine(d.FullName, "VirtioFs.sln"))) continue;
                string s = Path.Combine(d.FullName, "out", "s3rver", "node_modules", "s3rver", "bin", "s3rver.js");
                return File.Exists(s) ? s : null;
            }
            return null;
        }
    }

    public S3Server()
    {
        string script = Script ?? throw new InvalidOperationException("s3rver is missing: run tests/setup.sh (npm install of s3rver into out/s3rver)");
        Root = Directory.CreateTempSubdirectory("vfs-s3rver-").FullName;
        Port = RegistryServer.FreePort();
        var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { script, "-d", Root, "-a", "127.0.0.1", "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--silent", "--configure-bucket", Bucket })
            psi.ArgumentList.Add(a);
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
            RetryLimit = retries,
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
            RetryDelay = TimeSpan.FromMilliseconds(50),
            MaxRetryDelay = TimeSpan.FromMilliseconds(200),
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
