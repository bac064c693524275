using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;
using VirtioFs.Vfs;

namespace VirtioFs.Daemon.Images;

/// <summary>
/// <c>vfsd mount</c> and <c>vfsd fuse</c>: serve on the host through /dev/fuse with the same FUSE server the virtio-fs
/// device uses (as nydusd's fusedev mode): one image (<see cref="Run"/>), or a mount tree filled through the API
/// (<see cref="RunShared"/>). Runs until the mount point is unmounted, or SIGTERM/SIGINT or PUT /api/v1/daemon/exit
/// arrives, then unmounts and logs the cache counters.
/// </summary>
internal static class FuseMountHost
{
    public static int Run(DaemonOptions options, ILoggerFactory loggerFactory)
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
            var server = new FuseServer(image.FileSystem, DaemonHost.ImageServerOptions(options), loggerFactory.CreateLogger("vfsd.fuse"));
            if (!TryMount(options, loggerFactory, logger, mountPoint, server, DaemonHost.ImageName(options), out FuseDeviceSession? session))
            {
                return 1;
            }
            using (session)
            {
                ImageLog.Serving(logger, Program.Version, DaemonHost.ImageName(options), "/dev/fuse", options.BlobDir ?? (options.Image is not null ? "(registry)" : "(config)"),
                    options.CacheDir ?? "(none)", options.Verify?.ToString().ToLowerInvariant() ?? "fetch");
                ImageLog.Mounted(logger, mountPoint);
                // The API comes up once the mount is in place (as nydusd starts its API server after the FUSE daemon):
                // nydus-snapshotter waits for the socket, then for state RUNNING, and then uses the mount.
                if (!DaemonHost.TryStartApi(options, new SingleImageControl(image, DaemonHost.ImageName(options), cancel.Cancel, options.DaemonId), loggerFactory, logger, out ApiServer? api))
                {
                    return 1;
                }
                try
                {
                    ServeUntilStopped(session, logger, mountPoint, cancel);
                }
                finally
                {
                    api?.StopAsync().GetAwaiter().GetResult();
                }
            }
            image.LogMetrics();
            return 0;
        }
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
        // vfsd fuse: --thread-num readers on the one session fd (nydusd's fuse-threads); vfsd mount keeps its
        // --thread-pool-size, at least two so a slow read never stalls every other request.
        int threads = options.Mode == DaemonMode.NydusFuse ? options.FuseThreads : Math.Max(2, options.ThreadPoolSize);
        try
        {
            session = FuseDeviceSession.Mount(mountPoint, server,
                new FuseDeviceOptions { Source = source, Subtype = "vfsd", Threads = threads },
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
        bool unmounted = false;
        // Joins the readers in short slices so SIGTERM is noticed too (WaitForExit(0) reports false even when
        // they have all stopped, so a zero poll would never see the unmount).
        while (!cancel.IsCancellationRequested)
        {
            if (session.WaitForExit(TimeSpan.FromMilliseconds(200)))
            {
                unmounted = true;
                break;
            }
        }
        if (unmounted) ImageLog.Unmounted(logger, mountPoint);
        else ImageLog.Unmounting(logger, mountPoint);
    }

    private static void Stop(PosixSignalContext context, CancellationTokenSource cancel, ILogger logger)
    {
        context.Cancel = true;
        Log.Signalled(logger, context.Signal.ToString());
        cancel.Cancel();
    }
}
