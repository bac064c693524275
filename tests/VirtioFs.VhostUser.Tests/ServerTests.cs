using System.Net.Sockets;
using VirtioFs.TestSupport;
using VirtioFs.VhostUser;

namespace VirtioFs.VhostUser.Tests;

public class ServerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-vhost-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Listen_creates_a_private_socket_and_serve_returns_on_disconnect()
    {
        string path = Path.Combine(_dir, "vhost.sock");
        using Socket listener = VhostUserServer.Listen(path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(path));
        Assert.Equal($"{Environment.ProcessId}", ReadWithoutLocking(path + ".pid").Trim());

        var backend = new RecordingBackend();
        Task serve = Task.Factory.StartNew(() => VhostUserServer.Serve(listener, backend), TaskCreationOptions.LongRunning);
        using (VhostUserFrontEnd front = VhostUserFrontEnd.Connect(path))
        {
            Assert.Equal(2UL, front.GetQueueNum());
        }
        await serve.WaitAsync(Device.Timeout);
        Assert.Equal(1, backend.ResetCount);
    }

    // File.ReadAllText would take a shared flock, which the daemon's exclusive pid lock (rightly) refuses.
    private static unsafe string ReadWithoutLocking(string path)
    {
        byte[] name = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        byte[] buffer = new byte[64];
        fixed (byte* n = name)
        fixed (byte* b = buffer)
        {
            int fd = Tmds.Linux.LibC.open(n, Tmds.Linux.LibC.O_RDONLY);
            Assert.True(fd >= 0);
            long count = (long)Tmds.Linux.LibC.read(fd, b, 64);
            Tmds.Linux.LibC.close(fd);
            return System.Text.Encoding.ASCII.GetString(buffer, 0, (int)count);
        }
    }

    [Fact]
    public void A_second_daemon_cannot_take_the_same_path()
    {
        string path = Path.Combine(_dir, "busy.sock");
        using Socket first = VhostUserServer.Listen(path);
        IOException refused = Assert.Throws<IOException>(() => VhostUserServer.Listen(path));
        Assert.Contains("another daemon", refused.Message);
        // The first daemon's socket is untouched.
        using VhostUserFrontEnd front = VhostUserFrontEnd.Connect(path);
    }

    [Fact]
    public unsafe void A_stale_socket_is_replaced()
    {
        string path = Path.Combine(_dir, "stale.sock");
        string tmp = Path.Combine(_dir, "dead.sock");
        // .NET unlinks sockets it bound when disposed, so keep a hard link to the inode: a daemon killed with SIGKILL
        // (as Kata stops it) leaves exactly such a socket behind.
        using (var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            dead.Bind(new UnixDomainSocketEndPoint(tmp));
            byte[] from = System.Text.Encoding.UTF8.GetBytes(tmp + "\0");
            byte[] to = System.Text.Encoding.UTF8.GetBytes(path + "\0");
            fixed (byte* f = from)
            fixed (byte* t = to)
            {
                Assert.Equal(0, Tmds.Linux.LibC.link(f, t));
            }
        }
        Assert.True(Path.Exists(path));
        Assert.ThrowsAny<SocketException>(() => VhostUserFrontEnd.Connect(path));
        using Socket listener = VhostUserServer.Listen(path);
        using VhostUserFrontEnd front = VhostUserFrontEnd.Connect(path);
    }

    [Fact]
    public async Task Inherited_listening_fd_is_served()
    {
        string path = Path.Combine(_dir, "kata.sock");
        using var original = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        original.Bind(new UnixDomainSocketEndPoint(path));
        original.Listen(1);
        int dup = Tmds.Linux.LibC.dup((int)original.Handle);
        using Socket inherited = VhostUserServer.FromInheritedFd(dup);
        var backend = new RecordingBackend();
        Task serve = Task.Factory.StartNew(() => VhostUserServer.Serve(inherited, backend), TaskCreationOptions.LongRunning);
        using (VhostUserFrontEnd front = VhostUserFrontEnd.Connect(path))
        {
            Assert.Equal(509UL, front.GetMaxMemSlots());
        }
        await serve.WaitAsync(Device.Timeout);
    }

    [Fact]
    public async Task Cancellation_ends_serve_with_workers_stopped()
    {
        var backend = new RecordingBackend();
        var memory = TestGuestMemory.Single();
        MockSplitQueue[] queues = [new MockSplitQueue(memory, 0, 8), new MockSplitQueue(memory, 1, 8)];
        (VhostUserFrontEnd front, Socket back) = VhostUserFrontEnd.CreatePair();
        using var cts = new CancellationTokenSource();
        Task serve = Task.Factory.StartNew(() => VhostUserServer.ServeConnection(back, backend, null, cts.Token),
            TaskCreationOptions.LongRunning);
        front.SetOwner();
        front.SetFeatures(front.GetFeatures());
        front.SetMemTable(memory);
        front.StartQueueLikeQemu(queues[1]);
        cts.Cancel();
        await serve.WaitAsync(Device.Timeout);
        Assert.True(front.IsClosedByPeer(Device.Timeout) || serve.IsCompleted);
        front.Dispose();
        back.Dispose();
        foreach (MockSplitQueue q in queues)
        {
            q.Dispose();
        }
        memory.Dispose();
    }
}
