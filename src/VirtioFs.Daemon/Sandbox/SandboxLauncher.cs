using System.Collections;
using System.Globalization;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Images;
using VirtioFs.Passthrough;
using VirtioFs.RafsFs;
using VirtioFs.Storage;
using VirtioFs.VhostUser;

namespace VirtioFs.Daemon.Sandbox;

/// <summary>
/// Puts the daemon into its sandbox. Namespaces, pivot_root, the capability drop and the seccomp filter must be set
/// up while the process has one thread, and the .NET runtime already has several when Main runs (capabilities and
/// unshare() act on the calling thread only). So vfsd decides the plan here, opens what must be opened in the host's
/// view (the vhost-user socket and its pid lock, the open-file limit), and re-executes itself with the plan in
/// VFSD_SANDBOX; native-shim/sandbox.c, linked into the NativeAOT vfsd, carries it out in an ELF constructor before
/// the runtime starts and reports back in VFSD_SANDBOX_ACTIVE, which <see cref="Enter"/> then adopts.
/// </summary>
internal static partial class SandboxLauncher
{
    private const string PlanVariable = "VFSD_SANDBOX";
    private const string ActiveVariable = "VFSD_SANDBOX_ACTIVE";
    /// <summary>Whether this VM reports free pages (<see cref="PageCacheAdvice"/>), as seen from the host's view: the
    /// sandboxed daemon has no /sys to look in.</summary>
    private const string PageReportingVariable = "VFSD_FREE_PAGE_REPORTING";

    /// <summary>True when this binary carries native-shim/sandbox.o: only the NativeAOT publish links it in.</summary>
    internal static bool HasSandbox => !RuntimeFeature.IsDynamicCodeSupported;

    /// <summary>
    /// Returns null to go on serving (inside the sandbox, or with none), or an exit code. On the way in it does not
    /// return: the process is replaced by the same vfsd, which comes back here with the sandbox active.
    /// </summary>
    public static int? Enter(string[] args, DaemonOptions options, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        ILogger logger = loggerFactory.CreateLogger("vfsd");
        if (Environment.GetEnvironmentVariable(ActiveVariable) is { } active)
        {
            string? reporting = Environment.GetEnvironmentVariable(PageReportingVariable);
            if (reporting is "0" or "1") PageCacheAdvice.Enabled = reporting == "1";
            Adopt(active, options, logger);
            return null;
        }
        if (Environment.GetEnvironmentVariable(PlanVariable) is not null)
        {
            // The constructor consumes the plan; finding it here means this binary has no constructor to act on it.
            Log.Fatal(logger, $"{PlanVariable} is set but was not acted on: {(HasSandbox ? "sandbox set-up failed" : "this vfsd has no sandbox")}");
            return 1;
        }

        SandboxPlan plan;
        try
        {
            plan = SandboxPolicy.Resolve(options, geteuid() == 0, HasSandbox, () => ImageFilesOf(options, logger));
        }
        catch (RafsMountException e)
        {
            Log.Fatal(logger, e.Message);
            return 1;
        }
        if (plan.Note is { } note) SandboxLog.Default(logger, note);
        if (plan.IsNoop) return null;

        // Raised now: the limit survives execve, and CAP_SYS_RESOURCE will not.
        DaemonHost.RaiseFileLimit(options.RlimitNofile, logger);
        if (plan.Root is { } root && !Directory.Exists(root))
        {
            Log.Fatal(logger, $"shared directory {root} does not exist");
            return 1;
        }
        foreach (var (path, readOnly) in plan.Binds)
        {
            if (!readOnly) Directory.CreateDirectory(path); // the cache directory: RafsMount would create it later
        }

        var text = new StringBuilder();
        text.Append("mode ").Append(Lower(plan.Mode)).Append('\n');
        if (plan.UserNamespace)
        {
            text.Append("userns 1\n");
            foreach (NamespaceIdMap m in plan.UidMaps) text.Append(CultureInfo.InvariantCulture, $"uidmap {m.Inside} {m.Outside} {m.Count}\n");
            foreach (NamespaceIdMap m in plan.GidMaps) text.Append(CultureInfo.InvariantCulture, $"gidmap {m.Inside} {m.Outside} {m.Count}\n");
        }
        if (plan.Root is { } r) text.Append("root ").Append(r).Append('\n');
        foreach (var (path, readOnly) in plan.Binds) text.Append(readOnly ? "bindro " : "bind ").Append(path).Append('\n');
        if (plan.Mode == SandboxMode.Namespace && plan.Root is null) text.Append("cwd ").Append(Environment.CurrentDirectory).Append('\n');
        text.Append("net ").Append(plan.NewNetNamespace ? '1' : '0').Append('\n');
        if (plan.PreloadTls) text.Append("preload libcrypto.so.3\npreload libssl.so.3\n");
        // Image chunks are decoded by the system liblz4 when it loads (Codec.NativeLz4), which after pivot_root it no
        // longer can: the managed decoder then ran instead, about a quarter of vfsd's CPU in a guest read-all (perf).
        if (VirtioFs.Rafs.Codec.NativeLz4) text.Append("preload liblz4.so.1\n");
        if (plan.KeepCaps is ulong caps) text.Append("caps ").Append(caps.ToString("x", CultureInfo.InvariantCulture)).Append('\n');
        text.Append("seccomp ").Append(Lower(plan.Seccomp)).Append('\n');

        // The vhost-user socket is made here, in the host's view, so clients find it at its path; the daemon inherits it.
        Socket? listener = null;
        int listenFd = options.ListenFd ?? -1;
        if (options.SocketPath is { } socketPath && options.ListenFd is null)
        {
            try
            {
                listener = VhostUserServer.Listen(socketPath);
            }
            catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
            {
                Log.Fatal(logger, e.Message);
                return 1;
            }
            VhostUserServer.KeepAcrossExec(listener);
            listenFd = (int)listener.Handle;
            if (plan.Mode != SandboxMode.None)
            {
                // Out of the daemon's reach once it is rooted elsewhere: the waiting parent removes them.
                string full = Path.GetFullPath(socketPath);
                text.Append("unlink ").Append(full).Append('\n').Append("unlink ").Append(full).Append(".pid\n");
            }
        }
        if (listenFd >= 0) text.Append("listenfd ").Append(listenFd.ToString(CultureInfo.InvariantCulture)).Append('\n');

        // /dev/log is out of reach once the daemon is rooted in the shared directory (Kata's Go runtime passes
        // --syslog): connect here, in the host's view, and hand the socket down as virtiofsd opens syslog before it
        // sandboxes itself.
        Socket? syslog = options.Syslog ? Logging.SyslogLoggerProvider.ConnectForChild() : null;

        // Disposing the factory drains the console logger's queue: execve would drop what it still holds.
        loggerFactory.Dispose();
        int errno = Reexec(args, text.ToString());
        GC.KeepAlive(listener);
        GC.KeepAlive(syslog);
        Console.Error.WriteLine($"vfsd: cannot re-execute into the sandbox: errno {errno}");
        return 1;
    }

    /// <summary>Inside: the shared directory is "/", the socket an inherited fd, and /proc/self/fd the working directory.</summary>
    private static void Adopt(string active, DaemonOptions options, ILogger logger)
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string part in active.Split(','))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0) fields[part[..eq]] = part[(eq + 1)..];
        }
        bool rooted = fields.GetValueOrDefault("rooted") == "1";
        if (int.TryParse(fields.GetValueOrDefault("listenfd"), NumberStyles.Integer, CultureInfo.InvariantCulture, out int fd) && fd >= 0)
        {
            options.ListenFd = fd;
            if (rooted) options.SocketPath = null; // unreachable from here; the waiting parent removes it
        }
        string mode = fields.GetValueOrDefault("mode", "?");
        string namespaces = mode == "namespace" ? (fields.GetValueOrDefault("net") == "1" ? "mount,pid,ipc,net" : "mount,pid,ipc (no net)") : "none";
        if (fields.GetValueOrDefault("userns") == "1") namespaces = "user," + namespaces;
        string caps = fields.GetValueOrDefault("caps", "-") is { } c && !c.StartsWith('-')
            && ulong.TryParse(c, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong mask) ? Capabilities.Describe(mask) : "(unchanged)";
        SandboxLog.Active(logger, mode, namespaces, fields.GetValueOrDefault("seccomp", "?"), caps);
        if (rooted && options.SharedDir is not null)
        {
            options.SharedDir = "/";
            ProcFd.IsWorkingDirectory = true;
        }
    }

    private static ImageFiles ImageFilesOf(DaemonOptions options, ILogger logger)
    {
        if (options.Image is { } reference)
        {
            // The reference is resolved inside the sandbox, so only the config is read here: a ca_file it names must
            // be bound into the root for the https pull (an unreadable config is reported when the image is opened).
            return new ImageFiles(null, null, null, options.CacheDir, Registry: true, RegistryHostFiles(ImageCaFile(options.ConfigFile, reference)));
        }
        // Only files are read here (no registry is asked): the bootstrap, the config, the lists and the key.
        RafsMountOptions m = ImageOptions.From(options, logger);
        // An object-storage backend (s3, oss) reaches the network as the registry does and needs the same host files.
        bool remote = m.Registry is not null || m.ObjectStorage is not null;
        return new ImageFiles(m.Bootstrap, m.BlobDir, m.BlobFile, m.CacheDir, remote, remote ? RegistryHostFiles(m.Registry?.Transport.CaFile ?? m.ObjectStorage?.Transport.CaFile) : null);
    }

    /// <summary>The <c>device.backend.config.ca_file</c> of an <c>--image</c> run's config, as the image will use it.</summary>
    private static string? ImageCaFile(string? configFile, VirtioFs.Oci.OciReference reference)
    {
        if (configFile is null) return null;
        try
        {
            if (new FileInfo(configFile).Length > NydusConfig.MaxSize) return null;
            var m = new RafsMountOptions { Bootstrap = "" };
            NydusConfig.Apply(RegistryImage.RegistryConfig(File.ReadAllText(configFile), reference), m);
            return m.Registry?.Transport.CaFile ?? m.ObjectStorage?.Transport.CaFile;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NydusConfig.ConfigException)
        {
            return null;
        }
    }

    /// <summary>The registry's host files that exist here, a backend's own CA file, and the docker config.json
    /// credentials may come from.</summary>
    private static List<string> RegistryHostFiles(string? caFile = null)
    {
        var files = SandboxPolicy.RegistryHostFiles.Where(Path.Exists).ToList();
        if (caFile is not null && File.Exists(caFile)) files.Add(Path.GetFullPath(caFile));
        // As RegistryOptions finds it (VirtioFs.Oci): $DOCKER_CONFIG, else ~/.docker.
        string? dockerDir = Environment.GetEnvironmentVariable("DOCKER_CONFIG");
        if (string.IsNullOrEmpty(dockerDir)) dockerDir = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".docker");
        if (File.Exists(Path.Combine(dockerDir, "config.json"))) files.Add(Path.Combine(dockerDir, "config.json"));
        return files;
    }

    private static string Lower<T>(T value) where T : struct, Enum => value.ToString().ToLowerInvariant();

    /// <summary>execve(/proc/self/exe) with the same arguments and the plan added to the environment; returns errno.</summary>
    private static unsafe int Reexec(string[] args, string plan)
    {
        var argv = new List<string> { Environment.GetCommandLineArgs()[0] };
        argv.AddRange(args);
        var envp = new List<string>();
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables())
        {
            string name = (string)e.Key;
            if (name is PlanVariable or ActiveVariable or PageReportingVariable) continue;
            envp.Add($"{name}={e.Value}");
        }
        envp.Add($"{PlanVariable}={plan}");
        envp.Add($"{PageReportingVariable}={(PageCacheAdvice.Enabled ? 1 : 0)}");
        nint[] argvp = ToCStrings(argv);
        nint[] envpp = ToCStrings(envp);
        fixed (nint* a = argvp)
        fixed (nint* en = envpp)
        fixed (byte* path = "/proc/self/exe\0"u8)
        {
            // SAFETY: NUL-terminated strings and NULL-terminated arrays, alive for the call (leaked if it fails: we exit).
            execve(path, a, en);
        }
        return Marshal.GetLastPInvokeError();
    }

    private static nint[] ToCStrings(List<string> items)
    {
        var result = new nint[items.Count + 1];
        for (int i = 0; i < items.Count; i++) result[i] = Marshal.StringToCoTaskMemUTF8(items[i]);
        return result;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int execve(byte* path, nint* argv, nint* envp);

    [LibraryImport("libc")]
    private static partial uint geteuid();
}

internal static partial class SandboxLog
{
    [LoggerMessage(5090, LogLevel.Information, "sandbox: {Note}")]
    public static partial void Default(ILogger logger, string note);

    [LoggerMessage(5091, LogLevel.Information, "sandbox: {Mode} (namespaces {Namespaces}), seccomp {Seccomp}, capabilities {Caps}")]
    public static partial void Active(ILogger logger, string mode, string namespaces, string seccomp, string caps);
}
