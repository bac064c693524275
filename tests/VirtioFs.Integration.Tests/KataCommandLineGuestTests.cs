using System.Net.Sockets;
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
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(1);
        int fd = (int)listener.Handle;
        // .NET opens sockets close-on-exec; Kata's socket is inherited, so clear the flag for the child.
        Assert.Equal(0, fcntl(fd, 2 /* F_SETFD */, 0));

        string command = $"exec 3<&{fd}; exec {Repo.Vfsd} --syslog --cache=auto --shared-dir={tree.Root} --fd=3 " +
                         "--thread-pool-size=1 --announce-submounts";
        using var vfsd = ProcessRunner.Start("bash", ["-c", command]);
        // Only vfsd holds the socket now: if it failed to take fd 3, QEMU's connect fails at once.
        Close(fd);
        GC.SuppressFinalize(listener);
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

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fcntl(int fd, int cmd, int arg);
}
