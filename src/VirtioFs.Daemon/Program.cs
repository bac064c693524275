using System.Reflection;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Logging;

namespace VirtioFs.Daemon;

/// <summary>
/// vfsd's entry point: parse a virtiofsd-compatible command line, set up logging, then hand over to
/// <see cref="DaemonHost"/>, the composition root. Exit codes: 0 when the front-end disconnects or after --help,
/// 1 on a runtime failure, 2 on a bad command line.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        DaemonOptions options;
        try
        {
            options = OptionParser.Parse(args);
        }
        catch (OptionParser.UsageException e)
        {
            Console.Error.WriteLine($"vfsd: {e.Message} (see vfsd --help)");
            return 2;
        }

        if (options.ShowHelp)
        {
            Console.Out.WriteLine(OptionParser.Usage);
            return 0;
        }
        if (options.ShowVersion)
        {
            Console.Out.WriteLine($"vfsd {Version}");
            return 0;
        }
        if (options.PrintCapabilities)
        {
            // The vhost-user.json capabilities virtiofsd prints (qemu docs/interop/vhost-user.json); libvirt reads it.
            Console.Out.WriteLine("""{"type":"fs","features":["migrate-precopy","separate-options"]}""");
            return 0;
        }

        RotatingFileLoggerProvider? logFile = null;
        if (options.LogFile is not null)
        {
            try
            {
                logFile = new RotatingFileLoggerProvider(options.LogFile, options.LogLevel, options.LogRotationSizeMiB);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"vfsd: cannot open log file {options.LogFile}: {e.Message}");
                return 1;
            }
        }
        // Disposed after the factory (declared before it): the queued lines are written before the process exits.
        using RotatingFileLoggerProvider? ownedLogFile = logFile;
        using ILoggerFactory loggerFactory = LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(options.LogLevel);
            if (logFile is not null)
            {
                // nydusd --log-file: the file only, nothing on stderr.
                builder.AddProvider(logFile);
            }
            else if (options.Syslog)
            {
                builder.AddProvider(new SyslogLoggerProvider(options.LogLevel));
            }
            else
            {
                builder.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                });
                // Logs go to stderr: stdout belongs to --print-capabilities and friends.
                builder.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            }
        });
        if (logFile is null && options.LogRotationSizeMiB > 0)
        {
            // nydus-snapshotter passes --log-rotation-size also with log_to_stdout (and no --log-file); nydusd then
            // rotates nothing, and neither does vfsd: said once, so the flag is not silently dropped.
            Log.RotationWithoutLogFile(loggerFactory.CreateLogger("vfsd"), options.LogRotationSizeMiB);
        }
        // The sandbox (README "Security") is entered here: vfsd re-executes itself into it and comes back through this line.
        try
        {
            if (Sandbox.SandboxLauncher.Enter(args, options, loggerFactory) is int exit)
            {
                return exit;
            }
        }
        catch (OptionParser.UsageException e)
        {
            Console.Error.WriteLine($"vfsd: {e.Message} (see vfsd --help)");
            return 2;
        }
        return DaemonHost.Run(options, loggerFactory);
    }

    internal static string Version =>
        typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.1.0";
}
