using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Device;
using VirtioFs.Daemon.Images;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;
using VirtioFs.RafsFs;
using VirtioFs.VhostUser;
using VirtioFs.Vfs;

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
        if (options.Mode == DaemonMode.FuseMount)
        {
            return FuseMountHost.Run(options, loggerFactory);
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
                Xattr = options.Xattr,
                AnnounceSubmounts = options.AnnounceSubmounts,
            },
            loggerFactory.CreateLogger("vfsd.passthrough"));
        return ServeVhostUser(options, fs, ServerOptions(options), loggerFactory, logger, cancel,
            () => Log.Starting(logger, Program.Version, sharedDir, options.Cache.ToString().ToLowerInvariant(), options.ReadOnly,
                options.Xattr, options.RequestQueues, options.ThreadPoolSize));
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
            if (!TryStartApi(options, new SingleImageControl(image, ImageName(options), cancel.Cancel), loggerFactory, logger, out ApiServer? api))
            {
                return 1;
            }
            try
            {
                int rc = ServeVhostUser(options, image.FileSystem, ImageServerOptions(options), loggerFactory, logger, cancel,
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
        if (!TryStartApi(options, control, loggerFactory, logger, out ApiServer? api))
        {
            return 1;
        }
        try
        {
            return ServeVhostUser(options, vfs, ServerOptions(options), loggerFactory, logger, cancel,
                () => Log.ApiServing(logger, Program.Version, options.ApiSocket!));
        }
        finally
        {
            api!.StopAsync().GetAwaiter().GetResult();
        }
    }

    /// <summary>
    /// Serves <paramref name="fs"/> to one vhost-user front-end until it disconnects (or a signal or the API asks to
    /// exit), then removes the socket and its pid lock so a later daemon finds the path free.
    /// </summary>
    private static int ServeVhostUser(DaemonOptions options, IFileSystem fs, FuseServerOptions serverOptions,
        ILoggerFactory loggerFactory, ILogger logger, CancellationTokenSource cancel, Action logStarting)
    {
        Socket listener;
        try
        {
            listener = options.ListenFd is int fd ? VhostUserServer.FromInheritedFd(fd) : VhostUserServer.Listen(options.SocketPath!);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            Log.Fatal(logger, e.Message);
            return 1;
        }
        try
        {
            var server = new FuseServer(fs, serverOptions, loggerFactory.CreateLogger("vfsd.fuse"));
            using var device = new VirtioFsDevice(server, options.Tag, options.RequestQueues, options.ThreadPoolSize,
                loggerFactory.CreateLogger("vfsd.virtio-fs"));
            logStarting();
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
            listener.Dispose();
            if (options.SocketPath is { } path)
            {
                File.Delete(path);
                File.Delete(path + ".pid");
            }
        }
    }

    /// <summary>What the logs call the served image: the reference with --image, else the bootstrap path.</summary>
    internal static string ImageName(DaemonOptions options) => options.Image?.ToString() ?? options.Bootstrap!;

    /// <summary>FUSE session knobs for an image: read-only, so no writeback cache and no locks to serve (the kernel
    /// keeps POSIX locks locally when the filesystem does not offer them).</summary>
    internal static FuseServerOptions ImageServerOptions(DaemonOptions options) => new()
    {
        ReadDirPlus = options.Readdirplus,
        AnnounceSubmounts = false,
    };

    /// <summary>Cache-mode knobs of the FUSE session (virtiofsd: writeback, readdirplus, locks, submounts).</summary>
    internal static FuseServerOptions ServerOptions(DaemonOptions options) => new()
    {
        WritebackCache = options.Writeback && !options.ReadOnly,
        // virtiofsd turns READDIRPLUS off with cache=never: entries would expire at once anyway.
        ReadDirPlus = options.Readdirplus && options.Cache != CacheMode.Never,
        PosixLocks = options.PosixLock,
        FlockLocks = options.Flock,
        AnnounceSubmounts = options.AnnounceSubmounts,
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
