using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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
public static class VhostUserServer
{
    private static readonly ConditionalWeakTable<Socket, SafeFileHandle> PidLocks = new();
    // The path a renamed socket is reachable at: getsockname() still reports the temporary name it was bound to.
    private static readonly ConditionalWeakTable<Socket, string> PublicPaths = new();

    /// <summary>
    /// Creates a listening Unix socket at <paramref name="socketPath"/> with mode 0700 (0770 and owned by
    /// <paramref name="socketGroup"/> when one is given, as virtiofsd's --socket-group). A pid lock file
    /// <c>&lt;path&gt;.pid</c> is taken with flock first, so two daemons cannot share a path; holding it, a stale socket
    /// left by a dead daemon is replaced. The lock lives as long as the returned socket.
    /// The socket is bound and listening under a temporary name in the same directory and then renamed into place, so
    /// the path never names a socket that refuses connections: Kata's runtimes (and QEMU) connect as soon as the file
    /// exists. A relative path stays relative (runtime-rs passes a bare file name in rootless mode to keep under the
    /// 108-byte sun_path limit).
    /// </summary>
    /// <exception cref="IOException">Another daemon holds the path, the group is unknown, or the socket cannot be created.</exception>
    public static Socket Listen(string socketPath, string? socketGroup = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("vhost-user needs Linux");
        }
        uint? gid = socketGroup is null ? null : ResolveGroup(socketGroup);
        SafeFileHandle pidLock = TakePidLock(socketPath + ".pid");
        string temporary = TemporaryName(socketPath);
        try
        {
            RemoveStaleSocket(socketPath);
            RemoveStaleSocket(temporary);
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Bind(new UnixDomainSocketEndPoint(temporary));
                // Modes and owner are set before listen() and before the rename: nobody can connect to the
                // temporary name before listen(), and nobody knows it, so there is no window with looser modes.
                UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
                if (gid is uint g)
                {
                    mode |= UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute;
                    if (Interop.chown(temporary, uint.MaxValue, g) != 0)
                    {
                        throw new IOException($"cannot give {socketPath} to group {socketGroup}: errno {Marshal.GetLastPInvokeError()}");
                    }
                }
                File.SetUnixFileMode(temporary, mode);
                socket.Listen(1);
                if (Interop.rename(temporary, socketPath) != 0)
                {
                    throw new IOException($"cannot move the socket into place at {socketPath}: errno {Marshal.GetLastPInvokeError()}");
                }
            }
            catch
            {
                socket.Dispose();
                RemoveStaleSocket(temporary);
                throw;
            }
            PidLocks.Add(socket, pidLock);
            PublicPaths.Add(socket, socketPath);
            return socket;
        }
        catch
        {
            pidLock.Dispose();
            throw;
        }
    }

    /// <summary>A short name beside <paramref name="socketPath"/> (same directory, so rename(2) is atomic), kept short
    /// because sun_path holds 108 bytes.</summary>
    private static string TemporaryName(string socketPath)
    {
        string? directory = Path.GetDirectoryName(socketPath);
        string name = $".vfsd-{Environment.ProcessId}.sock";
        return string.IsNullOrEmpty(directory) ? name : Path.Combine(directory, name);
    }

    private static unsafe uint ResolveGroup(string group)
    {
        nint entry = Interop.getgrnam(group);
        if (entry != 0)
        {
            // SAFETY: getgrnam returned a non-null struct group*; gr_gid follows the two char* fields.
            return *(uint*)(entry + 2 * sizeof(nint));
        }
        throw new IOException($"--socket-group: no group named '{group}'");
    }

    /// <summary>We hold the pid lock, so a socket left at the path belongs to a dead daemon; anything else is not ours
    /// to delete (bind will then fail with a clear error).</summary>
    private static unsafe void RemoveStaleSocket(string path)
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

    private static unsafe SafeFileHandle TakePidLock(string pidPath)
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
        if (PublicPaths.TryGetValue(listener, out string? path))
        {
            Log.Listening(logger, path);
        }
        else if (listener.LocalEndPoint is { } ep)
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
