using System.Runtime.InteropServices;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Kata's launch forms with a real guest: the Go runtime creates the vhost-user socket itself and hands it to virtiofsd
/// as fd 3 with exactly this command line (virtiofsd.go plus the default virtio_fs_extra_args); runtime-rs and both
/// nydusd forms follow. vfsd must serve a guest started each way.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed partial class KataCommandLineGuestTests(ITestOutputHelper output)
{
    [Fact]
    public void Guest_is_served_on_an_inherited_listening_socket_with_kata_go_arguments()
    {
        using var tree = new TestTree();
        File.WriteAllText(Path.Combine(tree.Root, "hello.txt"), "served over fd 3\n");
        string socketPath = Path.Combine(Path.GetTempPath(), $"kata-{Guid.NewGuid():N}.sock");
        // The listening socket is made with plain syscalls, not a .NET Socket: its fd must be inheritable and must
        // stay closed in this process once handed over (a SafeHandle finalizer would close a reused fd number later).
        int fd = ListenUnix(socketPath);
        string command = $"exec 3<&{fd}; exec {Repo.Vfsd} --syslog --cache=auto --shared-dir={tree.Root} --fd=3 " +
                         "--thread-pool-size=1 --announce-submounts";
        using var vfsd = ProcessRunner.Start("bash", ["-c", command]);
        // Only vfsd holds the socket now: if it failed to take fd 3, QEMU's connect fails at once.
        Close(fd);
        try
        {
            var result = Guest.Run("cat /mnt/vfs/hello.txt | sed 's/^/@@READ /'", [("vfs", socketPath)], output);
            Assert.Equal(0, result.ExitCode);
            Assert.Equal("served over fd 3", result.Single("READ"));
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            output.WriteLine(vfsd.Output);
            File.Delete(socketPath);
        }
    }

    /// <summary>
    /// The other three Kata forms, one daemon each behind its own device in one guest (the daemons are independent;
    /// one boot keeps the TCG time down). Each is started with the runtime's exact argv and waited for as that runtime
    /// waits, the nydusd forms get the passthrough at /containers and an image at /rafs/c1/lowerdir through the API as
    /// Kata mounts them, then the guest mounts all three and reads; it writes through runtime-rs's hybrid tree.
    /// </summary>
    [Fact]
    public async Task Guest_is_served_by_runtime_rs_and_both_nydusd_forms()
    {
        using var tree = new TestTree();
        File.WriteAllText(Path.Combine(tree.Root, "hello.txt"), "runtime-rs virtiofsd\n");
        using var shared = new TestTree();
        File.SetUnixFileMode(shared.Root, (UnixFileMode)Convert.ToInt32("755", 8));
        File.WriteAllText(Path.Combine(shared.Root, "hello.txt"), "shared through nydusd's passthrough\n");
        using var image = new ImageWorkspace();
        File.WriteAllText(image.S("name"), "rafs image\n");
        image.Build();
        string config = "{\"device\":{\"backend\":{\"type\":\"localfs\",\"config\":{\"dir\":\"" + image.BlobDir + "\"}}}}";

        string dir = Directory.CreateTempSubdirectory("vfs-kata-guest-").FullName;
        var daemons = new List<ProcessRunner>();
        try
        {
            // runtime-rs share_virtio_fs_standalone.rs: --socket-path --shared-dir --cache + extra args + --xattr; it
            // waits, with no time-out, for a stderr line containing "Waiting for vhost-user socket connection".
            string rsSocket = Path.Combine(dir, "rs.sock");
            var rs = ProcessRunner.Start(Repo.Vfsd, ["--socket-path", rsSocket, "--shared-dir", tree.Root, "--cache", "auto",
                "--thread-pool-size=1", "-o", "announce_submounts", "--xattr"]);
            daemons.Add(rs);
            VfsdApi.WaitFor(() => rs.Output.Contains("Waiting for vhost-user socket connection", StringComparison.Ordinal), rs, TimeSpan.FromSeconds(60));

            // nydusd.go (Go runtime) and nydus_daemon.rs (runtime-rs, --hybrid-mode): wait for RUNNING, then
            // POST /api/v1/mount passthrough_fs at /containers (config ""), and the image at /rafs/<cid>/lowerdir.
            var sockets = new List<(string Tag, string Socket)> { ("rs", rsSocket) };
            foreach (bool hybrid in new[] { false, true })
            {
                string tag = hybrid ? "rsnydus" : "gonydus";
                string api = Path.Combine(dir, tag + "-api.sock");
                string socket = Path.Combine(dir, tag + ".sock");
                var nydus = ProcessRunner.Start(Repo.Vfsd, hybrid
                    ? ["virtiofs", "--hybrid-mode", "--log-level", "info", "--apisock", api, "--sock", socket]
                    : ["virtiofs", "--log-level", "info", "--apisock", api, "--sock", socket]);
                daemons.Add(nydus);
                using var http = VfsdApi.Client(api);
                VfsdApi.WaitFor(() => File.Exists(api), nydus, TimeSpan.FromSeconds(60));
                Assert.Contains("\"RUNNING\"", await http.GetStringAsync(new Uri("http://unix/api/v1/daemon")), StringComparison.Ordinal);
                await VfsdApi.Mount(http, "/containers", "passthrough_fs", shared.Root, "");
                await VfsdApi.Mount(http, "/rafs/c1/lowerdir", "rafs", image.Bootstrap, config);
                sockets.Add((tag, socket));
            }

            string script = """
                cat /mnt/rs/hello.txt | sed 's/^/@@RS /'
                for t in gonydus rsnydus; do
                  echo "@@$t $(cat /mnt/$t/containers/hello.txt) / $(cat /mnt/$t/rafs/c1/lowerdir/name)"
                done
                echo written-by-guest > /mnt/rsnydus/containers/from-guest && echo "@@WROTE ok"
                """;
            var result = Guest.Run(script, sockets, output);
            Assert.Equal(0, result.ExitCode);
            Assert.Equal("runtime-rs virtiofsd", result.Single("RS"));
            Assert.Equal("shared through nydusd's passthrough / rafs image", result.Single("gonydus"));
            Assert.Equal("shared through nydusd's passthrough / rafs image", result.Single("rsnydus"));
            Assert.Equal("ok", result.Single("WROTE"));
            Assert.Equal("written-by-guest\n", File.ReadAllText(Path.Combine(shared.Root, "from-guest")));
            foreach (ProcessRunner d in daemons)
            {
                Assert.Equal(0, d.WaitForExit(TimeSpan.FromSeconds(30)));
            }
        }
        finally
        {
            foreach (ProcessRunner d in daemons)
            {
                output.WriteLine(d.Output);
                d.Dispose();
            }
            Directory.Delete(dir, recursive: true);
        }
    }

    private static unsafe int ListenUnix(string path)
    {
        const int AfUnix = 1, SockStream = 1;
        int fd = socket(AfUnix, SockStream, 0);
        Assert.True(fd >= 0, $"socket: errno {Marshal.GetLastPInvokeError()}");
        byte* address = stackalloc byte[110]; // struct sockaddr_un: sa_family_t + char sun_path[108]
        new Span<byte>(address, 110).Clear();
        *(ushort*)address = AfUnix;
        System.Text.Encoding.UTF8.GetBytes(path, new Span<byte>(address + 2, 107));
        Assert.True(bind(fd, address, 110) == 0, $"bind: errno {Marshal.GetLastPInvokeError()}");
        Assert.True(listen(fd, 1) == 0, $"listen: errno {Marshal.GetLastPInvokeError()}");
        return fd;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int bind(int fd, byte* address, int length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int listen(int fd, int backlog);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

}
