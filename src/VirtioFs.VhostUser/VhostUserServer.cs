using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser;

/// <summary>
/// The vhost-user back-end's socket side: create or inherit the listening Unix socket, accept ONE front-end, serve it
/// until it disconnects, stop every worker and return (virtiofsd exits 0 at that point too).
/// </summary>
public static unsafe class VhostUserServer
{
    private static readonly ConditionalWeakTable<Socket, SafeFileHandle> PidLocks = new();

    /// <summary>
    /// Creates a listening Unix socket at <paramref name="socketPath"/> with mode 0700. A pid lock file
    /// <c>&lt;path&gt;.pid</c> is taken with flock first, so two daemons cannot share a path; holding it, a stale socket
    /// left by a dead daemon is replaced. The lock lives as long as the returned socket.
    /// </summary>
    /// <exception cref="IOException">Another daemon holds the path, or the socket cannot be created.</exception>
    public static Socket Listen(string socketPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("vhost-user needs Linux");
        }
        string full = Path.GetFullPath(socketPath);
        SafeFileHandle pidLock = TakePidLock(full + ".pid");
        try
        {
            RemoveStaleSocket(full);
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Bind(new UnixDomainSocketEndPoint(full));
                // chmod between bind and listen: nobody can connect before listen(), so no window with looser modes.
                File.SetUnixFileMode(full, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                socket.Listen(1);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            PidLocks.Add(socket, pidLock);
            return socket;
        }
        catch
        {
            pidLock.Dispose();
            throw;
        }
    }

    /// <summary>We hold the pid lock, so a socket left at the path belongs to a dead daemon; anything else is not ours
    /// to delete (bind will then fail with a clear error).</summary>
    private static void RemoveStaleSocket(string path)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes)
        {
            stat st;
            // SAFETY: p is a NUL-terminated path pinned for the call; st is a local.
            if (lstat(p, &st) == 0 && ((uint)st.st_mode & (uint)S_IFMT) == (uint)S_IFSOCK)
            {
                unlink(p);
            }
        }
    }

    private static SafeFileHandle TakePidLock(string pidPath)
    {
        // Opened with open(2) directly: .NET's FileStream would add its own advisory lock and report a conflict
        // with a less helpful message.
        byte[] path = Encoding.UTF8.GetBytes(pidPath + "\0");
        int fd;
        fixed (byte* p = path)
        {
            // SAFETY: p is a NUL-terminated path pinned for the call.
            fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0x1a4 /* 0644 */);
        }
        if (fd < 0)
        {
            throw new IOException($"cannot open {pidPath}: errno {errno}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Interop.flock(fd, Interop.LOCK_EX | Interop.LOCK_NB) != 0)
        {
            handle.Dispose();
            throw new IOException($"{pidPath} is locked: another daemon serves this socket path");
        }
        byte[] pid = Encoding.ASCII.GetBytes($"{Environment.ProcessId}\n");
        ftruncate(fd, 0);
        fixed (byte* b = pid)
        {
            // SAFETY: b points at pid.Length pinned bytes.
            pwrite(fd, b, (size_t)pid.Length, 0);
        }
        return handle;
    }

    /// <summary>Lets <paramref name="listener"/> and its pid lock survive execve: vfsd re-executes itself into its
    /// sandbox (native-shim/sandbox.c) after making the socket, and must keep both.</summary>
    public static void KeepAcrossExec(Socket listener)
    {
        ArgumentNullException.ThrowIfNull(listener);
        fcntl((int)listener.Handle, F_SETFD, 0);
        if (PidLocks.TryGetValue(listener, out SafeFileHandle? pidLock))
        {
            fcntl((int)pidLock.DangerousGetHandle(), F_SETFD, 0);
        }
    }

    /// <summary>Wraps an inherited, already listening socket (Kata passes <c>--fd=3</c>).</summary>
    public static Socket FromInheritedFd(int fd)
    {
        if (fd < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(fd));
        }
        var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
        if (socket.AddressFamily != AddressFamily.Unix || socket.SocketType != SocketType.Stream)
        {
            socket.Dispose();
            throw new IOException($"fd {fd} is not a Unix stream socket");
        }
        return socket;
    }

    /// <summary>
    /// Accepts one front-end on <paramref name="listener"/>, serves it until it disconnects (or
    /// <paramref name="cancellationToken"/> fires), stops all workers and resets the backend, then returns.
    /// </summary>
    public static void Serve(Socket listener, IVhostUserBackend backend, ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(listener);
        logger ??= NullLogger.Instance;
        if (listener.LocalEndPoint is { } ep)
        {
            Log.Listening(logger, ep.ToString() ?? "?");
        }
        Socket connection;
        try
        {
            connection = listener.AcceptAsync(cancellationToken).AsTask().GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            return;
        }
        using (connection)
        {
            ServeConnection(connection, backend, logger, cancellationToken);
        }
    }

    /// <summary>Serves an already connected front-end socket (e.g. one end of a socketpair) until it disconnects.</summary>
    public static void ServeConnection(Socket connection, IVhostUserBackend backend, ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(backend);
        logger ??= NullLogger.Instance;
        int fd = (int)connection.Handle;
        // We do blocking recvmsg on the raw fd; .NET may have made it non-blocking for its own async machinery.
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0 && (flags & O_NONBLOCK) != 0)
        {
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
        }
        using CancellationTokenRegistration registration = cancellationToken.Register(() =>
        {
            // Wakes the blocking recvmsg with end-of-stream; the connection then cleans up as on a disconnect.
            shutdown(fd, SHUT_RDWR);
        });
        using var session = new VhostUserConnection(fd, backend, logger);
        session.Run();
    }
}
