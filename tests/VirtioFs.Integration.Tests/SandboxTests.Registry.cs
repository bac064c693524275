using System.Globalization;
using System.Text;
using VirtioFs.Fuse;
using VirtioFs.Integration.Tests.Infrastructure;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// A registry-backed image in the default sandbox: a read-only tmpfs root holding the cache directory and, read-only,
/// the host's resolver configuration and CA certificates; the host's network (the registry is reached over it), so no
/// network namespace; libcrypto/libssl loaded before pivot_root (the manifest's sha256 is checked with them). The
/// registry is the Debian docker-registry fixture the registry tests use.
/// </summary>
public sealed partial class SandboxTests
{
    [Fact]
    public void Registry_image_is_served_from_a_root_holding_only_its_cache_on_the_hosts_network()
    {
        using var registry = RegistryServer.Start();
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("hello.txt"), "hello from the registry\n");
        ws.Build();
        string reference = registry.Push(ws.Bootstrap, ws.BlobDir, "sandbox/hello:v1");

        using var vfsd = Vfsd.Start("--image", reference, "--cache-dir", ws.CacheDir);
        int daemon = DaemonPid(vfsd, forks: true);
        Assert.NotEqual(Namespace(Environment.ProcessId, "mnt"), Namespace(daemon, "mnt"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "pid"), Namespace(daemon, "pid"));
        Assert.Equal(Namespace(Environment.ProcessId, "net"), Namespace(daemon, "net"));
        var status = Status(daemon);
        Assert.Equal("2", status["Seccomp"]);
        Assert.Equal(0UL, ulong.Parse(status["CapEff"], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        string root = $"/proc/{daemon}/root";
        Assert.False(Directory.Exists(root + "/usr/bin"));
        Assert.False(Directory.Exists(root + "/home"));
        Assert.False(Directory.Exists(root + ws.BlobDir)); // blobs come from the registry, not from the host's copy
        Assert.True(Directory.Exists(root + ws.CacheDir));
        Assert.All(Directory.GetFileSystemEntries(root + "/etc").Select(Path.GetFileName),
            name => Assert.Contains(name, new[] { "resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "ssl" }));
        Assert.Equal(["urandom"], Directory.GetFileSystemEntries(root + "/dev").Select(Path.GetFileName));

        Assert.Equal("hello from the registry\n", ReadAsGuest(vfsd, "hello.txt"));
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Contains("no network namespace", vfsd.Process.Output, StringComparison.Ordinal);
        Assert.Contains("is manifest sha256:", vfsd.Process.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Https_registry_image_is_pulled_inside_the_sandbox_trusting_the_configs_ca_file()
    {
        // A registry that serves only https, with a certificate from a CA the test makes (root, intermediate, server):
        // the pull inside the sandbox works only if the config's ca_file (nydus device.backend.config.ca_file) is
        // bound into the tmpfs root and TLS (libssl, the system trust paths .NET opens) works after pivot_root.
        using var pki = new TestCertificates();
        using var plain = RegistryServer.Start();
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("hello.txt"), "hello over https\n");
        ws.Build();
        // vfs-image talks plain http to a loopback registry (no https switch): push there, then serve the same storage
        // over https.
        string pushed = plain.Push(ws.Bootstrap, ws.BlobDir, "sandbox/tls:v1");
        using var registry = RegistryServer.Start(tlsCertificate: pki.ServerChainPath, tlsKey: pki.ServerKeyPath);
        CopyTree(Path.Combine(plain.Root, "data"), Path.Combine(registry.Root, "data"));
        string reference = $"{registry.Host}/{pushed[(pushed.IndexOf('/', StringComparison.Ordinal) + 1)..]}";
        string config = Path.Combine(ws.Root, "tls-config.json");
        File.WriteAllText(config, """{"device":{"backend":{"type":"registry","config":{"scheme":"https","ca_file":""" + $"\"{pki.CaPath}\"" + ""","retry_limit":0}}}}""");

        using var vfsd = Vfsd.Start("--image", reference, "--config", config, "--cache-dir", ws.CacheDir);
        int daemon = DaemonPid(vfsd, forks: true);
        Assert.NotEqual(Namespace(Environment.ProcessId, "mnt"), Namespace(daemon, "mnt"));
        string root = $"/proc/{daemon}/root";
        Assert.Equal(File.ReadAllText(pki.CaPath), File.ReadAllText(root + pki.CaPath));
        Assert.False(File.Exists(root + pki.ServerKeyPath));
        Assert.False(Directory.Exists(root + "/usr/bin"));

        Assert.Equal("hello over https\n", ReadAsGuest(vfsd, "hello.txt"));
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
    }

    /// <summary>LOOKUP and READ of a root entry over the daemon's vhost-user socket, as a guest would.</summary>
    private static string ReadAsGuest(Vfsd vfsd, string name)
    {
        RawFuseClient client;
        try
        {
            client = RawFuseClient.Connect(vfsd.SocketPath);
        }
        catch (IOException e)
        {
            throw new InvalidOperationException($"vfsd did not serve: {e.Message}\n{vfsd.Process.Output}", e);
        }
        using var guest = client;
        Assert.Equal(0, guest.Lookup(FuseConstants.RootId, name, out FuseEntryOut entry));
        return Encoding.UTF8.GetString(guest.ReadFile(entry.nodeid));
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        foreach (string file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)), overwrite: true);
    }
}
