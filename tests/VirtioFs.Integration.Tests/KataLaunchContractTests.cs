using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Each Kata launch form, replayed against out/vfsd with the exact argv the runtime builds and waited for exactly as
/// the runtime waits (the file beside each case is where the form comes from, in kata-containers/kata-containers).
/// After the wait the hypervisor's side happens at once: a vhost-user front-end connects and negotiates. A refused
/// flag, a missing readiness line, a socket that refuses the connection or an API that never says RUNNING fails.
/// </summary>
public sealed class KataLaunchContractTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-kata-").FullName;
    private readonly List<Process> _processes = [];

    public void Dispose()
    {
        foreach (Process p in _processes)
        {
            try
            {
                if (!p.HasExited)
                {
                    p.Kill();
                    p.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }
            p.Dispose();
        }
        Directory.Delete(_dir, recursive: true);
    }

    private string Shared()
    {
        string shared = Path.Combine(_dir, "shared");
        Directory.CreateDirectory(shared);
        File.WriteAllText(Path.Combine(shared, "hello.txt"), "hello\n");
        return shared;
    }

    // ---- Go runtime, plain virtio-fs ----------------------------------------------------------------------------

    [Theory]
    // src/runtime/virtcontainers/virtiofsd.go args() + qemu.go createVirtiofsDaemon (appends --xattr unless
    // disable_guest_selinux) + the Makefile's DEFVIRTIOFSEXTRAARGS.
    [InlineData("qemu", "--thread-pool-size=1 --announce-submounts --xattr")]
    // The same virtiofsd.go with clh.go createVirtiofsDaemon (no --xattr), and a cache mode set in the toml.
    [InlineData("clh", "--thread-pool-size=1 --announce-submounts")]
    public void Go_runtime_virtiofsd_form_serves_on_the_socket_kata_listens_on(string hypervisor, string extraArgs)
    {
        string socket = Path.Combine(_dir, "vhost-fs.sock");
        // virtiofsd.go getSocketFD(): Kata binds and listens itself, then passes the socket as ExtraFiles[0] = fd 3
        // and waits for nothing before it starts the hypervisor.
        string[] args = ["--syslog", hypervisor == "clh" ? "--cache=never" : "--cache=auto", $"--shared-dir={Shared()}", "--fd=3", .. extraArgs.Split(' ')];
        Process vfsd = StartWithListeningFd3(socket, args);
        using (var frontEnd = ConnectAtOnce(socket))
        {
            Negotiate(frontEnd, expectConfig: false);
        }
        Assert.True(vfsd.WaitForExit(Patience), "vfsd did not exit when the front-end left");
        Assert.Equal(0, vfsd.ExitCode);
    }

    // ---- runtime-rs, plain virtio-fs ----------------------------------------------------------------------------

    [Theory]
    // src/runtime-rs/crates/resource/src/share_fs/share_virtio_fs_standalone.rs virtiofsd_args(): --socket-path,
    // --shared-dir, --cache, the extra args (runtime-rs Makefile default), then --xattr.
    [InlineData("--thread-pool-size=1 -o announce_submounts --xattr", false, false)]
    // A user who adds --syslog (and a --tag) to virtio_fs_extra_args: runtime-rs still reads stderr.
    [InlineData("--thread-pool-size=1 -o announce_submounts --syslog --tag=kataShared --xattr", true, false)]
    // Rootless: a bare socket file name, with the working directory set to the socket's directory.
    [InlineData("--thread-pool-size=1 -o announce_submounts --xattr", false, true)]
    public void Runtime_rs_virtiofsd_form_prints_the_line_runtime_rs_waits_for(string extraArgs, bool tagged, bool rootless)
    {
        string socket = Path.Combine(_dir, "vhost-fs.sock");
        string[] args = ["--socket-path", rootless ? "vhost-fs.sock" : socket, "--shared-dir", Shared(), "--cache", "auto", .. extraArgs.Split(' ')];
        Process vfsd = Start(Repo.Vfsd, args, workingDirectory: rootless ? _dir : null);
        // run_virtiofsd(): reads stderr line by line and proceeds on the first line containing this text.
        WaitForStderrLine(vfsd, "Waiting for vhost-user socket connection");
        using (var frontEnd = ConnectAtOnce(socket))
        {
            Negotiate(frontEnd, expectConfig: tagged);
        }
        Assert.True(vfsd.WaitForExit(Patience));
        Assert.Equal(0, vfsd.ExitCode);
        Assert.False(File.Exists(socket));
    }

    // ---- virtio-fs-nydus, both runtimes -------------------------------------------------------------------------

    [Theory]
    // src/runtime/virtcontainers/nydusd.go args(): stdout and stderr to one pipe; waitUntilNydusAPIServerReady()
    // polls GET /api/v1/daemon 20 times from 20 ms (retry-go's default back-off doubles the delay), then
    // setupPassthroughFS() mounts the shared directory at /containers with an empty config.
    [InlineData(false, 20, 20)]
    // src/runtime-rs/crates/resource/src/share_fs/nydus/nydus_daemon.rs build_args() adds --hybrid-mode;
    // start() polls 100 times, 100 ms apart (nydus_client.rs wait_until_ready), then setup_passthrough_fs().
    [InlineData(true, 100, 100)]
    public async Task Nydusd_virtiofs_form_reports_running_and_the_socket_accepts_at_once(bool runtimeRs, int attempts, int delayMs)
    {
        string api = Path.Combine(_dir, "nydusd-api.sock");
        string socket = Path.Combine(_dir, runtimeRs ? "virtiofsd.sock" : "vhost-fs.sock");
        string[] args = runtimeRs
            ? ["virtiofs", "--hybrid-mode", "--log-level", "info", "--apisock", api, "--sock", socket]
            : ["virtiofs", "--log-level", "info", "--apisock", api, "--sock", socket];
        Process vfsd = Start(Repo.Vfsd, args);
        using HttpClient http = VfsdApi.Client(api);
        await WaitForRunning(http, vfsd, attempts, delayMs, backOff: !runtimeRs);
        // RUNNING is all the runtime waits for before it starts the VM: the vhost-user socket must exist by then.
        Assert.True(File.Exists(socket), "the API said RUNNING before the vhost-user socket existed");
        using (var mount = await http.PostAsync(new Uri("http://unix/api/v1/mount?mountpoint=/containers"),
            VfsdApi.Body("passthrough_fs", Shared(), "")))
        {
            Assert.Equal(HttpStatusCode.NoContent, mount.StatusCode);
        }
        // The runtime starts the VM now; it connects to --sock straight away.
        using (var frontEnd = ConnectAtOnce(socket))
        {
            Negotiate(frontEnd, expectConfig: false);
        }
        Assert.True(vfsd.WaitForExit(Patience));
        Assert.Equal(0, vfsd.ExitCode);
    }

    // ---- refusals -----------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("EROFS over fscache", "singleton", "--fscache", "/var/lib/nydus/cache", "--apisock", "/tmp/x-api.sock")]
    [InlineData("live migration", "--socket-path", "/tmp/x.sock", "--shared-dir", "/tmp", "--migration-mode=find-paths")]
    [InlineData("O_PATH", "--socket-path", "/tmp/x.sock", "--shared-dir", "/tmp", "--inode-file-handles=mandatory")]
    [InlineData("--hybrid-mode", "--hybrid-mode", "--apisock", "/tmp/x-api.sock", "--sock", "/tmp/x.sock")]
    public void Forms_that_are_not_built_exit_2_with_one_line(string expected, params string[] args)
    {
        Process vfsd = Start(Repo.Vfsd, args);
        Assert.True(vfsd.WaitForExit(Patience));
        string stderr = vfsd.StandardError.ReadToEnd();
        Assert.Equal(2, vfsd.ExitCode);
        string[] lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
    }

    // ---- the socket appears only once it accepts ----------------------------------------------------------------

    [Fact]
    public void The_socket_accepts_as_soon_as_it_exists_over_many_starts()
    {
        // Kata's runtimes (and QEMU's chardev) connect as soon as the path exists; a prober spins on connect() from
        // before each start. The first attempt that finds the path must be accepted.
        string socket = Path.Combine(_dir, "race.sock");
        string shared = Shared();
        int refused = 0;
        for (int i = 0; i < 25; i++)
        {
            SocketError result = SocketError.TimedOut;
            var thread = new Thread(() => result = ProbeUntilConnected(socket, Patience));
            thread.Start();
            Process vfsd = Start(Repo.Vfsd, ["--socket-path", socket, "--shared-dir", shared]);
            thread.Join();
            if (result != SocketError.Success)
            {
                refused++;
                output.WriteLine($"start {i}: {result}");
            }
            // The accepted probe was vfsd's one front-end: it leaves, and vfsd exits 0 and removes the socket.
            Assert.True(vfsd.WaitForExit(Patience));
            Assert.Equal(0, vfsd.ExitCode);
            Assert.False(File.Exists(socket));
        }
        Assert.Equal(0, refused);
    }

    private static SocketError ProbeUntilConnected(string path, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                client.Connect(new UnixDomainSocketEndPoint(path));
                return SocketError.Success;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                return SocketError.ConnectionRefused;
            }
            catch (SocketException)
            {
                // ENOENT: not there yet.
            }
        }
        return SocketError.TimedOut;
    }

    // ---- helpers: what the runtimes and the hypervisor do -------------------------------------------------------

    private Process Start(string file, IEnumerable<string> args, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? _dir,
        };
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }
        Process p = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {file}");
        _processes.Add(p);
        // Drain stdout as the runtimes do (they log it); stderr is read by each test as its client reads it.
        p.OutputDataReceived += (_, e) => { };
        p.BeginOutputReadLine();
        return p;
    }

    /// <summary>virtiofsd.go: the listening socket goes to the child as fd 3. python3 makes and listens on the
    /// socket, moves it to fd 3 and execs vfsd, so the fd is inherited exactly as Go's ExtraFiles does it.</summary>
    private Process StartWithListeningFd3(string socketPath, string[] args)
    {
        const string Launcher = """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(sys.argv[1] + ".tmp"); s.listen(socket.SOMAXCONN)
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])  # Kata listens before it starts the VM: the test sees it then
            if s.fileno() != 3: os.dup2(s.fileno(), 3)
            os.set_inheritable(3, True)  # dup2 onto itself would keep the socket's close-on-exec flag
            os.execv(sys.argv[2], sys.argv[2:])
            """;
        Process p = Start("python3", ["-c", Launcher, socketPath, Repo.Vfsd, .. args]);
        var deadline = DateTime.UtcNow + Patience;
        while (!File.Exists(socketPath))
        {
            Assert.True(DateTime.UtcNow < deadline && !p.HasExited, "the launcher did not create the socket: " + (p.HasExited ? p.StandardError.ReadToEnd() : ""));
            Thread.Sleep(5);
        }
        return p;
    }

    private static void WaitForStderrLine(Process p, string text)
    {
        var read = Task.Run(() =>
        {
            while (p.StandardError.ReadLine() is { } line)
            {
                if (line.Contains(text, StringComparison.Ordinal))
                {
                    return true;
                }
            }
            return false;
        });
        Assert.True(read.Wait(Patience), $"no stderr line containing '{text}' within {Patience}");
        Assert.True(read.Result, $"vfsd closed stderr without a line containing '{text}' (exit {(p.HasExited ? p.ExitCode : -1)})");
        // Keep draining, as run_virtiofsd() does, so vfsd never blocks on a full pipe.
        _ = Task.Run(() => p.StandardError.ReadToEnd());
    }

    private static async Task WaitForRunning(HttpClient http, Process vfsd, int attempts, int delayMs, bool backOff)
    {
        string? last = null;
        int delay = delayMs;
        for (int i = 0; i < attempts; i++)
        {
            try
            {
                using var response = await http.GetAsync(new Uri("http://unix/api/v1/daemon"));
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    using var info = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                    last = info.RootElement.GetProperty("state").GetString();
                    if (last == "RUNNING")
                    {
                        return;
                    }
                }
            }
            catch (HttpRequestException)
            {
                // The API socket is not there yet; the runtimes retry on any error.
            }
            if (vfsd.HasExited)
            {
                Assert.Fail("vfsd exited: " + vfsd.StandardError.ReadToEnd());
            }
            await Task.Delay(delay);
            if (backOff)
            {
                delay = Math.Min(delay * 2, 2000);
            }
        }
        Assert.Fail($"GET /api/v1/daemon never said RUNNING in {attempts} attempts (last state {last ?? "none"})");
    }

    /// <summary>The hypervisor's connect: right after the runtime's wait, no retry.</summary>
    private static Socket ConnectAtOnce(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(path));
        return socket;
    }

    /// <summary>The first messages QEMU and cloud-hypervisor send: GET_FEATURES and GET_PROTOCOL_FEATURES
    /// (vhost-user.rst). VHOST_USER_PROTOCOL_F_CONFIG (bit 9) is offered only with --tag, as virtiofsd does.</summary>
    private static void Negotiate(Socket socket, bool expectConfig)
    {
        ulong features = Request(socket, 1);
        Assert.NotEqual(0UL, features & (1UL << 30)); // VHOST_USER_F_PROTOCOL_FEATURES
        Assert.NotEqual(0UL, features & (1UL << 32)); // VIRTIO_F_VERSION_1
        ulong protocol = Request(socket, 15);
        Assert.Equal(expectConfig, (protocol & (1UL << 9)) != 0);
    }

    private static ulong Request(Socket socket, uint request)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(header, request);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], 1); // version 1
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], 0);
        socket.Send(header);
        socket.ReceiveTimeout = (int)Patience.TotalMilliseconds;
        Span<byte> reply = stackalloc byte[20];
        int got = 0;
        while (got < reply.Length)
        {
            int n = socket.Receive(reply[got..]);
            Assert.True(n > 0, "the back-end closed the connection");
            got += n;
        }
        Assert.Equal(request, BinaryPrimitives.ReadUInt32LittleEndian(reply));
        Assert.Equal(8u, BinaryPrimitives.ReadUInt32LittleEndian(reply[8..]));
        return BinaryPrimitives.ReadUInt64LittleEndian(reply[12..]);
    }
}
