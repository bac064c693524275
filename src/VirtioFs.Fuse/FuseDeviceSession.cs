using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace VirtioFs.Fuse;

/// <summary>Options of a host /dev/fuse mount.</summary>
public sealed class FuseDeviceOptions
{
    /// <summary>mount(2) source shown in /proc/mounts.</summary>
    public string Source { get; init; } = "vfsd";
    /// <summary>Filesystem subtype: the mount appears as "fuse.&lt;subtype&gt;".</summary>
    public string Subtype { get; init; } = "vfsd";
    /// <summary>Reader threads, each with its own buffers.</summary>
    public int Threads { get; init; } = 2;
    /// <summary>Let the kernel check permissions from the attributes (mount option default_permissions).</summary>
    public bool DefaultPermissions { get; init; } = true;
    public bool AllowOther { get; init; } = true;
    /// <summary>Largest WRITE payload; must match <see cref="FuseServerOptions.MaxWrite"/>.</summary>
    public uint MaxWrite { get; init; } = 1024 * 1024;
    /// <summary>
    /// Readahead window of the mount, in KiB, set through the mount's BDI (/sys/class/bdi/MAJ:MIN/read_ahead_kb) once
    /// INIT is answered; 0 leaves the kernel's. fs/fuse/inode.c starts a FUSE mount at the kernel default (128 KiB) and
    /// INIT can only lower it (process_init_reply takes the min of the two), so a sequential reader would otherwise get
    /// 128 KiB READs: eight requests, eight wake-ups and eight chunk-slot look-ups per 1 MiB image chunk. With a larger
    /// window fuse_readahead() sends READs up to max_pages (see <see cref="MaxWrite"/>) long. Best effort: a failure
    /// (no sysfs, not root) only costs speed.
    /// </summary>
    public uint ReadaheadKb { get; init; } = 1024;
}

/// <summary>
/// Serves a <see cref="FuseServer"/> over the kernel's /dev/fuse character device: the host mounts the filesystem
/// directly (fs/fuse/dev.c). Each read(2) of the device returns exactly one request; each write(2) one reply.
/// Requests that need no reply (FORGET, BATCH_FORGET, INTERRUPT) get none. The session ends when the filesystem is
/// unmounted (read fails with ENODEV) or when it is disposed (lazy unmount, then the connection is aborted).
/// </summary>
public sealed unsafe class FuseDeviceSession : IDisposable
{
    private readonly FuseServer _server;
    private readonly ILogger _logger;
    private readonly Thread[] _threads;
    private readonly int _bufferSize;
    private readonly string? _connectionId;
    private readonly string? _bdiDevice;
    private readonly uint _readaheadKb;
    private int _readaheadSet;
    private int _fd;
    private int _running;
    private int _disposed;
    private int _started;
    // Handover (failover, hot upgrade): readers poll the device together with this eventfd, so they can be stopped
    // at a request boundary without unmounting; the kernel keeps unread requests for the successor.
    private int _stopFd;
    private volatile bool _stopping;
    private long _replayed;

    private FuseDeviceSession(string mountPoint, int fd, FuseServer server, FuseDeviceOptions options, ILogger logger)
    {
        MountPoint = mountPoint;
        _fd = fd;
        _server = server;
        _logger = logger;
        _bdiDevice = FindDevice(mountPoint);
        // The fusectl connection id is the minor number of the mount's anonymous device.
        _connectionId = _bdiDevice?[(_bdiDevice.IndexOf(':', StringComparison.Ordinal) + 1)..];
        _readaheadKb = options.ReadaheadKb;
        // fs/fuse/dev.c refuses reads smaller than max_write + one page of headers (and than FUSE_MIN_READ_BUFFER).
        _bufferSize = (int)Math.Max(options.MaxWrite + 4096u, (uint)FuseConstants.MinReadBuffer);
        _stopFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (_stopFd < 0)
        {
            throw new IOException($"eventfd failed: errno {errno}");
        }
        // Every reader of this device polls before it blocks (see Worker), so the shared open file can be non-blocking:
        // O_NONBLOCK is a flag of the open file description, which a successor that takes the fd over shares.
        int fl = fcntl(fd, F_GETFL, 0);
        if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        _threads = new Thread[Math.Max(1, options.Threads)];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(Worker) { IsBackground = true, Name = $"fuse-dev-{i}" };
        }
    }

    public string MountPoint { get; }

    /// <summary>MAJ:MIN of the mount (its BDI name under /sys/class/bdi), or null when it could not be found.</summary>
    public string? Device => _bdiDevice;

    /// <summary>Opens /dev/fuse, mounts it at <paramref name="mountPoint"/> (an existing directory) and starts serving.</summary>
    public static FuseDeviceSession Mount(string mountPoint, FuseServer server, FuseDeviceOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(mountPoint);
        ArgumentNullException.ThrowIfNull(server);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        mountPoint = Path.GetFullPath(mountPoint);

        int fd;
        fixed (byte* dev = "/dev/fuse\0"u8)
        {
            // SAFETY: NUL-terminated literal path.
            fd = open(dev, O_RDWR | O_CLOEXEC);
        }
        if (fd < 0)
        {
            throw new IOException($"open /dev/fuse failed: errno {errno}");
        }

        var data = new StringBuilder();
        data.Append(CultureInfo.InvariantCulture, $"fd={fd},rootmode=40000,user_id=0,group_id=0");
        if (options.AllowOther) data.Append(",allow_other");
        if (options.DefaultPermissions) data.Append(",default_permissions");
        byte[] src = Encoding.UTF8.GetBytes(options.Source + "\0");
        byte[] target = Encoding.UTF8.GetBytes(mountPoint + "\0");
        byte[] type = Encoding.UTF8.GetBytes("fuse." + options.Subtype + "\0");
        byte[] opts = Encoding.UTF8.GetBytes(data + "\0");
        int rc;
        fixed (byte* s = src, t = target, ty = type, o = opts)
        {
            // SAFETY: all strings are NUL-terminated managed arrays pinned for the call.
            rc = mount(s, t, ty, MS_NOSUID | MS_NODEV, o);
        }
        if (rc != 0)
        {
            int e = errno;
            close(fd);
            throw new IOException($"mount fuse at {mountPoint} failed: errno {e}");
        }

        var session = new FuseDeviceSession(mountPoint, fd, server, options, logger);
        session.Start();
        FuseLog.Mounted(logger, mountPoint, fd, session._threads.Length);
        return session;
    }

    /// <summary>
    /// Takes over the /dev/fuse fd of a session another daemon mounted at <paramref name="mountPoint"/> (failover, hot
    /// upgrade; the fd came from the supervisor). Nothing is read until <see cref="Start"/>; the session owns the fd
    /// from here on. <paramref name="server"/> must already be resumed (<see cref="FuseServer.Resume"/>).
    /// </summary>
    public static FuseDeviceSession Adopt(string mountPoint, int fd, FuseServer server, FuseDeviceOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(mountPoint);
        ArgumentNullException.ThrowIfNull(server);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentOutOfRangeException.ThrowIfNegative(fd);
        // The INIT reply that raises the readahead window was written by the predecessor, which set it already.
        return new FuseDeviceSession(Path.GetFullPath(mountPoint), fd, server, options, logger) { _readaheadSet = 1 };
    }

    /// <summary>Starts the reader threads (once). A session from <see cref="Mount"/> is started already.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        _running = _threads.Length;
        foreach (Thread t in _threads)
        {
            t.Start();
        }
    }

    /// <summary>
    /// When set, a request the kernel resent (FUSE_UNIQUE_RESEND in its unique, after FUSE_NOTIFY_RESEND) is answered
    /// with EIO instead of being served: the "flush" failover policy, for which mainline kernels have no control file.
    /// </summary>
    public bool FailResentRequests { get; set; }

    /// <summary>Resent requests seen so far (requests a dead predecessor had read and never answered).</summary>
    public long ResentRequests => Interlocked.Read(ref _replayed);

    /// <summary>A new fd for the same open /dev/fuse file (the FUSE connection), for the supervisor; the caller
    /// closes it. -errno on failure.</summary>
    public int DuplicateDevice()
    {
        int fd = Volatile.Read(ref _fd);
        if (fd < 0) return -EBADF;
        int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        return dup < 0 ? -errno : dup;
    }

    /// <summary>
    /// FUSE_NOTIFY_RESEND (fuse.h notify code 7, Linux 6.9): the kernel moves the requests it had handed to any reader
    /// of this connection and that were never answered back to its input queue, marked with FUSE_UNIQUE_RESEND, so they
    /// are read again. Returns 0 or -errno (EINVAL on kernels without it).
    /// </summary>
    public int NotifyResend()
    {
        int fd = Volatile.Read(ref _fd);
        if (fd < 0) return -EBADF;
        // A notification is an out header with unique 0 and the notify code in the error field, no payload.
        Span<byte> header = stackalloc byte[16];
        header.Clear();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(header, 16);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(header[4..], FuseConstants.NotifyResend);
        fixed (byte* h = header)
        {
            // SAFETY: h points at 16 pinned bytes.
            long w = write(fd, h, 16);
            return w == 16 ? 0 : w < 0 ? -errno : -EIO;
        }
    }

    /// <summary>
    /// Stops serving without unmounting (the supervisor or a successor holds the connection): each reader finishes and
    /// answers the request it holds, then stops; requests not yet read stay queued in the kernel. The last reader
    /// closes this daemon's fd. <see cref="Dispose"/> then leaves the mount alone.
    /// </summary>
    public bool StopServing(TimeSpan timeout)
    {
        _stopping = true;
        Interlocked.Exchange(ref _disposed, 1);
        long one = 1;
        int stopFd = Volatile.Read(ref _stopFd);
        // SAFETY: 8-byte write from a local to our own eventfd (-1 once the session ended: EBADF, harmless).
        if (stopFd >= 0) write(stopFd, &one, 8);
        if (Volatile.Read(ref _started) == 0)
        {
            CloseDevice();
            return true;
        }
        return WaitForExit(timeout);
    }

    /// <summary>Blocks until every reader thread has stopped (the filesystem was unmounted).</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
        if (Volatile.Read(ref _started) == 0)
        {
            Thread.Sleep(timeout);
            return false;
        }
        var deadline = DateTime.UtcNow + timeout;
        foreach (Thread t in _threads)
        {
            TimeSpan left = deadline - DateTime.UtcNow;
            if (left < TimeSpan.Zero || !t.Join(left))
            {
                return false;
            }
        }
        return true;
    }

    private void Worker()
    {
        byte* request = (byte*)NativeMemory.Alloc((nuint)_bufferSize);
        byte* reply = (byte*)NativeMemory.Alloc((nuint)_bufferSize);
        // READ data may be left where the filesystem keeps it and sent from there (writev below).
        using var buffers = new FuseRequestBuffers(2) { ReplyByReference = true };
        IoSegment* gather = stackalloc IoSegment[FuseRequestBuffers.MaxGatherSegments];
        try
        {
            // The fd stays open until the last reader has stopped (see Dispose): a reader never touches a closed,
            // possibly reused, fd number.
            int fd = _fd;
            while (!_stopping)
            {
                // SAFETY: request is a live allocation of _bufferSize bytes owned by this thread.
                long n = read(fd, request, (size_t)_bufferSize);
                if (n < 0)
                {
                    int e = errno;
                    if (e == EAGAIN)
                    {
                        WaitReadable(fd);
                        continue;
                    }
                    if (e == EINTR || e == ENOENT)
                    {
                        continue; // ENOENT: the request was interrupted before we read it.
                    }
                    if (e != ENODEV)
                    {
                        FuseLog.DeviceError(_logger, "read", e);
                    }
                    return; // ENODEV: unmounted / aborted.
                }
                FuseReply r;
                // fuse_in_header: len u32, opcode u32, unique u64 (bit 63 = FUSE_UNIQUE_RESEND).
                if (n >= 40 && (*(ulong*)(request + 8) & FuseConstants.UniqueResend) != 0 && CountResent(request))
                {
                    r = FailResent(request, reply);
                }
                else
                {
                    buffers.Clear();
                    buffers.AddReadable(request, (int)n);
                    buffers.AddWritable(reply, _bufferSize);
                    r = _server.Handle(buffers);
                }
                if (!r.HasReply)
                {
                    buffers.ReleaseReferences();
                    continue;
                }
                long w = buffers.HasReferences ? WriteGathered(fd, buffers, r.Length, gather) : write(fd, reply, (size_t)r.Length);
                // The referenced memory may change again only once the kernel has copied it (writev has returned).
                buffers.ReleaseReferences();
                // The kernel applies the INIT reply inside this write (process_init_reply), clamping the window to
                // max_readahead; only a window set after it sticks. n >= 8: the header's opcode is in bytes 4..8.
                if (w >= 0 && n >= 8 && *(uint*)(request + 4) == (uint)FuseOpcode.Init && Interlocked.Exchange(ref _readaheadSet, 1) == 0)
                {
                    SetReadahead();
                }
                if (w < 0)
                {
                    int e = errno;
                    if (e == ENODEV)
                    {
                        return;
                    }
                    if (e != ENOENT) // ENOENT: the kernel already dropped the request (interrupted).
                    {
                        FuseLog.DeviceError(_logger, "write", e);
                    }
                }
            }
        }
        finally
        {
            NativeMemory.Free(request);
            NativeMemory.Free(reply);
            if (Interlocked.Decrement(ref _running) == 0)
            {
                CloseDevice();
            }
        }
    }

    /// <summary>
    /// Sends a reply whose READ data partly lies outside the reply buffer (<see cref="FuseRequestBuffers.GatherReply"/>):
    /// one writev, which fs/fuse/dev.c fuse_dev_write takes as one reply like a write. -1 with errno set on failure.
    /// </summary>
    private static long WriteGathered(int fd, FuseRequestBuffers buffers, int length, IoSegment* gather)
    {
        // SAFETY: gather is the worker's stack array of MaxGatherSegments; GatherReply fills at most that many, each a
        // live range of the reply buffer or of memory pinned until ReleaseReferences. IoSegment has iovec layout.
        int count = buffers.GatherReply(length, new Span<IoSegment>(gather, FuseRequestBuffers.MaxGatherSegments));
        if (count < 0)
        {
            Marshal.SetLastPInvokeError(EIO); // cannot happen: DoRead checked the references lie inside the reply
            return -1;
        }
        return Writev.writev(fd, gather, count);
    }

    /// <summary>Counts a resent request; true when it is to be failed rather than served (flush policy).</summary>
    private bool CountResent(byte* request)
    {
        Interlocked.Increment(ref _replayed);
        // SAFETY: the caller checked the request holds at least a 40-byte fuse_in_header.
        uint op = *(uint*)(request + 4);
        return FailResentRequests && op is not ((uint)FuseOpcode.Forget or (uint)FuseOpcode.BatchForget or (uint)FuseOpcode.Interrupt);
    }

    /// <summary>Answers a resent request with EIO (same unique, resend bit included: the kernel matches on it).</summary>
    private static FuseReply FailResent(byte* request, byte* reply)
    {
        // SAFETY: request holds a full fuse_in_header; reply is the worker's buffer of at least MinReadBuffer bytes.
        *(uint*)reply = 16;
        *(int*)(reply + 4) = -Errno.EIO;
        *(ulong*)(reply + 8) = *(ulong*)(request + 8);
        return new FuseReply(16);
    }

    /// <summary>Blocks until the device has a request, is torn down, or <see cref="StopServing"/> is called.</summary>
    private void WaitReadable(int fd)
    {
        pollfd* fds = stackalloc pollfd[2];
        fds[0].fd = fd;
        fds[0].events = POLLIN;
        fds[1].fd = _stopFd;
        fds[1].events = POLLIN;
        // SAFETY: fds points at two initialised pollfd on our stack. EINTR: the loop polls again.
        poll(fds, 2, -1);
    }

    private void CloseDevice()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        int stopFd = Interlocked.Exchange(ref _stopFd, -1);
        if (stopFd >= 0) close(stopFd);
        if (fd >= 0)
        {
            close(fd);
            FuseLog.SessionEnded(_logger, MountPoint);
        }
    }

    /// <summary>Raises the mount's readahead window to <see cref="FuseDeviceOptions.ReadaheadKb"/> (never lowers it).</summary>
    private void SetReadahead()
    {
        if (_readaheadKb == 0 || _bdiDevice is null) return;
        string path = $"/sys/class/bdi/{_bdiDevice}/read_ahead_kb";
        try
        {
            if (uint.TryParse(File.ReadAllText(path).AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out uint now) && now >= _readaheadKb) return;
            File.WriteAllText(path, _readaheadKb.ToString(CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            FuseLog.ReadaheadNotSet(_logger, path, e.Message);
        }
    }

    /// <summary>MAJ:MIN of the mount's anonymous device (/proc/self/mountinfo field 3), which names its BDI.</summary>
    private static string? FindDevice(string mountPoint) => MountInfo.Find(mountPoint)?.Device;

    /// <summary>
    /// Lazily unmounts and waits for the readers to see ENODEV. If the mount is still busy (open files keep the
    /// superblock alive), the connection is aborted through fusectl (fs/fuse/control.c), mounting fusectl at
    /// /sys/fs/fuse/connections when nobody has; pending and later operations on the dead mount then fail with
    /// ENOTCONN instead of hanging. The device fd is closed by the last reader to stop, never under a running reader.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        if (Volatile.Read(ref _started) == 0)
        {
            // Adopted and never started: the mount belongs to whoever holds the connection; just let go of the fd.
            CloseDevice();
            return;
        }
        byte[] target = Encoding.UTF8.GetBytes(MountPoint + "\0");
        fixed (byte* t = target)
        {
            // SAFETY: NUL-terminated path pinned for the call. EINVAL means it was already unmounted.
            umount2(t, MNT_DETACH);
        }
        if (!WaitForExit(TimeSpan.FromSeconds(2)) && _connectionId is not null)
        {
            Abort(_connectionId);
            WaitForExit(TimeSpan.FromSeconds(5));
        }
    }

    private static void Abort(string connectionId)
    {
        const string Control = "/sys/fs/fuse/connections";
        string abort = $"{Control}/{connectionId}/abort";
        if (!File.Exists(abort))
        {
            fixed (byte* src = "fusectl\0"u8, dst = "/sys/fs/fuse/connections\0"u8, type = "fusectl\0"u8)
            {
                // SAFETY: NUL-terminated literals. Fails harmlessly if already mounted or not permitted.
                mount(src, dst, type, 0, null);
            }
        }
        try
        {
            File.WriteAllText(abort, "1");
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>writev(2), which Tmds.LibC does not declare; its errno reaches <c>LibC.errno</c> (the last P/Invoke error).</summary>
internal static unsafe partial class Writev
{
    [LibraryImport("libc", SetLastError = true)]
    internal static partial nint writev(int fd, IoSegment* iov, int iovcnt);
}
