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
    public async Task The_socket_path_never_names_a_socket_that_refuses_connections()
    {
        // Kata's runtimes and QEMU connect as soon as the path exists. A prober spins on connect() while Listen runs;
        // the first attempt that finds the path must be accepted, never refused (bind-then-listen at the final name
        // left a window where the file existed but connect() got ECONNREFUSED).
        string path = Path.Combine(_dir, "race.sock");
        int refused = 0;
        for (int i = 0; i < 300; i++)
        {
            using var started = new ManualResetEventSlim();
            var prober = Task.Factory.StartNew(() =>
            {
                started.Set();
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
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
                        return e.SocketErrorCode; // the file exists but nobody listens on it yet
                    }
                    catch (SocketException)
                    {
                        // ENOENT: not there yet.
                    }
                }
                return SocketError.TimedOut;
            }, TaskCreationOptions.LongRunning);
            started.Wait();
            using (Socket listener = VhostUserServer.Listen(path))
            {
                SocketError result = await prober;
                if (result != SocketError.Success)
                {
                    refused++;
                }
                File.Delete(path);
                File.Delete(path + ".pid");
            }
        }
        Assert.Equal(0, refused);
        Assert.Empty(Directory.GetFiles(_dir)); // no temporary name left behind
    }

    [Fact]
    public void Socket_group_makes_the_socket_group_accessible_and_group_owned()
    {
        // virtiofsd --socket-group: umask 0007 at bind, then chown to the group. "root" (gid 0) exists everywhere;
        // a nonexistent group is an error before anything is created.
        string path = Path.Combine(_dir, "group.sock");
        using (Socket listener = VhostUserServer.Listen(path, "root"))
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute, File.GetUnixFileMode(path));
        }
        Assert.Contains("no group", Assert.Throws<IOException>(() => VhostUserServer.Listen(Path.Combine(_dir, "nogroup.sock"), "no-such-group-vfsd")).Message, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(_dir, "nogroup.sock")));
    }

    [Fact]
    public void A_relative_socket_path_stays_relative()
    {
        // runtime-rs in rootless mode passes a bare file name and runs the daemon in the socket's directory, because
        // the absolute path can exceed sun_path's 108 bytes. A 100-byte directory plus the name would not fit.
        string deep = Path.Combine(_dir, new string('d', 100));
        Directory.CreateDirectory(deep);
        string previous = Environment.CurrentDirectory;
        Environment.CurrentDirectory = deep;
        try
        {
            using Socket listener = VhostUserServer.Listen("virtiofsd.sock");
            Assert.True(File.Exists(Path.Combine(deep, "virtiofsd.sock")));
            using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            client.Connect(new UnixDomainSocketEndPoint("virtiofsd.sock"));
        }
        finally
        {
            Environment.CurrentDirectory = previous;
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
