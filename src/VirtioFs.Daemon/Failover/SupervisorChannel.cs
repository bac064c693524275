using System.Net.Sockets;
using VirtioFs.VhostUser;

namespace VirtioFs.Daemon.Failover;

/// <summary>
/// The daemon's side of nydus-snapshotter's supervisor socket (pkg/supervisor/supervisor.go). The snapshotter listens
/// on the path given with <c>--supervisor</c>; the daemon connects. To save (sendfd) the daemon writes its state bytes
/// with the /dev/fuse fd attached (SCM_RIGHTS) to the first message and closes: the supervisor reads to end of stream
/// and keeps the first fd of the first rights message. To restore (takeover) the supervisor writes the bytes back the
/// same way and closes; the daemon reads to end of stream.
/// </summary>
internal static class SupervisorChannel
{
    public static void Send(string path, ReadOnlySpan<byte> state, int fd)
    {
        using Socket socket = Connect(path);
        int rc = UnixMessaging.SendWithFds((int)socket.Handle, state, [fd]);
        if (rc < 0) throw new IOException($"sending state to supervisor {path}: errno {-rc}");
        socket.Shutdown(SocketShutdown.Send);
    }

    /// <summary>Receives the state bytes and the fd the supervisor holds; the caller owns the fd.</summary>
    public static (byte[] State, int Fd) Receive(string path, TimeSpan timeout)
    {
        using Socket socket = Connect(path);
        socket.ReceiveTimeout = (int)timeout.TotalMilliseconds;
        using var data = new MemoryStream();
        byte[] buffer = new byte[256 * 1024];
        Span<int> fds = stackalloc int[UnixMessaging.MaxFds];
        int fd = -1;
        try
        {
            while (true)
            {
                int n = UnixMessaging.ReceiveWithFds((int)socket.Handle, buffer, fds, out int count, out _);
                for (int i = 0; i < count; i++)
                {
                    // The first fd is the session's (supervisor.go keeps fds[0]); any other is not ours to keep.
                    if (fd < 0) fd = fds[i];
                    else UnixMessaging.CloseAll(fds.Slice(i, 1));
                }
                if (n < 0) throw new IOException($"receiving state from supervisor {path}: errno {-n}");
                if (n == 0) break;
                if (data.Length + n > FailoverState.MaxStateBytes) throw new FailoverStateException($"supervisor sent more than {FailoverState.MaxStateBytes} bytes of state");
                data.Write(buffer, 0, n);
            }
            if (fd < 0) throw new IOException($"supervisor {path} sent {data.Length} bytes of state but no /dev/fuse fd");
            return (data.ToArray(), fd);
        }
        catch
        {
            if (fd >= 0) UnixMessaging.CloseAll(new Span<int>(ref fd));
            throw;
        }
    }

    private static Socket Connect(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new IOException($"cannot connect to supervisor {path}: {e.Message}", e);
        }
    }
}
