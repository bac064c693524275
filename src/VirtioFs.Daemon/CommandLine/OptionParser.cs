using System.Globalization;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Sandbox;
using VirtioFs.Oci;

namespace VirtioFs.Daemon.CommandLine;

/// <summary>
/// Parses the command lines virtiofsd accepts, so vfsd can replace it without changing its callers:
/// Kata's Go runtime (<c>--syslog --cache=auto --shared-dir=D --fd=3 --thread-pool-size=1 --announce-submounts</c>),
/// Kata's Rust runtime (<c>--socket-path S --shared-dir D --cache auto ... -o announce_submounts --xattr</c>) and the
/// legacy C virtiofsd <c>-o source=D,cache=always</c> form. Long options take their value as <c>--name=value</c> or
/// <c>--name value</c>. Anything unknown is an error, never silently ignored: a typo must not change behaviour.
/// </summary>
public static class OptionParser
{
    public sealed class UsageException(string message) : Exception(message);

    public const string Usage = """
        usage: vfsd [options]
               vfsd --bootstrap IMAGE --blob-dir DIR (--socket-path PATH | --fd N) [image options]
               vfsd mount --bootstrap IMAGE --blob-dir DIR [image options] MOUNTPOINT
               vfsd --image HOST/REPO:TAG --cache-dir DIR (--socket-path PATH | --fd N) [image options]
               vfsd mount --image HOST/REPO:TAG --cache-dir DIR [image options] MOUNTPOINT
        Serves a host directory, or a RAFS (nydus) image, to a virtual machine as a vhost-user virtio-fs device
        (a virtiofsd drop-in); `vfsd mount` serves an image on the host through /dev/fuse until it is unmounted
        or the daemon gets SIGTERM.

          --socket-path PATH        listen on a new vhost-user Unix socket at PATH (mode 0700, pid lock at PATH.pid)
          --fd N                    serve on an inherited, already listening socket N (as Kata passes --fd=3)
          --shared-dir DIR          the host directory the guest sees
          --tag TAG                 virtio-fs tag reported in the device config space (GET_CONFIG)
          --apisock PATH            nydusd-style HTTP API: filesystems are mounted at run time (POST /api/v1/mount);
                                    then neither --shared-dir nor --bootstrap is given. --sock is --socket-path.
                                    With --bootstrap/--image (also for vfsd mount) it reports on that one image:
                                    GET /api/v1/daemon, /api/v1/metrics/backend, /api/v1/metrics/blobcache, /metrics
          --cache MODE              never | auto | metadata | always (default auto); 'none' means never
          --readonly                refuse every change with EROFS
          --xattr / --no-xattr      enable or disable extended attributes (default off)
          --announce-submounts      tell the guest about host mount points inside DIR
          --thread-pool-size N      worker threads behind each request queue (0: serve in the queue thread)
          --writeback               enable the guest's writeback cache
          --no-readdirplus          answer READDIR only
          --request-queues N        number of request queues offered (default 1)
          --rlimit-nofile N         raise the open-file limit to N
          --sandbox namespace|chroot|none
                                    confine the daemon (default namespace: new mount, pid, ipc and net namespaces,
                                    the shared dir as root); see README "Security"
          --seccomp kill|log|trap|none
                                    action for a syscall off vfsd's allow-list (default kill)
          --modcaps +CAP:-CAP...    add to or remove from the capabilities kept (e.g. +sys_admin:-mknod)
          --syslog                  log to syslog instead of stderr
        Image options (instead of --shared-dir):
          --bootstrap IMAGE         the RAFS v5/v6 bootstrap to serve read-only
          --blob-dir DIR            directory of its data blobs, named by blob id
          --image HOST/REPO[:TAG][@DIGEST]
                                    instead of --bootstrap: a nydus image in an OCI registry; its bootstrap is
                                    fetched into --cache-dir (reused when the registry is down at start) and
                                    data chunks are pulled on demand. Credentials from $DOCKER_CONFIG/config.json
                                    or ~/.docker/config.json, or device.backend.config.auth in --config
          --platform OS/ARCH[/VARIANT]  the manifest to pick from an image index (default linux/amd64)
          --cache-dir DIR           keep fetched chunks in a persistent cache here (default: no cache)
          --verify fetch|always     check chunk digests when fetched (default) or on every cached read too
          --prefetch-files LIST     after mounting, fetch the image paths listed in file LIST (one per line)
          --prefetch-all            after mounting, fetch every file
          --no-prefetch             do not prefetch the image's own prefetch table (done by default with --cache-dir)
          --config FILE             nydusd JSON config (device.backend localfs dir/blob_file or registry,
                                    device.cache blobcache work_dir, digest_validate, amplify_io, fs_prefetch)
                                    instead of the flags; with --image it tunes the registry backend
          --root-digest HEX         refuse the image unless its merkle root is HEX; check digests as it is read
          --trust-key FILE          refuse the image unless its root is signed by this Ed25519 public key
          --log-level LEVEL         error | warn | info | debug | trace | off (default info)
          --print-capabilities      print the vhost-user backend capabilities as JSON and exit
          -o OPT[,OPT...]           legacy options: source=DIR, cache=MODE, xattr, no_xattr, announce_submounts,
                                    readonly, writeback, no_writeback, readdirplus, no_readdirplus, posix_lock,
                                    no_posix_lock, flock, no_flock, log_level=LEVEL, sandbox=..., xattrmap=...
          -f                        stay in the foreground (always the case; accepted for compatibility)
          -d, --debug               same as --log-level debug
          -h, --help                this text
          -V, --version             print the version
        Accepted and ignored for compatibility: --inode-file-handles,
        --socket-group, --security-label, --posix-acl, --killpriv-v2, --allow-direct-io, --preserve-noatime.
        """;

    // Options that change nothing in vfsd but that callers of virtiofsd pass: accepted so those callers keep working.
    private static readonly HashSet<string> IgnoredWithValue = new(StringComparer.Ordinal)
    {
        "--inode-file-handles", "--socket-group", "--xattrmap",
        "--migration-mode", "--migration-on-error", "--migration-verify-handles", "--migration-confirm-paths",
    };

    private static readonly HashSet<string> IgnoredFlags = new(StringComparer.Ordinal)
    {
        "-f", "--security-label", "--posix-acl", "--no-posix-acl", "--killpriv-v2", "--no-killpriv-v2",
        "--allow-direct-io", "--preserve-noatime", "--allow-mmap", "--no-announce-submounts", "--daemonize",
    };

    /// <summary>Parses <paramref name="args"/>; throws <see cref="UsageException"/> with a one-line reason on bad input.</summary>
    public static DaemonOptions Parse(IReadOnlyList<string> args)
    {
        var options = new DaemonOptions();
        bool platformGiven = false;
        int first = 0;
        if (args.Count > 0 && args[0] == "mount")
        {
            options.Mode = DaemonMode.FuseMount;
            first = 1;
        }
        for (int i = first; i < args.Count; i++)
        {
            string arg = args[i];
            string name = arg;
            string? inlineValue = null;
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=', StringComparison.Ordinal) is > 2 and int eq)
            {
                name = arg[..eq];
                inlineValue = arg[(eq + 1)..];
            }

            string Value()
            {
                if (inlineValue is not null)
                {
                    return inlineValue;
                }
                if (i + 1 >= args.Count)
                {
                    throw new UsageException($"option {name} needs a value");
                }
                return args[++i];
            }

            void NoValue()
            {
                if (inlineValue is not null)
                {
                    throw new UsageException($"option {name} takes no value");
                }
            }

            switch (name)
            {
                // nydusd names the vhost-user socket --sock; accepted so a nydusd command line works unchanged.
                case "--socket-path" or "--sock": options.SocketPath = NonEmpty(name, Value()); break;
                case "--apisock": options.ApiSocket = NonEmpty(name, Value()); break;
                case "--fd": options.ListenFd = ParseInt(name, Value(), 0, int.MaxValue); break;
                case "--shared-dir": options.SharedDir = NonEmpty(name, Value()); break;
                case "--tag": options.Tag = ParseTag(Value()); break;
                case "--cache": options.Cache = ParseCache(Value()); break;
                case "--thread-pool-size": options.ThreadPoolSize = ParseInt(name, Value(), 0, 1024); break;
                case "--request-queues": options.RequestQueues = ParseInt(name, Value(), 1, 64); break;
                case "--sandbox": options.Sandbox = ParseSandbox(Value()); break;
                case "--seccomp": options.Seccomp = ParseSeccomp(Value()); break;
                case "--modcaps": options.ModCaps = Capabilities.ParseModCaps(Value()); break;
                case "--rlimit-nofile": options.RlimitNofile = (ulong)ParseInt(name, Value(), 0, int.MaxValue); break;
                case "--log-level": options.LogLevel = ParseLogLevel(Value()); break;
                case "--announce-submounts": NoValue(); options.AnnounceSubmounts = true; break;
                case "--xattr": NoValue(); options.Xattr = true; break;
                case "--no-xattr": NoValue(); options.Xattr = false; break;
                case "--readonly": NoValue(); options.ReadOnly = true; break;
                case "--writeback": NoValue(); options.Writeback = true; break;
                case "--no-readdirplus": NoValue(); options.Readdirplus = false; break;
                case "--syslog": NoValue(); options.Syslog = true; break;
                case "--print-capabilities": NoValue(); options.PrintCapabilities = true; break;
                case "-d" or "--debug": NoValue(); options.LogLevel = LogLevel.Debug; break;
                case "-h" or "--help": NoValue(); options.ShowHelp = true; break;
                case "-V" or "--version": NoValue(); options.ShowVersion = true; break;
                case "-o": ApplyLegacy(options, Value()); break;
                case "--bootstrap": options.Bootstrap = NonEmpty(name, Value()); break;
                case "--image": options.Image = ParseImage(Value()); break;
                case "--platform": options.Platform = ParsePlatform(Value()); platformGiven = true; break;
                case "--blob-dir": options.BlobDir = NonEmpty(name, Value()); break;
                case "--cache-dir": options.CacheDir = NonEmpty(name, Value()); break;
                case "--verify": options.Verify = ParseVerify(Value()); break;
                case "--prefetch-files": options.PrefetchFilesList = NonEmpty(name, Value()); break;
                case "--prefetch-all": NoValue(); options.PrefetchAll = true; break;
                case "--no-prefetch": NoValue(); options.NoPrefetch = true; break;
                case "--config": options.ConfigFile = NonEmpty(name, Value()); break;
                case "--root-digest": options.RootDigest = ParseDigest(Value()); break;
                case "--trust-key": options.TrustKeyFile = NonEmpty(name, Value()); break;
                default:
                    if (options.Mode == DaemonMode.FuseMount && !arg.StartsWith('-') && options.MountPoint is null)
                    {
                        options.MountPoint = arg;
                        break;
                    }
                    if (arg.StartsWith("-o", StringComparison.Ordinal) && arg.Length > 2 && !arg.StartsWith("--", StringComparison.Ordinal))
                    {
                        ApplyLegacy(options, arg[2..]);
                    }
                    else if (IgnoredWithValue.Contains(name))
                    {
                        _ = Value();
                    }
                    else if (IgnoredFlags.Contains(name))
                    {
                        NoValue();
                    }
                    else
                    {
                        throw new UsageException(arg.StartsWith('-') ? $"unknown option {name}" : $"unexpected argument '{arg}'");
                    }
                    break;
            }
        }

        if (!options.ShowHelp && !options.ShowVersion && !options.PrintCapabilities)
        {
            if (platformGiven && options.Image is null && options.ApiSocket is null) throw new UsageException("--platform needs --image (or --apisock, for mounts of image references)");
            Validate(options);
        }
        return options;
    }

    private static void Validate(DaemonOptions options)
    {
        bool imageFlags = options.BlobDir is not null || options.CacheDir is not null || options.Verify is not null
            || options.PrefetchFilesList is not null || options.PrefetchAll || options.NoPrefetch || options.ConfigFile is not null
            || options.RootDigest is not null || options.TrustKeyFile is not null;
        if (options.Bootstrap is not null && options.Image is not null)
        {
            throw new UsageException("--bootstrap and --image cannot be used together (--image fetches the bootstrap itself)");
        }
        if (options.Mode == DaemonMode.FuseMount)
        {
            if (!options.ServesImage) throw new UsageException("vfsd mount needs --bootstrap IMAGE or --image REF");
            if (options.MountPoint is null) throw new UsageException("vfsd mount needs a MOUNTPOINT");
            if (options.SocketPath is not null || options.ListenFd is not null || options.SharedDir is not null)
                throw new UsageException("vfsd mount serves through /dev/fuse: --socket-path, --fd and --shared-dir do not apply");
        }
        else if (options.ApiSocket is not null && !options.ServesImage)
        {
            // nydusd-style: filesystems arrive at run time through POST /api/v1/mount. (With one image, --apisock only
            // reports on it, like a dedicated nydusd.)
            if (options.SharedDir is not null)
            {
                throw new UsageException("with --apisock, mount --shared-dir directories and images through POST /api/v1/mount");
            }
            if (options.SocketPath is null == options.ListenFd is null)
            {
                throw new UsageException("exactly one of --socket-path and --fd is required");
            }
        }
        else
        {
            if (options.SharedDir is null == !options.ServesImage)
            {
                throw new UsageException(options.SharedDir is null
                    ? "--shared-dir (or -o source=DIR), --bootstrap IMAGE or --image REF is required"
                    : "--shared-dir cannot be combined with --bootstrap or --image");
            }
            if (options.SocketPath is null == options.ListenFd is null)
            {
                throw new UsageException("exactly one of --socket-path and --fd is required");
            }
        }
        if (!options.ServesImage && imageFlags)
        {
            throw new UsageException("--blob-dir, --cache-dir, --verify, --prefetch-*, --config, --root-digest and --trust-key need --bootstrap or --image");
        }
        if (options.PrefetchAll && (options.PrefetchFilesList is not null || options.NoPrefetch))
        {
            throw new UsageException("--prefetch-all cannot be combined with --prefetch-files or --no-prefetch");
        }
        if (options.Bootstrap is not null && options.BlobDir is null && options.ConfigFile is null)
        {
            throw new UsageException("--bootstrap needs --blob-dir DIR (or a --config naming the blob directory)");
        }
        if (options.Image is not null)
        {
            if (options.BlobDir is not null)
            {
                throw new UsageException("--image reads blobs from the registry: --blob-dir does not apply");
            }
            if (options.CacheDir is null && options.ConfigFile is null)
            {
                throw new UsageException("--image needs --cache-dir DIR (or a --config naming device.cache.config.work_dir): the bootstrap is kept there");
            }
        }
    }

    private static SandboxMode ParseSandbox(string value) => value switch
    {
        "namespace" => SandboxMode.Namespace,
        "chroot" => SandboxMode.Chroot,
        "none" => SandboxMode.None,
        _ => throw new UsageException($"--sandbox '{value}' is not one of namespace, chroot, none"),
    };

    private static SeccompAction ParseSeccomp(string value) => value switch
    {
        "kill" => SeccompAction.Kill,
        "log" => SeccompAction.Log,
        "trap" => SeccompAction.Trap,
        "none" => SeccompAction.None,
        _ => throw new UsageException($"--seccomp '{value}' is not one of kill, log, trap, none"),
    };

    private static OciReference ParseImage(string value) =>
        OciReference.TryParse(value, out OciReference r, out string error) ? r : throw new UsageException($"--image '{value}': {error}");

    private static OciPlatform ParsePlatform(string value)
    {
        try
        {
            return OciPlatform.Parse(value);
        }
        catch (FormatException e)
        {
            throw new UsageException($"--platform: {e.Message}");
        }
    }

    private static VerifyOption ParseVerify(string value) => value switch
    {
        "fetch" => VerifyOption.Fetch,
        "always" => VerifyOption.Always,
        _ => throw new UsageException($"--verify '{value}' is not one of fetch, always"),
    };

    private static byte[] ParseDigest(string value)
    {
        if (value.Length != 64 || !value.All(char.IsAsciiHexDigit))
        {
            throw new UsageException("--root-digest must be 64 hex digits (a 32-byte merkle root)");
        }
        return Convert.FromHexString(value);
    }

    /// <summary>The C virtiofsd's comma-separated <c>-o</c> options (its <c>fuse_opt</c> table).</summary>
    private static void ApplyLegacy(DaemonOptions options, string list)
    {
        foreach (string raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = raw.IndexOf('=', StringComparison.Ordinal);
            string key = eq < 0 ? raw : raw[..eq];
            string? value = eq < 0 ? null : raw[(eq + 1)..];
            string Need() => value ?? throw new UsageException($"-o {key} needs a value");
            switch (key)
            {
                case "source": options.SharedDir = NonEmpty("-o source", Need()); break;
                case "cache": options.Cache = ParseCache(Need()); break;
                case "log_level": options.LogLevel = ParseLogLevel(Need()); break;
                case "xattr": options.Xattr = true; break;
                case "no_xattr": options.Xattr = false; break;
                case "announce_submounts": options.AnnounceSubmounts = true; break;
                case "readonly" or "ro": options.ReadOnly = true; break;
                case "writeback": options.Writeback = true; break;
                case "no_writeback": options.Writeback = false; break;
                case "readdirplus": options.Readdirplus = true; break;
                case "no_readdirplus": options.Readdirplus = false; break;
                case "posix_lock": options.PosixLock = true; break;
                case "no_posix_lock": options.PosixLock = false; break;
                case "flock": options.Flock = true; break;
                case "no_flock": options.Flock = false; break;
                case "sandbox": options.Sandbox = ParseSandbox(Need()); break;
                case "modcaps": options.ModCaps = Capabilities.ParseModCaps(Need()); break;
                case "xattrmap" or "max_idle_threads" or "timeout" or "killpriv_v2" or "no_killpriv_v2"
                    or "allow_direct_io" or "no_allow_direct_io" or "posix_acl" or "no_posix_acl" or "security_label"
                    or "no_security_label" or "rw":
                    break;
                default: throw new UsageException($"unknown -o option '{key}'");
            }
        }
    }

    private static string NonEmpty(string name, string value) =>
        value.Length == 0 ? throw new UsageException($"option {name} needs a non-empty value") : value;

    private static int ParseInt(string name, string value, int min, int max)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < min || n > max)
        {
            throw new UsageException($"option {name}: '{value}' is not a number from {min} to {max}");
        }
        return n;
    }

    private static string ParseTag(string value)
    {
        // virtio spec 1.2, 5.11.4: tag is UTF-8, at most 36 bytes, NUL-padded (not terminated when 36 bytes long).
        int bytes = System.Text.Encoding.UTF8.GetByteCount(value);
        if (bytes is 0 or > 36 || value.Contains('\0', StringComparison.Ordinal))
        {
            throw new UsageException($"--tag must be 1 to 36 bytes of UTF-8, got {bytes}");
        }
        return value;
    }

    public static CacheMode ParseCache(string value) => value switch
    {
        "never" or "none" => CacheMode.Never,
        "auto" => CacheMode.Auto,
        "metadata" => CacheMode.Metadata,
        "always" => CacheMode.Always,
        _ => throw new UsageException($"cache mode '{value}' is not one of never, auto, metadata, always"),
    };

    private static LogLevel ParseLogLevel(string value) => value switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "info" => LogLevel.Information,
        "warn" or "warning" => LogLevel.Warning,
        "error" or "err" => LogLevel.Error,
        "off" => LogLevel.None,
        _ => throw new UsageException($"log level '{value}' is not one of error, warn, info, debug, trace, off"),
    };
}
