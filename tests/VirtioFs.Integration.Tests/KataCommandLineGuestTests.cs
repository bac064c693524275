using System.Runtime.InteropServices;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Kata's Go runtime creates the vhost-user socket itself and hands it to virtiofsd as fd 3 with exactly this command
/// line (virtiofsd.go plus the default virtio_fs_extra_args). vfsd must serve a guest started that way.
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
