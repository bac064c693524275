using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;

namespace VirtioFs.Daemon.Images;

/// <summary>
/// <c>vfsd mount</c>: serves an image on the host through /dev/fuse with the same FUSE server the virtio-fs device
/// uses (as nydusd's fusedev mode). Runs until the mount point is unmounted, or SIGTERM/SIGINT arrives, then unmounts
/// and logs the cache counters.
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
            if (!DaemonHost.TryStartApi(options, new SingleImageControl(image, DaemonHost.ImageName(options), cancel.Cancel, options.DaemonId), loggerFactory, logger, out ApiServer? api))
            {
                return 1;
            }
            try
            {
                return Serve(options, loggerFactory, logger, mountPoint, image, cancel);
            }
            finally
            {
                api?.StopAsync().GetAwaiter().GetResult();
            }
        }
    }

    /// <summary>Mounts the image through /dev/fuse and serves it until it is unmounted or the daemon is told to stop.</summary>
    private static int Serve(DaemonOptions options, ILoggerFactory loggerFactory, ILogger logger, string mountPoint, RafsMount image, CancellationTokenSource cancel)
    {
        var server = new FuseServer(image.FileSystem, DaemonHost.ImageServerOptions(options), loggerFactory.CreateLogger("vfsd.fuse"));
        FuseDeviceSession session;
        try
        {
            session = FuseDeviceSession.Mount(mountPoint, server,
                new FuseDeviceOptions { Source = DaemonHost.ImageName(options), Subtype = "vfsd", Threads = Math.Max(2, options.ThreadPoolSize) },
                loggerFactory.CreateLogger("vfsd.fusedev"));
        }
        catch (IOException e)
        {
            Log.Fatal(logger, e.Message);
            return 1;
        }
        using (session)
        {
            ImageLog.Serving(logger, Program.Version, DaemonHost.ImageName(options), "/dev/fuse", options.BlobDir ?? (options.Image is not null ? "(registry)" : "(config)"),
                options.CacheDir ?? "(none)", options.Verify?.ToString().ToLowerInvariant() ?? "fetch");
            ImageLog.Mounted(logger, mountPoint);
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
        image.LogMetrics();
        return 0;
    }

    private static void Stop(PosixSignalContext context, CancellationTokenSource cancel, ILogger logger)
    {
        context.Cancel = true;
        Log.Signalled(logger, context.Signal.ToString());
        cancel.Cancel();
    }
}
