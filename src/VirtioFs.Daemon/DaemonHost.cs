using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Images;
using VirtioFs.Device;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;
using VirtioFs.RafsFs;
using VirtioFs.Vfs;
using VirtioFs.VhostUser;

namespace VirtioFs.Daemon;

/// <summary>
/// The composition root (virtiofsd's <c>main</c>): builds the filesystem, the FUSE server over it and the virtio-fs
/// device over that, then serves one vhost-user front-end until it disconnects. Nothing below knows about the
/// command line. The filesystem is a passthrough of <c>--shared-dir</c> or a RAFS image (<c>--bootstrap</c>);
/// <c>vfsd mount</c> serves an image through /dev/fuse instead (<see cref="FuseMountHost"/>).
/// </summary>
internal static partial class DaemonHost
{
    public static int Run(DaemonOptions options, ILoggerFactory loggerFactory)
    {
        ILogger logger = loggerFactory.CreateLogger("vfsd");
        RaiseFileLimit(options.RlimitNofile, logger);
        if (options.Mode == DaemonMode.FuseMount || (options.Mode == DaemonMode.NydusFuse && options.ServesImage))
        {
            return FuseMountHost.Run(options, loggerFactory);
        }
        if (options.Mode == DaemonMode.NydusFuse)
        {
            return FuseMountHost.RunShared(options, loggerFactory);
        }

        using var cancel = new CancellationTokenSource();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => Stop(ctx, cancel, logger));
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => Stop(ctx, cancel, logger));
        if (options.ApiSocket is not null)
        {
            return RunApi(options, loggerFactory, logger, cancel);
        }
        if (options.ServesImage)
        {
            return RunImage(options, loggerFactory, logger, cancel);
        }

        string sharedDir = Path.GetFullPath(options.SharedDir!);
        if (!Directory.Exists(sharedDir))
        {
            Log.Fatal(logger, $"shared directory {sharedDir} does not exist");
            return 1;
        }
        using var fs = new PassthroughFileSystem(
            new PassthroughOptions
            {
                SharedDir = sharedDir,
                ReadOnly = options.ReadOnly,
                Cache = ToPolicy(options.Cache),
                Xattr = options.XattrEnabled,
                AnnounceSubmounts = options.AnnounceSubmounts,
                AllowDirectIo = options.AllowDirectIo,
                PreserveNoatime = options.PreserveNoatime,
                XattrMap = options.XattrMap,
                PosixAcl = options.PosixAcl,
                SecurityLabel = options.SecurityLabel,
                Uids = Sandbox.IdMaps.ToTranslator("--translate-uid", options.TranslateUid),
                Gids = Sandbox.IdMaps.ToTranslator("--translate-gid", options.TranslateGid),
            },
            loggerFactory.CreateLogger("vfsd.passthrough"));
        if (OpenListener(options, logger) is not { } listener)
        {
            return 1;
        }
        return ServeVhostUser(options, listener, fs, ServerOptions(options), loggerFactory, logger, cancel,
            () => Log.Starting(logger, Program.Version, sharedDir, options.Cache.ToString().ToLowerInvariant(), options.ReadOnly,
                options.XattrEnabled, options.RequestQueues, options.ThreadPoolSize));
    }

    /// <summary>
    /// <c>--bootstrap</c>: the image is opened and checked (root digest, signature) before the socket exists, so a
    /// refused image never reaches a front-end; then it is served like a passthrough until the front-end leaves.
    /// </summary>
    private static int RunImage(DaemonOptions options, ILoggerFactory loggerFactory, ILogger logger, CancellationTokenSource cancel)
    {
        RafsMount image;
        try
        {
            image = RafsMount.Open(ImageOptions.From(options, logger), loggerFactory);
        }
        catch (RafsMountException e)
        {
            Log.Fatal(logger, e.Message);
            return 1;
        }
        using (image)
        {
            // The vhost-user socket exists before the API answers: a client that sees the API up connects at once.
            if (OpenListener(options, logger) is not { } listener)
            {
                return 1;
            }
            if (!TryStartApi(options, new SingleImageControl(image, ImageName(options), cancel.Cancel, options.DaemonId), loggerFactory, logger, out ApiServer? api))
            {
                CloseListener(options, listener);
                return 1;
            }
            try
            {
                int rc = ServeVhostUser(options, listener, image.FileSystem, ImageServerOptions(options), loggerFactory, logger, cancel,
                    () => ImageLog.Serving(logger, Program.Version, ImageName(options), "virtio-fs", options.BlobDir ?? (options.Image is not null ? "(registry)" : "(config)"),
                        options.CacheDir ?? "(none)", options.Verify?.ToString().ToLowerInvariant() ?? "fetch"));
                image.LogMetrics();
                return rc;
            }
            finally
            {
                api?.StopAsync().GetAwaiter().GetResult();
            }
        }
    }

    /// <summary>Starts the nydusd-style API on <c>--apisock</c> when one is asked for (<paramref name="api"/> is null
    /// otherwise); false, logged, when its socket cannot be made.</summary>
    internal static bool TryStartApi(DaemonOptions options, IDaemonControl control, ILoggerFactory loggerFactory, ILogger logger, out ApiServer? api)
    {
        api = null;
        if (options.ApiSocket is null)
        {
            return true;
        }
        var server = new ApiServer(options.ApiSocket, control, loggerFactory.CreateLogger("vfsd.api"));
        try
        {
            server.Start();
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            Log.Fatal(logger, $"API socket {options.ApiSocket}: {e.Message}");
            return false;
        }
        api = server;
        return true;
    }

    /// <summary>
    /// <c>--apisock</c>, the arrangement Kata's <c>virtio-fs-nydus</c> mode drives: one virtio-fs device over a
    /// <see cref="Vfs.Vfs"/> pseudo tree, with a passthrough and each container's image mounted and unmounted at run
    /// time through the nydusd HTTP API (<c>POST/DELETE /api/v1/mount?mountpoint=...</c>).
    /// </summary>
    private static int RunApi(DaemonOptions options, ILoggerFactory loggerFactory, ILogger logger, CancellationTokenSource cancel)
    {
        var vfs = new Vfs.Vfs(new VfsOptions(), loggerFactory.CreateLogger("vfsd.vfs"));
        using var control = new DaemonControl(vfs, options, loggerFactory, () => cancel.Cancel());
        // Kata (nydusd.go, runtime-rs nydus_daemon.rs) waits only for GET /api/v1/daemon to say RUNNING, mounts
        // /containers and starts the VM, which connects to --sock at once: the socket must exist before the API does.
        if (OpenListener(options, logger) is not { } listener)
        {
            return 1;
        }
        if (!TryStartApi(options, control, loggerFactory, logger, out ApiServer? api))
        {
            CloseListener(options, listener);
            return 1;
        }
        try
        {
            return ServeVhostUser(options, listener, vfs, ServerOptions(options), loggerFactory, logger, cancel,
                () => Log.ApiServing(logger, Program.Version, options.ApiSocket!));
        }
        finally
        {
            api!.StopAsync().GetAwaiter().GetResult();
        }
    }

    /// <summary>Creates the <c>--socket-path</c> socket (bound, listening, then renamed into place) or wraps the
    /// inherited <c>--fd</c>; null, logged, when that fails.</summary>
    private static Socket? OpenListener(DaemonOptions options, ILogger logger)
    {
        try
        {
            return options.ListenFd is int fd ? VhostUserServer.FromInheritedFd(fd) : VhostUserServer.Listen(options.SocketPath!, options.SocketGroup);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            Log.Fatal(logger, e.Message);
            return null;
        }
    }

    /// <summary>Closes the listener and removes the socket and its pid lock so a later daemon finds the path free.</summary>
    private static void CloseListener(DaemonOptions options, Socket listener)
    {
        listener.Dispose();
        if (options.SocketPath is { } path)
        {
            File.Delete(path);
            File.Delete(path + ".pid");
        }
    }

    /// <summary>
    /// The line Kata's runtime-rs waits for on virtiofsd's stderr, with no timeout, before it starts the VM
    /// (share_virtio_fs_standalone.rs, run_virtiofsd: a line containing "Waiting for vhost-user socket connection";
    /// virtiofsd prints it in run_generic_fs). Written to stderr even with --syslog, where the logs do not go: a
    /// runtime-rs user who adds --syslog to virtio_fs_extra_args would otherwise wait forever.
    /// </summary>
    internal const string ReadinessLine = "Waiting for vhost-user socket connection";

    /// <summary>
    /// Serves <paramref name="fs"/> to one vhost-user front-end on <paramref name="listener"/> until it disconnects
    /// (or a signal or the API asks to exit), then removes the socket and its pid lock.
    /// </summary>
    private static int ServeVhostUser(DaemonOptions options, Socket listener, IFileSystem fs, FuseServerOptions serverOptions,
        ILoggerFactory loggerFactory, ILogger logger, CancellationTokenSource cancel, Action logStarting)
    {
        try
        {
            var server = new FuseServer(fs, serverOptions, loggerFactory.CreateLogger("vfsd.fuse"));
            using var device = new VirtioFsDevice(server, options.Tag, options.RequestQueues, options.ThreadPoolSize,
                loggerFactory.CreateLogger("vfsd.virtio-fs"));
            logStarting();
            Console.Error.WriteLine($"vfsd: {ReadinessLine} on {options.SocketPath ?? $"fd {options.ListenFd}"}...");
            VhostUserServer.Serve(listener, device, loggerFactory.CreateLogger("vfsd.vhost-user"), cancel.Token);
            Log.Disconnected(logger);
            return 0;
        }
        catch (IOException e)
        {
            Log.Fatal(logger, e.Message);
            return 1;
        }
        finally
        {
            CloseListener(options, listener);
        }
    }

    /// <summary>What the logs call the served image: the reference with --image, else the bootstrap path.</summary>
    internal static string ImageName(DaemonOptions options) => options.Image?.ToString() ?? options.Bootstrap!;

    /// <summary>The daemon's FUSE request counters (one daemon per process, as nydusd's global FS_METRICS), read by the API.</summary>
    internal static FsIoStats FsStats { get; } = new();

    /// <summary>FUSE session knobs for an image: read-only, so no writeback cache and no locks to serve (the kernel
    /// keeps POSIX locks locally when the filesystem does not offer them).</summary>
    internal static FuseServerOptions ImageServerOptions(DaemonOptions options) => new()
    {
        Stats = FsStats,
        ReadDirPlus = options.Readdirplus,
        AnnounceSubmounts = false,
    };

    /// <summary>Cache-mode knobs of the FUSE session (virtiofsd: writeback, readdirplus, locks, submounts).</summary>
    internal static FuseServerOptions ServerOptions(DaemonOptions options) => new()
    {
        Stats = FsStats,
        WritebackCache = options.Writeback && !options.ReadOnly,
        // virtiofsd turns READDIRPLUS off with cache=never: entries would expire at once anyway.
        ReadDirPlus = options.Readdirplus && options.Cache != CacheMode.Never,
        PosixLocks = options.PosixLock,
        FlockLocks = options.Flock,
        AnnounceSubmounts = options.AnnounceSubmounts,
        DirectIoAllowMmap = options.AllowMmap,
        HandleKillPrivV2 = options.KillPrivV2 && !options.ReadOnly,
        PosixAcl = options.PosixAcl,
        SecurityLabel = options.SecurityLabel,
        // setxattr_flags carry FUSE_SETXATTR_ACL_KILL_SGID, which posix ACLs need; harmless otherwise.
        SetxattrExt = options.PosixAcl,
    };

    private static CachePolicy ToPolicy(CacheMode mode) => mode switch
    {
        CacheMode.Never => CachePolicy.Never,
        CacheMode.Metadata => CachePolicy.Metadata,
        CacheMode.Always => CachePolicy.Always,
        _ => CachePolicy.Auto,
    };

    private static void Stop(PosixSignalContext context, CancellationTokenSource cancel, ILogger logger)
    {
        context.Cancel = true;
        Log.Signalled(logger, context.Signal.ToString());
        cancel.Cancel();
    }

    /// <summary>
    /// Every inode the guest looks up holds an O_PATH fd, so the default 1024 is far too low; virtiofsd raises the
    /// soft limit to the hard limit (or to --rlimit-nofile).
    /// </summary>
    internal static void RaiseFileLimit(ulong? requested, ILogger logger)
    {
        const int RlimitNofile = 7;
        Span<ulong> limits = stackalloc ulong[2];
        if (getrlimit(RlimitNofile, ref limits[0]) != 0)
        {
            return;
        }
        // --rlimit-nofile 0 leaves the limit as it is (virtiofsd's and nydusd's --help both say so); setting 0 would
        // leave the daemon unable to open anything.
        if (requested == 0)
        {
            return;
        }
        ulong target = requested ?? limits[1];
        if (target == limits[0])
        {
            return;
        }
        limits[0] = target;
        if (requested is ulong r && r > limits[1])
        {
            limits[1] = r;
        }
        if (setrlimit(RlimitNofile, ref limits[0]) != 0)
        {
            Log.RlimitFailed(logger, target, Marshal.GetLastPInvokeError());
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int getrlimit(int resource, ref ulong limits);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setrlimit(int resource, ref ulong limits);
}
