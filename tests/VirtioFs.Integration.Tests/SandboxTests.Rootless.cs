using System.Globalization;
using System.Runtime.InteropServices;
using VirtioFs.Fuse;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// vfsd started unprivileged, as Rust virtiofsd runs rootless (src/sandbox.rs enter_namespace with CLONE_NEWUSER,
/// setup_id_mappings): --sandbox namespace then means a user namespace whose uid_map/gid_map come from --uid-map and
/// --gid-map, written directly when they map only the caller's own id, by newuidmap/newgidmap otherwise. The daemon is
/// started as nobody (65534) with setpriv; what it serves is checked through raw FUSE requests on its socket.
/// </summary>
public sealed partial class SandboxTests
{
    private const int Nobody = 65534;

    [SkippableFact]
    public void Unprivileged_namespace_sandbox_is_a_user_namespace_with_the_given_maps()
    {
        SkipUnlessRootlessPossible();
        using var share = new NobodysShare();
        File.WriteAllText(Path.Combine(share.Dir, "hello"), "hello from the host\n");
        chown(Path.Combine(share.Dir, "hello"), Nobody, Nobody);
        // One line mapping nobody's own ids: written straight into /proc/PID/{uid,gid}_map (setgroups "deny" first).
        using var vfsd = share.StartVfsd("--sandbox", "namespace", "--uid-map", ":0:65534:1:", "--gid-map", ":0:65534:1:");
        int daemon = DaemonPid(vfsd, forks: true);

        Assert.Equal("0 65534 1", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));
        Assert.Equal("0 65534 1", Squeeze(File.ReadAllText($"/proc/{daemon}/gid_map")));
        Assert.Equal("deny", File.ReadAllText($"/proc/{daemon}/setgroups").Trim());
        Assert.NotEqual(Namespace(Environment.ProcessId, "user"), Namespace(daemon, "user"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "mnt"), Namespace(daemon, "mnt"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "pid"), Namespace(daemon, "pid"));
        Assert.Equal(DevIno(share.Dir), DevIno($"/proc/{daemon}/root"));
        var status = Status(daemon);
        // As the host sees it: every id of the daemon is nobody; inside it is root of its namespace with virtiofsd's
        // capability list only (capabilities that count in that namespace alone).
        Assert.Equal("65534 65534 65534 65534", Squeeze(status["Uid"]));
        Assert.Equal("2", status["Seccomp"]);
        Assert.Equal(PassthroughCaps, ulong.Parse(status["CapEff"], NumberStyles.HexNumber, CultureInfo.InvariantCulture));

        using (var guest = RawFuseClient.Connect(share.Socket))
        {
            Assert.Equal(0, guest.Lookup(FuseConstants.RootId, "hello", out FuseEntryOut hello));
            // The host's nobody is the namespace's root: that is the owner the guest sees.
            Assert.Equal(0u, hello.attr.uid);
            Assert.Equal(0u, hello.attr.gid);
            Assert.Equal((ulong)"hello from the host\n".Length, hello.attr.size);
            // A directory the guest's root makes belongs to nobody on the host.
            Assert.Equal(0, guest.MkDir(FuseConstants.RootId, "made-by-guest", 0, 0, out _));
        }
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Equal((Nobody, Nobody), Owner(Path.Combine(share.Dir, "made-by-guest")));
    }

    [SkippableFact]
    public void Unprivileged_vfsd_enters_a_user_namespace_by_default_as_virtiofsd_does()
    {
        // virtiofsd src/main.rs: --sandbox defaults to namespace for every caller; src/sandbox.rs enter_namespace adds
        // CLONE_NEWUSER when not root, and setup_id_mappings, given no --uid-map/--gid-map, maps the caller's own uid
        // and gid to themselves (written directly, setgroups "deny" first); setresuid(0) then fails (0 is unmapped)
        // and the daemon carries on as that id, with the namespace's capabilities.
        SkipUnlessRootlessPossible();
        using var share = new NobodysShare();
        File.WriteAllText(Path.Combine(share.Dir, "hello"), "hello from the host\n");
        chown(Path.Combine(share.Dir, "hello"), Nobody, Nobody);
        using var vfsd = share.StartVfsd();
        int daemon = DaemonPid(vfsd, forks: true);

        Assert.NotEqual(Namespace(Environment.ProcessId, "user"), Namespace(daemon, "user"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "mnt"), Namespace(daemon, "mnt"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "pid"), Namespace(daemon, "pid"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "net"), Namespace(daemon, "net"));
        Assert.Equal("65534 65534 1", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));
        Assert.Equal("65534 65534 1", Squeeze(File.ReadAllText($"/proc/{daemon}/gid_map")));
        Assert.Equal("deny", File.ReadAllText($"/proc/{daemon}/setgroups").Trim());
        Assert.Equal(DevIno(share.Dir), DevIno($"/proc/{daemon}/root"));
        var status = Status(daemon);
        Assert.Equal("65534 65534 65534 65534", Squeeze(status["Uid"]));
        Assert.Equal("2", status["Seccomp"]);

        using (var guest = RawFuseClient.Connect(share.Socket))
        {
            Assert.Equal(0, guest.Lookup(FuseConstants.RootId, "hello", out FuseEntryOut hello));
            // Only nobody is mapped, and maps to itself: that is the owner the guest sees.
            Assert.Equal((uint)Nobody, hello.attr.uid);
            Assert.Equal("hello from the host\n", System.Text.Encoding.UTF8.GetString(guest.ReadFile(hello.nodeid)));
            Assert.Equal(0, guest.MkDir(FuseConstants.RootId, "made-by-guest", 0, 0, out _));
        }
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Equal((Nobody, Nobody), Owner(Path.Combine(share.Dir, "made-by-guest")));
        Assert.Contains("new user namespace", vfsd.Process.Output, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Unprivileged_vfsd_serves_an_image_from_a_tmpfs_root_in_its_user_namespace()
    {
        // The default sandbox of an image run (a read-only tmpfs root holding only the bootstrap, blob and cache
        // directories), set up as the root of a user namespace the caller made, as for the shared directory above.
        SkipUnlessRootlessPossible();
        using var share = new NobodysShare();
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("hello.txt"), "hello from a rootless image\n");
        ws.Build();
        File.SetUnixFileMode(ws.Root, (UnixFileMode)Convert.ToInt32("755", 8));
        Directory.CreateDirectory(ws.CacheDir);
        chown(ws.CacheDir, Nobody, Nobody);
        using var vfsd = Vfsd.StartAs(["setpriv", $"--reuid={Nobody}", $"--regid={Nobody}", "--clear-groups"], share.Socket,
            "--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--cache-dir", ws.CacheDir);
        int daemon = DaemonPid(vfsd, forks: true);
        Assert.NotEqual(Namespace(Environment.ProcessId, "user"), Namespace(daemon, "user"));
        Assert.NotEqual(Namespace(Environment.ProcessId, "mnt"), Namespace(daemon, "mnt"));
        Assert.Equal("65534 65534 1", Squeeze(File.ReadAllText($"/proc/{daemon}/uid_map")));
        string root = $"/proc/{daemon}/root";
        Assert.False(Directory.Exists(root + "/usr/bin"));
        Assert.True(File.Exists(root + ws.Bootstrap));
        Assert.False(Directory.Exists(root + ws.Src));
        Assert.Equal(0UL, ulong.Parse(Status(daemon)["CapEff"], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        using (var guest = RawFuseClient.Connect(share.Socket))
        {
            Assert.Equal(0, guest.Lookup(FuseConstants.RootId, "hello.txt", out FuseEntryOut hello));
            Assert.Equal("hello from a rootless image\n", System.Text.Encoding.UTF8.GetString(guest.ReadFile(hello.nodeid)));
        }
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
    }

    [SkippableTheory]
    // virtiofsd sandbox.rs enter(): SandboxModeInvalidUID (chroot is for root) and SandboxModeInvalidUidMap/GidMap
    // (a map needs the namespace sandbox); vfsd refuses them before it starts, with one line and exit 2.
    [InlineData("root", "--sandbox", "chroot")]
    [InlineData("--sandbox namespace", "--sandbox", "none", "--uid-map", ":0:65534:1:")]
    [InlineData("--sandbox namespace", "--sandbox", "none", "--gid-map", ":0:65534:1:")]
    public void Unprivileged_vfsd_refuses_what_rootless_virtiofsd_refuses(string hint, params string[] args)
    {
        SkipUnlessRootlessPossible();
        using var share = new NobodysShare();
        using var p = ProcessRunner.Start("setpriv", [$"--reuid={Nobody}", $"--regid={Nobody}", "--clear-groups", Repo.Vfsd,
            "--socket-path", share.Socket, "--shared-dir", share.Dir, .. args]);
        Assert.Equal(2, p.WaitForExit(TimeSpan.FromSeconds(60)));
        string error = Assert.Single(p.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(hint, error, StringComparison.Ordinal);
        Assert.False(File.Exists(share.Socket));
    }

    [SkippableFact]
    public void Ranges_beyond_the_callers_own_id_are_set_by_newuidmap()
    {
        SkipUnlessRootlessPossible();
        Skip.IfNot(File.Exists("/usr/bin/newuidmap") && File.Exists("/usr/bin/newgidmap"), "newuidmap/newgidmap missing (bash tests/setup.sh installs uidmap)");
        string? range = SubordinateRange("/etc/subuid");
        Skip.If(range is null || SubordinateRange("/etc/subgid") != range,
            "nobody has no subordinate id range of at least 1000 in /etc/subuid and /etc/subgid (bash tests/setup.sh adds 1065536:65536)");
        using var share = new NobodysShare();
        // Writable for the guest's uid 5 (the namespace's 5), which is not the share's owner.
        File.SetUnixFileMode(share.Dir, (UnixFileMode)Convert.ToInt32("777", 8));
        using var vfsd = share.StartVfsd("--sandbox", "namespace", "--uid-map", $":0:65534:1:", "--uid-map", $":1:{range}:1000:",
            "--gid-map", ":0:65534:1:", "--gid-map", $":1:{range}:1000:");
        int daemon = DaemonPid(vfsd, forks: true);
        Assert.Equal($"0 65534 1\n1 {range} 1000", string.Join('\n', File.ReadAllLines($"/proc/{daemon}/uid_map").Select(Squeeze)));
        Assert.Equal($"0 65534 1\n1 {range} 1000", string.Join('\n', File.ReadAllLines($"/proc/{daemon}/gid_map").Select(Squeeze)));
        using (var guest = RawFuseClient.Connect(share.Socket))
        {
            // The guest's uid 5 creates: with 5 mapped the daemon's fsuid switch works, and the host sees range + 4.
            Assert.Equal(0, guest.MkDir(FuseConstants.RootId, "by-uid-5", 5, 5, out FuseEntryOut made));
            Assert.Equal(5u, made.attr.uid);
        }
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
        int hostId = int.Parse(range!, CultureInfo.InvariantCulture) + 4;
        Assert.Equal((hostId, hostId), Owner(Path.Combine(share.Dir, "by-uid-5")));
    }

    private static void SkipUnlessRootlessPossible()
    {
        Skip.IfNot(geteuid() == 0, "starting vfsd as another user needs root");
        Skip.IfNot(File.Exists("/usr/bin/setpriv"), "setpriv (util-linux) missing");
        Skip.If(File.ReadAllText("/proc/sys/user/max_user_namespaces").Trim() == "0", "user namespaces are disabled (user.max_user_namespaces = 0)");
    }

    /// <summary>The first subordinate id of nobody's range in FILE when it holds at least 1000 ids.</summary>
    private static string? SubordinateRange(string file)
    {
        if (!File.Exists(file)) return null;
        foreach (string line in File.ReadAllLines(file))
        {
            string[] f = line.Split(':');
            if (f.Length == 3 && f[0] is "nobody" or "65534" && long.TryParse(f[2], CultureInfo.InvariantCulture, out long n) && n >= 1000) return f[1];
        }
        return null;
    }

    private static string Squeeze(string s) => string.Join(' ', s.Split((char[])[' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries));

    private static (int Uid, int Gid) Owner(string path)
    {
        using var p = ProcessRunner.Start("stat", ["-c", "%u %g", path]);
        p.WaitForExit(TimeSpan.FromSeconds(30));
        string[] f = p.Output.Trim().Split(' ');
        return (int.Parse(f[0], CultureInfo.InvariantCulture), int.Parse(f[1], CultureInfo.InvariantCulture));
    }

    /// <summary>A share nobody owns, under a directory nobody may enter, and a socket path nobody may create.</summary>
    private sealed class NobodysShare : IDisposable
    {
        private readonly string _top = Directory.CreateTempSubdirectory("vfs-rootless-").FullName;

        public NobodysShare()
        {
            File.SetUnixFileMode(_top, (UnixFileMode)Convert.ToInt32("755", 8));
            Dir = Directory.CreateDirectory(Path.Combine(_top, "share")).FullName;
            Directory.CreateDirectory(Path.Combine(_top, "run"));
            chown(Dir, Nobody, Nobody);
            chown(Path.Combine(_top, "run"), Nobody, Nobody);
            Socket = Path.Combine(_top, "run", "vfsd.sock");
        }

        public string Dir { get; }
        public string Socket { get; }

        /// <summary>out/vfsd as nobody (setpriv execs it: the started pid is vfsd's waiting parent).</summary>
        public Vfsd StartVfsd(params string[] args) => Vfsd.StartAs(["setpriv", $"--reuid={Nobody}", $"--regid={Nobody}", "--clear-groups"],
            Socket, ["--shared-dir", Dir, "--cache", "never", .. args]);

        public void Dispose() => Directory.Delete(_top, recursive: true);
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int chown(string path, int uid, int gid);

    [LibraryImport("libc")]
    private static partial uint geteuid();
}
