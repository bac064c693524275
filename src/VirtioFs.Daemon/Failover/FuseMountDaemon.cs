using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;

namespace VirtioFs.Daemon.Failover;

/// <summary>
/// The /dev/fuse mount of one image as a nydusd-style state machine (nydus service/src/daemon.rs DaemonStateMachine):
/// INIT (started, nothing served) → READY (mounted, or taken over from the supervisor) → RUNNING (serving). A fresh
/// daemon goes straight through; one started with <c>--upgrade</c>, or one that finds its predecessor crashed (the
/// mount point is still a FUSE mount and the API socket refuses connections, nydus fusedev.rs is_crashed), stays in
/// INIT until PUT /api/v1/daemon/fuse/takeover, then PUT /api/v1/daemon/start. PUT /api/v1/daemon/fuse/sendfd hands
/// the session to the supervisor; after it, and in INIT or READY, exit leaves the mount in place.
/// </summary>
internal sealed class FuseMountDaemon : IDaemonControl
{
    private enum State { Init, Ready, Running }

    /// <summary>Largest max_write a predecessor may have agreed (the kernel's FUSE_MAX_MAX_PAGES is 256 pages by default,
    /// fs.fuse.max_pages_limit allows more); bounds the read buffers sized from the state.</summary>
    private const uint MaxAdoptedWrite = 16u << 20;

    private readonly DaemonOptions _options;
    private readonly string _mountPoint;
    private readonly RafsMount _image;
    private readonly string _bootstrap;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _logger;
    private readonly SingleImageControl _report;
    private readonly Action _stop;
    private readonly Lock _lock = new();
    private volatile State _state = State.Init;
    private FuseServer? _server;
    private FuseDeviceSession? _session;
    private bool _handedOver;
    private byte[]? _bootstrapDigest;

    public FuseMountDaemon(DaemonOptions options, string mountPoint, RafsMount image, string bootstrap, ILoggerFactory loggers, Action stop)
    {
        _options = options;
        _mountPoint = mountPoint;
        _image = image;
        _bootstrap = bootstrap;
        _loggers = loggers;
        _logger = loggers.CreateLogger("vfsd.failover");
        _stop = stop;
        _report = new SingleImageControl(image, DaemonHost.ImageName(options), stop, options.DaemonId);
    }

    /// <summary>The session once mounted or taken over (null in INIT).</summary>
    public FuseDeviceSession? Session => Volatile.Read(ref _session);

    public bool IsRunning => _state == State.Running;

    /// <summary>Set when the daemon must leave without unmounting: the session is the supervisor's or a successor's.</summary>
    public bool LeaveMounted { get; private set; }

    /// <summary>
    /// nydus fusedev.rs is_crashed: a predecessor died when the mount point is still mounted (FUSE, here) and the API
    /// socket file is there but nobody accepts on it. Checked before this daemon's API server replaces the socket.
    /// </summary>
    public static bool PredecessorCrashed(string mountPoint, string apiSocket) => IsFuseMount(mountPoint) && IsStaleSocket(apiSocket);

    internal static bool IsFuseMount(string mountPoint) => MountInfo.Find(mountPoint)?.IsFuse == true;

    internal static bool IsStaleSocket(string path)
    {
        if (!File.Exists(path)) return false;
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Connect(new UnixDomainSocketEndPoint(path));
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>A fresh start: mount the image and serve it (INIT → READY → RUNNING).</summary>
    public void MountAndServe()
    {
        var server = new FuseServer(_image.FileSystem, DaemonHost.ImageServerOptions(_options), _loggers.CreateLogger("vfsd.fuse"));
        var session = FuseDeviceSession.Mount(_mountPoint, server, DeviceOptions(new FuseDeviceOptions().MaxWrite), _loggers.CreateLogger("vfsd.fusedev"));
        lock (_lock)
        {
            _server = server;
            Volatile.Write(ref _session, session);
            _state = State.Running;
        }
    }

    private FuseDeviceOptions DeviceOptions(uint maxWrite) => new()
    {
        Source = DaemonHost.ImageName(_options),
        Subtype = "vfsd",
        Threads = _options.FuseReaderThreads,
        MaxWrite = maxWrite,
    };

    public DaemonInfo GetInfo() => _report.GetInfo() with
    {
        State = _state switch { State.Init => "INIT", State.Ready => "READY", _ => "RUNNING" },
        Supervisor = _options.Supervisor,
    };

    public ApiResult SendFd()
    {
        lock (_lock)
        {
            if (_options.Supervisor is not { } supervisor) return ApiResult.Fail(ApiErrorKind.Unsupported, "no --supervisor was given");
            if (_state != State.Running || _session is null || _server is not { IsInitialized: true } server)
                return ApiResult.Fail(ApiErrorKind.NotReady, "the FUSE session is not RUNNING and initialised yet");
            int fd = _session.DuplicateDevice();
            if (fd < 0) return ApiResult.Fail(ApiErrorKind.Internal, $"cannot duplicate the /dev/fuse fd: errno {-fd}");
            try
            {
                List<RafsFileSystem.HeldNode> nodes = _image.FileSystem.ExportNodes();
                var (handles, next) = _image.FileSystem.ExportHandles();
                var mount = new FailoverMount(_mountPoint, "rafs", _bootstrap, ConfigText(), _options.BlobDir ?? "", _options.CacheDir ?? "",
                    BootstrapDigest(), nodes, handles, next);
                byte[] state = new FailoverState(server.NegotiatedFlags, DeviceOptions(new FuseDeviceOptions().MaxWrite).MaxWrite,
                    ConnectionId(_session), [mount]).Encode();
                SupervisorChannel.Send(supervisor, state, fd);
                _handedOver = true;
                FailoverLog.StateSent(_logger, state.Length, nodes.Count, handles.Count, supervisor);
                return ApiResult.Success;
            }
            catch (Exception e) when (e is IOException or FailoverStateException or UnauthorizedAccessException)
            {
                FailoverLog.SendFailed(_logger, e.Message);
                return ApiResult.Fail(ApiErrorKind.Internal, e.Message);
            }
            finally
            {
                Tmds.Linux.LibC.close(fd);
            }
        }
    }

    public ApiResult TakeOver()
    {
        lock (_lock)
        {
            if (_options.Supervisor is not { } supervisor) return ApiResult.Fail(ApiErrorKind.Unsupported, "no --supervisor was given");
            if (_state != State.Init) return ApiResult.Fail(ApiErrorKind.Internal, $"UnexpectedEvent(Takeover) in state {GetInfo().State}");
            var clock = Stopwatch.StartNew();
            byte[] bytes;
            int fd;
            try
            {
                (bytes, fd) = SupervisorChannel.Receive(supervisor, TimeSpan.FromSeconds(10));
            }
            catch (Exception e) when (e is IOException or FailoverStateException)
            {
                FailoverLog.TakeoverRefused(_logger, e.Message);
                return ApiResult.Fail(ApiErrorKind.Internal, e.Message);
            }
            string? why = Restore(bytes, fd, out FailoverMount? mount);
            if (why is not null)
            {
                Tmds.Linux.LibC.close(fd);
                FailoverLog.TakeoverRefused(_logger, why);
                return ApiResult.Fail(ApiErrorKind.Internal, why);
            }
            _state = State.Ready;
            FailoverLog.TookOver(_logger, _mountPoint, supervisor, bytes.Length, mount!.Nodes.Count, mount.Handles.Count, clock.ElapsedMilliseconds);
            return ApiResult.Success;
        }
    }

    /// <summary>Checks the state against this daemon's image and adopts it; the reason when refused (fd not taken).</summary>
    private string? Restore(byte[] bytes, int fd, out FailoverMount? mount)
    {
        mount = null;
        FailoverState state;
        try
        {
            state = FailoverState.Decode(bytes);
        }
        catch (FailoverStateException e)
        {
            return e.Message;
        }
        if (state.Mounts.Count != 1) return $"the state has {state.Mounts.Count} mounts; this daemon serves one image";
        mount = state.Mounts[0];
        if (mount.MountPoint != _mountPoint) return $"the state is for {mount.MountPoint}, this daemon mounts {_mountPoint}";
        if (mount.FsType != "rafs") return $"the state's filesystem is {mount.FsType}, not rafs";
        byte[] digest;
        try
        {
            digest = BootstrapDigest();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot read bootstrap {_bootstrap}: {e.Message}";
        }
        if (!digest.AsSpan().SequenceEqual(mount.BootstrapSha256))
            return $"the kernel holds nodes of bootstrap {mount.Source} (sha256 {Convert.ToHexStringLower(mount.BootstrapSha256)}), this daemon serves {_bootstrap} (sha256 {Convert.ToHexStringLower(digest)})";
        if (state.MaxWrite is < 4096 or > MaxAdoptedWrite) return $"max_write {state.MaxWrite} is out of range";
        var server = new FuseServer(_image.FileSystem, DaemonHost.ImageServerOptions(_options), _loggers.CreateLogger("vfsd.fuse"));
        if (_image.FileSystem.RestoreNodes(mount.Nodes) is { } badNode) return badNode;
        if (_image.FileSystem.RestoreHandles(mount.Handles, mount.NextHandle) is { } badHandle) return badHandle;
        int rc = server.Resume(state.InitFlags);
        if (rc != 0) return $"the filesystem refused the session's flags: errno {rc}";
        _server = server;
        Volatile.Write(ref _session, FuseDeviceSession.Adopt(_mountPoint, fd, server, DeviceOptions(state.MaxWrite), _loggers.CreateLogger("vfsd.fusedev")));
        return null;
    }

    public ApiResult Start()
    {
        lock (_lock)
        {
            if (_state != State.Ready || _session is not { } session) return ApiResult.Fail(ApiErrorKind.Internal, $"UnexpectedEvent(Start) in state {GetInfo().State}");
            string action = ApplyFailoverPolicy(session);
            session.Start();
            _state = State.Running;
            FailoverLog.Started(_logger, _mountPoint, action);
            // The replayed requests arrive within moments of the start; report how many there were.
            _ = Task.Delay(TimeSpan.FromSeconds(2)).ContinueWith(_ => FailoverLog.Resent(_logger, session.ResentRequests, action), TaskScheduler.Default);
            return ApiResult.Success;
        }
    }

    /// <summary>
    /// What to do with requests a crashed predecessor read and never answered (nydus fusedev.rs drain_fuse_requests).
    /// resend: FUSE_NOTIFY_RESEND on the session fd. flush: nydusd writes the connection's fusectl "flush" file, which
    /// only some vendor kernels have; where it is missing the requests are resent and each answered with EIO, so they
    /// fail rather than hang. After a planned hand-over nothing is pending and both are no-ops.
    /// </summary>
    private string ApplyFailoverPolicy(FuseDeviceSession session)
    {
        switch (_options.FailoverPolicy)
        {
            case FailoverPolicy.Resend:
            {
                int rc = session.NotifyResend();
                if (rc >= 0) return "resend";
                // nydusd falls back to the fusectl "resend" file some vendor kernels have.
                if (session.Device is { } dev && TryWriteControl(dev, "resend")) return "resend (fusectl)";
                FailoverLog.ResendFailed(_logger, -rc);
                return "resend";
            }
            case FailoverPolicy.Flush:
            {
                if (session.Device is { } dev && TryWriteControl(dev, "flush")) return "flush (fusectl)";
                session.FailResentRequests = true;
                int rc = session.NotifyResend();
                if (rc < 0) FailoverLog.ResendFailed(_logger, -rc);
                return "flush (resend, answered EIO)";
            }
            default:
                return "none";
        }
    }

    private static bool TryWriteControl(string device, string file)
    {
        string minor = device[(device.IndexOf(':', StringComparison.Ordinal) + 1)..];
        string path = $"/sys/fs/fuse/connections/{minor}/{file}";
        try
        {
            if (!File.Exists(path)) return false;
            File.WriteAllText(path, "1");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>PUT /api/v1/daemon/exit: after sendfd, or before start, the mount is the supervisor's: leave it.</summary>
    public void Exit()
    {
        if (_handedOver || _state != State.Running)
        {
            LeaveMounted = true;
            FailoverLog.LeavingMounted(_logger, _mountPoint);
        }
        _stop();
    }

    public ApiResult Mount(MountRequest request) => _report.Mount(request);

    public ApiResult Remount(MountRequest request) => _report.Remount(request);

    public ApiResult Umount(string mountPoint) => _report.Umount(mountPoint);

    public JsonNode? GetMetrics(MetricsKind kind, string? id) => _report.GetMetrics(kind, id);

    public string GetPrometheusMetrics() => _report.GetPrometheusMetrics();

    private string ConfigText()
    {
        if (_options.ConfigFile is not { } path) return "";
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    }

    private byte[] BootstrapDigest()
    {
        if (_bootstrapDigest is null)
        {
            using var f = File.OpenRead(_bootstrap);
            _bootstrapDigest = SHA256.HashData(f);
        }
        return _bootstrapDigest;
    }

    private static ulong ConnectionId(FuseDeviceSession session)
    {
        string? dev = session.Device;
        if (dev is null) return 0;
        return ulong.TryParse(dev.AsSpan(dev.IndexOf(':', StringComparison.Ordinal) + 1), NumberStyles.None, CultureInfo.InvariantCulture, out ulong minor) ? minor : 0;
    }
}
