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
        session._running = session._threads.Length;
        foreach (Thread t2 in session._threads)
        {
            t2.Start();
        }
        FuseLog.Mounted(logger, mountPoint, fd, session._threads.Length);
        return session;
    }

    /// <summary>Blocks until every reader thread has stopped (the filesystem was unmounted).</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
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
        using var buffers = new FuseRequestBuffers(2);
        try
        {
            // The fd stays open until the last reader has stopped (see Dispose): a reader never touches a closed,
            // possibly reused, fd number.
            int fd = _fd;
            while (true)
            {
                // SAFETY: request is a live allocation of _bufferSize bytes owned by this thread.
                long n = read(fd, request, (size_t)_bufferSize);
                if (n < 0)
                {
                    int e = errno;
                    if (e == EINTR || e == EAGAIN || e == ENOENT)
                    {
                        continue; // ENOENT: the request was interrupted before we read it.
                    }
                    if (e != ENODEV)
                    {
                        FuseLog.DeviceError(_logger, "read", e);
                    }
                    return; // ENODEV: unmounted / aborted.
                }
                buffers.Clear();
                buffers.AddReadable(request, (int)n);
                buffers.AddWritable(reply, _bufferSize);
                FuseReply r = _server.Handle(buffers);
                if (!r.HasReply)
                {
                    continue;
                }
                // SAFETY: reply holds r.Length valid bytes written by the server.
                long w = write(fd, reply, (size_t)r.Length);
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

    private void CloseDevice()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
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
    private static string? FindDevice(string mountPoint)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/mountinfo"))
            {
                string[] f = line.Split(' ');
                if (f.Length > 4 && f[4] == mountPoint && f[2].Contains(':', StringComparison.Ordinal)) return f[2];
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

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
