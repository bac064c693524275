using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Failover;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;
using VirtioFs.Vfs;

namespace VirtioFs.Daemon.Images;

/// <summary>
/// <c>vfsd mount</c> and <c>vfsd fuse</c>: serve on the host through /dev/fuse with the same FUSE server the virtio-fs
/// device uses (as nydusd's fusedev mode): one image (<see cref="Run"/>), or a mount tree filled through the API
/// (<see cref="RunShared"/>). Runs until the mount point is unmounted, or SIGTERM/SIGINT or PUT /api/v1/daemon/exit
/// arrives, then unmounts and logs the cache counters. One image hands over to a successor daemon for failover and
/// hot upgrade (<see cref="FuseMountDaemon"/>).
/// </summary>
internal static class FuseMountHost
{
    public static int Run(DaemonOptions options, ILoggerFactory loggerFactory)
    {
        ILogger logger = loggerFactory.CreateLogger("vfsd");
        string mountPoint = Path.GetFullPath(options.MountPoint!);
        // A mount point still mounted by a dead predecessor must not be stat()ed: nobody answers the GETATTR yet.
        if (!FuseMountDaemon.IsFuseMount(mountPoint) && !Directory.Exists(mountPoint))
        {
            Log.Fatal(logger, $"mount point {mountPoint} is not a directory");
            return 1;
        }

        using var cancel = new CancellationTokenSource();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => Stop(ctx, cancel, logger));
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => Stop(ctx, cancel, logger));

        RafsMount image;
        RafsMountOptions imageOptions;
        try
        {
            imageOptions = ImageOptions.From(options, logger);
            image = RafsMount.Open(imageOptions, loggerFactory);
        }
        catch (RafsMountException e)
        {
            Log.Fatal(logger, e.Message);
            return 1;
        }
        using (image)
        {
            // nydusd (fusedev.rs create_fuse_daemon): with --upgrade, or when a predecessor crashed, do not mount; wait in
            // INIT for the supervisor's takeover. Checked before our API server replaces the stale socket.
            bool crashed = options.ApiSocket is { } sock && !options.Upgrade && FuseMountDaemon.PredecessorCrashed(mountPoint, sock);
            bool takeOver = options.Upgrade || crashed;
            if (crashed && options.Supervisor is null)
            {
                Log.Fatal(logger, $"{mountPoint} is still mounted by a daemon that died; without --supervisor it cannot be taken over (unmount it first)");
                return 1;
            }
            var daemon = new FuseMountDaemon(options, mountPoint, image, imageOptions.Bootstrap, loggerFactory, cancel.Cancel);
            if (!DaemonHost.TryStartApi(options, daemon, loggerFactory, logger, out ApiServer? api))
            {
                return 1;
            }
            try
            {
                if (takeOver)
                {
                    if (crashed) FailoverLog.PredecessorCrashed(logger, mountPoint, options.ApiSocket!);
                    else FailoverLog.WaitingForTakeover(logger, mountPoint);
                }
                else
                {
                    try
                    {
                        daemon.MountAndServe();
                    }
                    catch (IOException e)
                    {
                        Log.Fatal(logger, e.Message);
                        return 1;
                    }
                    ImageLog.Serving(logger, Program.Version, DaemonHost.ImageName(options), "/dev/fuse", options.BlobDir ?? (options.Image is not null ? "(registry)" : "(config)"),
                        options.CacheDir ?? "(none)", options.Verify?.ToString().ToLowerInvariant() ?? "fetch");
                    ImageLog.Mounted(logger, mountPoint);
                }
                return Serve(logger, mountPoint, daemon, cancel, image);
            }
            finally
            {
                api?.StopAsync().GetAwaiter().GetResult();
            }
        }
    }

    /// <summary>Serves until the mount goes away or the daemon is told to stop; then unmounts, unless the session is
    /// the supervisor's or a successor's (after sendfd, or never started).</summary>
    private static int Serve(ILogger logger, string mountPoint, FuseMountDaemon daemon, CancellationTokenSource cancel, RafsMount image)
    {
        bool unmounted = WaitUntilUnmounted(() => daemon.IsRunning ? daemon.Session : null, cancel);
        FuseDeviceSession? session = daemon.Session;
        if (unmounted)
        {
            ImageLog.Unmounted(logger, mountPoint);
            session?.Dispose();
        }
        else if (daemon.LeaveMounted || !daemon.IsRunning)
        {
            // Every request already read is answered before the readers stop; the rest wait in the kernel.
            session?.StopServing(TimeSpan.FromSeconds(10));
        }
        else
        {
            ImageLog.Unmounting(logger, mountPoint);
            session?.Dispose();
        }
        image.LogMetrics();
        return 0;
    }

    /// <summary>
    /// <c>vfsd fuse --mountpoint M --apisock A</c> without an image: nydus-snapshotter's shared daemon. A
    /// <see cref="Vfs.Vfs"/> mount tree is served at M, and each image the snapshotter mounts with
    /// <c>POST /api/v1/mount?mountpoint=/ID</c> (pkg/daemon/daemon.go sharedFusedevMount) appears at M/ID.
    /// </summary>
    public static int RunShared(DaemonOptions options, ILoggerFactory loggerFactory)
    {
        ILogger logger = loggerFactory.CreateLogger("vfsd");
        string mountPoint = Path.GetFullPath(options.MountPoint!);
        if (!Directory.Exists(mountPoint))
        {
            Log.Fatal(logger, $"mount point {mountPoint} is not a directory");
            return 1;
        }
        using var cancel = new CancellationTokenSource();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => Stop(ctx, cancel, logger));
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => Stop(ctx, cancel, logger));

        using var vfs = new Vfs.Vfs(new VfsOptions(), loggerFactory.CreateLogger("vfsd.vfs"));
        // Disposed after the session (declared before it): images are released once nothing can reach them.
        using var control = new DaemonControl(vfs, options, loggerFactory, cancel.Cancel);
        var server = new FuseServer(vfs, DaemonHost.ImageServerOptions(options), loggerFactory.CreateLogger("vfsd.fuse"));
        if (!TryMount(options, loggerFactory, logger, mountPoint, server, "vfsd", out FuseDeviceSession? session))
        {
            return 1;
        }
        using (session)
        {
            if (!DaemonHost.TryStartApi(options, control, loggerFactory, logger, out ApiServer? api))
            {
                return 1;
            }
            try
            {
                Log.SharedFuseServing(logger, Program.Version, mountPoint, options.FuseThreads, options.ApiSocket!);
                ServeUntilStopped(session, logger, mountPoint, cancel);
            }
            finally
            {
                api!.StopAsync().GetAwaiter().GetResult();
            }
        }
        return 0;
    }

    /// <summary>Mounts <paramref name="server"/> at <paramref name="mountPoint"/> through /dev/fuse; false, logged, when
    /// the mount fails.</summary>
    private static bool TryMount(DaemonOptions options, ILoggerFactory loggerFactory, ILogger logger, string mountPoint, FuseServer server,
        string source, [NotNullWhen(true)] out FuseDeviceSession? session)
    {
        try
        {
            session = FuseDeviceSession.Mount(mountPoint, server,
                new FuseDeviceOptions { Source = source, Subtype = "vfsd", Threads = options.FuseReaderThreads },
                loggerFactory.CreateLogger("vfsd.fusedev"));
            return true;
        }
        catch (IOException e)
        {
            Log.Fatal(logger, e.Message);
            session = null;
            return false;
        }
    }

    /// <summary>Serves until the mount point is unmounted or the daemon is told to stop (signal, API exit).</summary>
    private static void ServeUntilStopped(FuseDeviceSession session, ILogger logger, string mountPoint, CancellationTokenSource cancel)
    {
        if (WaitUntilUnmounted(() => session, cancel)) ImageLog.Unmounted(logger, mountPoint);
        else ImageLog.Unmounting(logger, mountPoint);
    }

    /// <summary>
    /// Waits until the mount goes away (true) or the daemon is told to stop (false). The readers of the session
    /// <paramref name="serving"/> names are joined in short slices so SIGTERM is noticed too (WaitForExit(0) reports
    /// false even when they have all stopped, so a zero poll would never see the unmount); while no session serves
    /// (a daemon waiting for takeover), it only waits for the stop.
    /// </summary>
    private static bool WaitUntilUnmounted(Func<FuseDeviceSession?> serving, CancellationTokenSource cancel)
    {
        while (!cancel.IsCancellationRequested)
        {
            if (serving() is { } session)
            {
                if (session.WaitForExit(TimeSpan.FromMilliseconds(200)))
                {
                    return true;
                }
            }
            else
            {
                cancel.Token.WaitHandle.WaitOne(200);
            }
        }
        return false;
    }

    private static void Stop(PosixSignalContext context, CancellationTokenSource cancel, ILogger logger)
    {
        context.Cancel = true;
        Log.Signalled(logger, context.Signal.ToString());
        cancel.Cancel();
    }
}
