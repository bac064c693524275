using System.Globalization;
using System.Runtime.InteropServices;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Issue 9 items 1-3 against the published out/vfsd: in each --sandbox mode the daemon's mount namespace, root,
/// seccomp state and capabilities are read from /proc; a guest reads and writes through each mode; a directory moved
/// out of the share behind the guest's back leads nowhere; and the seccomp filter kills (or logs) a syscall off the
/// list. The daemon is the child of the process the caller started in namespace and chroot modes (virtiofsd forks
/// the same way: the parent waits, forwards signals and removes the socket).
/// </summary>
[Collection(GuestCollection.Name)]
public sealed partial class SandboxTests(ITestOutputHelper output)
{
    /// <summary>virtiofsd's list (src/main.rs drop_capabilities): CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP.</summary>
    private const ulong PassthroughCaps = 0x880000db;

    [Theory]
    [InlineData("namespace")]
    [InlineData("chroot")]
    [InlineData("none")]
    public void Each_mode_confines_the_daemon_as_proc_shows_it(string mode)
    {
        using var tree = new TestTree();
        File.WriteAllText(Path.Combine(tree.Root, "inside"), "x");
        using var vfsd = Vfsd.Start("--shared-dir", tree.Root, "--sandbox", mode);
        int daemon = DaemonPid(vfsd, forks: mode != "none");
        var status = Status(daemon);

        Assert.Equal("2", status["Seccomp"]);
        Assert.Equal("1", status["NoNewPrivs"]);
        Assert.Equal(PassthroughCaps, ulong.Parse(status["CapEff"], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        Assert.Equal(PassthroughCaps, ulong.Parse(status["CapBnd"], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        string ownMnt = Namespace(Environment.ProcessId, "mnt");
        var root = DevIno($"/proc/{daemon}/root");
        switch (mode)
        {
            case "namespace":
                Assert.NotEqual(ownMnt, Namespace(daemon, "mnt"));
                Assert.NotEqual(Namespace(Environment.ProcessId, "pid"), Namespace(daemon, "pid"));
                Assert.NotEqual(Namespace(Environment.ProcessId, "net"), Namespace(daemon, "net"));
                Assert.NotEqual(Namespace(Environment.ProcessId, "ipc"), Namespace(daemon, "ipc"));
                Assert.Equal(DevIno(tree.Root), root);
                // The old root is detached: nothing but the share is under the daemon's "/".
                Assert.Equal(["inside"], Directory.GetFileSystemEntries($"/proc/{daemon}/root").Select(Path.GetFileName));
                break;
            case "chroot":
                Assert.Equal(ownMnt, Namespace(daemon, "mnt"));
                Assert.Equal(DevIno(tree.Root), root);
                break;
            default:
                Assert.Equal(ownMnt, Namespace(daemon, "mnt"));
                Assert.Equal(DevIno("/"), root);
                break;
        }
    }

    [Fact]
    public void Killing_the_started_process_takes_the_sandboxed_daemon_with_it_and_sigterm_exits_0()
    {
        using var tree = new TestTree();
        // Kata's Go runtime kills virtiofsd with SIGKILL: no orphan may survive in the pid namespace.
        using (var killed = Vfsd.Start("--shared-dir", tree.Root))
        {
            int daemon = DaemonPid(killed, forks: true);
            killed.Process.Kill();
            Assert.True(WaitGone(daemon, TimeSpan.FromSeconds(30)), $"daemon {daemon} outlived its parent");
        }
        // SIGTERM is forwarded; the daemon's exit status becomes the parent's, and the parent removes the socket.
        using var polite = Vfsd.Start("--shared-dir", tree.Root);
        DaemonPid(polite, forks: true);
        var ready = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!polite.Process.Output.Contains("listening", StringComparison.Ordinal) && DateTime.UtcNow < ready) Thread.Sleep(50);
        Assert.Equal(0, kill(polite.Process.Id, 15));
        Assert.Equal(0, polite.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.False(File.Exists(polite.SocketPath));
        Assert.False(File.Exists(polite.SocketPath + ".pid"));
    }

    [Fact]
    public void Image_mode_root_holds_only_the_image_files()
    {
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("hello.txt"), "hello");
        ws.Build();
        using var vfsd = Vfsd.Start("--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--cache-dir", ws.CacheDir);
        int daemon = DaemonPid(vfsd, forks: true);
        var status = Status(daemon);
        Assert.Equal("2", status["Seccomp"]);
        Assert.Equal(0UL, ulong.Parse(status["CapEff"], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        Assert.NotEqual(Namespace(Environment.ProcessId, "mnt"), Namespace(daemon, "mnt"));
        string root = $"/proc/{daemon}/root";
        Assert.False(Directory.Exists(root + "/etc"));
        Assert.False(Directory.Exists(root + "/usr"));
        Assert.Equal(new[] { "blobs", "bootstrap", "cache" }, Directory.GetFileSystemEntries(root + ws.Root).Select(Path.GetFileName).Order());
        Assert.Equal(Directory.GetFiles(ws.BlobDir).Select(Path.GetFileName).Order(), Directory.GetFiles(root + ws.BlobDir).Select(Path.GetFileName).Order());
    }

    [Theory]
    [InlineData("namespace")]
    [InlineData("chroot")]
    [InlineData("none")]
    public void Guest_reads_and_writes_through_each_mode(string mode)
    {
        using var tree = new TestTree();
        File.WriteAllText(Path.Combine(tree.Root, "from-host"), "host says hi\n");
        using var vfsd = Vfsd.Start("--shared-dir", tree.Root, "--cache", "never", "--tag", "vfs", "--sandbox", mode);
        const string script = """
            set -e
            echo "@@READ $(cat /mnt/vfs/from-host)"
            mkdir /mnt/vfs/dir
            printf 'guest wrote this' > /mnt/vfs/dir/from-guest
            chmod 0640 /mnt/vfs/dir/from-guest
            mv /mnt/vfs/dir/from-guest /mnt/vfs/renamed
            sync
            echo "@@DONE ok"
            """;
        var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("host says hi", result.Single("READ"));
        Assert.Equal("ok", result.Single("DONE"));
        Assert.Equal("guest wrote this", File.ReadAllText(Path.Combine(tree.Root, "renamed")));
        Assert.Equal((UnixFileMode)Convert.ToInt32("640", 8), File.GetUnixFileMode(Path.Combine(tree.Root, "renamed")));
        Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(60)));
    }

    /// <summary>
    /// The host-side rename escape: the guest sits in a directory, the host moves it out of the share, and the guest
    /// then walks up, looks up and opens from there. A sentinel file lies beside the share; its unique name must never
    /// appear in the guest. The guest kernel resolves ".." from its own dentry cache; the daemon's ".." (LOOKUP "..",
    /// and any *at() walk from the moved directory's fd) ends at the bind mount that is its root, since the kernel
    /// refuses ".." from a dentry no longer under a bind mount's root (path_connected): that is what the namespace
    /// sandbox adds to the *at() discipline.
    /// </summary>
    [Fact]
    public void A_directory_moved_out_of_the_share_leads_the_guest_nowhere()
    {
        string top = Directory.CreateTempSubdirectory("vfs-escape-").FullName;
        try
        {
            string share = Directory.CreateDirectory(Path.Combine(top, "share")).FullName;
            string outside = Directory.CreateDirectory(Path.Combine(top, "outside")).FullName;
            Directory.CreateDirectory(Path.Combine(share, "held", "sub"));
            string sentinel = "SENTINEL" + Guid.NewGuid().ToString("N");
            File.WriteAllText(Path.Combine(top, sentinel), "outside the share");
            File.WriteAllText(Path.Combine(outside, sentinel + "-2"), "outside the share");
            using var vfsd = Vfsd.Start("--shared-dir", share, "--cache", "never", "--tag", "vfs");
            // The host moves the held directory out as soon as the guest says it is inside.
            Exception? moveFailed = null;
            var mover = new Thread(() =>
            {
                try
                {
                    var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(10);
                    while (!File.Exists(Path.Combine(share, "ready")) && DateTime.UtcNow < deadline) Thread.Sleep(100);
                    Directory.Move(Path.Combine(share, "held"), Path.Combine(outside, "held"));
                    File.WriteAllText(Path.Combine(share, "moved"), "");
                }
                catch (IOException e)
                {
                    moveFailed = e;
                }
            });
            mover.Start();
            const string script = """
                cd /mnt/vfs/held/sub
                touch /mnt/vfs/ready
                i=0; while [ ! -e /mnt/vfs/moved ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
                echo "@@MOVED $(ls /mnt/vfs)"
                ls -la . .. ../.. ../../.. 2>&1
                ls -laR .. 2>&1 | head -n 200
                cat ../* ../../* ../../../* 2>&1 | head -n 50
                find .. ../.. -maxdepth 4 2>&1 | head -n 200
                cd .. 2>&1; ls -la 2>&1; cd .. 2>&1; ls -la 2>&1
                echo "@@DONE ok"
                """;
            var result = Guest.Run(script, [("vfs", vfsd.SocketPath)], output);
            mover.Join();
            Assert.Null(moveFailed);
            Assert.Equal("ok", result.Single("DONE"));
            Assert.DoesNotContain("held", result.Single("MOVED"), StringComparison.Ordinal);
            Assert.DoesNotContain(sentinel, result.Console, StringComparison.Ordinal);
            Assert.DoesNotContain("outside the share", result.Console, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(top, recursive: true);
        }
    }

    /// <summary>
    /// The filter itself: native-shim's probe links the same sandbox.o and seccomp_x86_64.list as vfsd and is started
    /// with a plan as vfsd re-executes itself with one. ptrace is off the list: under kill the process dies of SIGSYS
    /// (the kernel's audit record names the syscall), under log it goes on; an allowed call passes under kill.
    /// </summary>
    [Fact]
    public void A_syscall_off_the_list_kills_under_kill_and_is_only_logged_under_log()
    {
        string shim = Path.Combine(Repo.Root, "native-shim");
        using (var make = ProcessRunner.Start("make", ["-s", "-C", shim, "build/sandbox_probe"]))
        {
            Assert.True(make.WaitForExit(TimeSpan.FromMinutes(5)) == 0, make.Output);
        }
        string list = File.ReadAllText(Path.Combine(shim, "seccomp_x86_64.list"));
        Assert.DoesNotContain("\nptrace\n", list, StringComparison.Ordinal);
        Assert.Contains("\ngetpid\n", list, StringComparison.Ordinal);
        string probe = Path.Combine(shim, "build", "sandbox_probe");

        Assert.Equal(128 + 31, RunProbe(probe, "kill", "ptrace"));   // SIGSYS: SECCOMP_RET_KILL_PROCESS
        Assert.Equal(0, RunProbe(probe, "kill", "getpid"));
        Assert.Equal(0, RunProbe(probe, "log", "ptrace"));           // SECCOMP_RET_LOG: allowed, recorded by the kernel
        Assert.Equal(0, RunProbe(probe, "none", "ptrace"));
    }

    private static int RunProbe(string probe, string action, string syscall)
    {
        using var p = ProcessRunner.Start(probe, [syscall], environment: new Dictionary<string, string>
        {
            ["VFSD_SANDBOX"] = $"mode none\nseccomp {action}\n",
        });
        return p.WaitForExit(TimeSpan.FromSeconds(60)) ?? throw new TimeoutException("probe hung");
    }

    /// <summary>The serving process: the started one, or (namespace, chroot) its only child; waits until the sandbox's
    /// constructor has installed the filter.</summary>
    private static int DaemonPid(Vfsd vfsd, bool forks) => DaemonPid(vfsd.Process, forks);

    private static int DaemonPid(ProcessRunner started, bool forks)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            int pid = started.Id;
            if (forks)
            {
                string children = TryRead($"/proc/{pid}/task/{pid}/children")?.Trim() ?? "";
                pid = children.Length == 0 ? -1 : int.Parse(children.Split(' ')[0], CultureInfo.InvariantCulture);
            }
            if (pid > 0 && TryStatus(pid) is { } s && s.GetValueOrDefault("Seccomp") == "2")
            {
                return pid;
            }
            Thread.Sleep(50);
        }
        throw new TimeoutException($"no sandboxed daemon under {started.Id}:\n{started.Output}");
    }

    private static bool WaitGone(int pid, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            // A zombie is gone as far as serving goes; its parent (here: nobody but init) reaps it.
            string? stat = TryRead($"/proc/{pid}/stat");
            if (stat is null || stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z')) return true;
            Thread.Sleep(100);
        }
        return false;
    }

    private static Dictionary<string, string> Status(int pid) => TryStatus(pid) ?? throw new InvalidOperationException($"process {pid} is gone");

    private static Dictionary<string, string>? TryStatus(int pid)
    {
        string? text = TryRead($"/proc/{pid}/status");
        if (text is null) return null;
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in text.Split('\n'))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0) result[line[..colon]] = line[(colon + 1)..].Trim();
        }
        return result;
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string Namespace(int pid, string kind) => new FileInfo($"/proc/{pid}/ns/{kind}").LinkTarget!;

    private static (ulong Dev, ulong Ino) DevIno(string path)
    {
        if (statx(-100, path, 0, 0x100 /* STATX_INO */, out StatxBuffer b) != 0)
        {
            throw new IOException($"statx {path}: errno {Marshal.GetLastPInvokeError()}");
        }
        return (((ulong)b.DevMajor << 32) | b.DevMinor, b.Ino);
    }

    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct StatxBuffer
    {
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, out StatxBuffer buffer);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}
