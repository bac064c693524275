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
               vfsd virtiofs [--hybrid-mode] --apisock PATH --sock PATH [options]
               vfsd fuse --mountpoint M [--bootstrap B --config C] [--apisock A] [--thread-num N] [...]
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
                                    GET /api/v1/daemon, /api/v1/metrics[/inflight|/backend|/blobcache], /metrics
          --id ID                   the daemon's name, reported as "id" by GET /api/v1/daemon (nydusd --id)
          --cache MODE              never | auto | metadata | always (default auto); 'none' means never
          --readonly                refuse every change with EROFS
          --xattr / --no-xattr      enable or disable extended attributes (default off)
          --xattrmap MAP            map and filter guest xattr names (virtiofsd rule syntax, e.g.
                                    ':prefix:all::user.virtiofs.::bad:all:::'); implies --xattr
          --posix-acl / --no-posix-acl  serve POSIX ACLs (FUSE_POSIX_ACL; implies --xattr; default off)
          --security-label          set the security context a guest sends with a create (FUSE_SECURITY_CTX; implies --xattr)
          --killpriv-v2 / --no-killpriv-v2  clear SUID/SGID on write, truncate and chown ourselves (FUSE_HANDLE_KILLPRIV_V2;
                                    default off)
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
        Failover and hot upgrade of the /dev/fuse mount (vfsd mount, with --apisock; nydus-snapshotter's supervisor):
          --supervisor PATH         Unix socket to hand the session fd and state to (PUT /api/v1/daemon/fuse/sendfd)
                                    and take them back from (PUT /api/v1/daemon/fuse/takeover)
          --upgrade                 do not mount: wait for takeover, then PUT /api/v1/daemon/start
          --failover-policy resend|flush|none
                                    requests a crashed daemon left unanswered: served again (default), failed, or left
          --log-level LEVEL         error | warn | info | debug | trace | off (default info)
          --log-file FILE           log to FILE instead of stderr (".log" added when FILE has no extension)
          --log-rotation-size N     rotate FILE when it exceeds N MiB, keeping the 10 newest gzip-compressed
                                    (FILE_rYYYY-MM-DD_HH-MM-SS.EXT.gz); 0 (default) never rotates
          --print-capabilities      print the vhost-user backend capabilities as JSON and exit
          --socket-group GROUP      make the socket mode 0770 and owned by GROUP (with --socket-path)
          --allow-mmap              let the guest mmap MAP_SHARED files opened for direct I/O (cache=never)
          --allow-direct-io         keep the guest's O_DIRECT when opening host files (dropped by default)
          --preserve-noatime        keep the guest's O_NOATIME when opening host files (dropped by default)
          --no-announce-submounts   undo --announce-submounts
          --inode-file-handles=never  accepted (vfsd holds an O_PATH fd per inode); prefer and mandatory are refused
          -o OPT[,OPT...]           legacy options: source=DIR, cache=MODE, xattr, no_xattr, announce_submounts,
                                    readonly, rw, writeback, no_writeback, readdirplus, no_readdirplus, posix_lock,
                                    no_posix_lock, flock, no_flock, allow_direct_io, no_allow_direct_io,
                                    log_level=LEVEL, loglevel=LEVEL, sandbox=..., xattrmap=MAP, posix_acl,
                                    no_posix_acl, security_label, no_security_label, killpriv_v2, no_killpriv_v2
          -f                        stay in the foreground (always the case; accepted for compatibility)
          -d, --debug               same as --log-level debug
          -h, --help                this text
          -V, --version             print the version
        nydusd's launch form: vfsd virtiofs [--hybrid-mode] --log-level L --apisock A --sock S (Kata virtio-fs-nydus).
        Refused with an error: --migration-*, --daemonize, --inode-file-handles=prefer|mandatory, -o timeout,
        -o max_idle_threads, nydusd's singleton (--fscache) mode.
        vfsd fuse (nydusd's fuse subcommand, as nydus-snapshotter runs it; -M -A -C -B -D -m -l -L as in nydusd):
          --mountpoint M            where the FUSE mount goes (an existing directory)
          --bootstrap B --config C  a dedicated daemon serving one image at M (or --localfs-dir DIR for --config);
                                    without them a shared daemon: POST /api/v1/mount?mountpoint=/ID puts images at M/ID
          --thread-num N            threads serving /dev/fuse, 1-1024 (default 4); alias --fuse-threads
          --prefetch-files FILE     as above: a file naming image paths to prefetch, one per line
          --virtual-mountpoint /    accepted only as /; --writable and --backend-source are refused
        """;

    // virtiofsd 1.13's live-migration options (src/main.rs: --migration-mode, --migration-on-error,
    // --migration-verify-handles, --migration-confirm-paths). vfsd does not implement vhost-user device-state transfer.
    private static readonly HashSet<string> MigrationOptions = new(StringComparer.Ordinal)
    {
        "--migration-mode", "--migration-on-error", "--migration-verify-handles", "--migration-confirm-paths",
    };

    /// <summary>Parses <paramref name="args"/>; throws <see cref="UsageException"/> with a one-line reason on bad input.</summary>
    public static DaemonOptions Parse(IReadOnlyList<string> args)
    {
        var options = new DaemonOptions();
        bool platformGiven = false;
        bool localfsDir = false;
        bool failoverGiven = false;
        int first = 0;
        if (args.Count > 0 && args[0] == "mount")
        {
            options.Mode = DaemonMode.FuseMount;
            first = 1;
        }
        else if (args.Count > 0 && args[0] == "virtiofs")
        {
            // nydusd's virtio-fs daemon (dragonflyoss/nydus src/bin/nydusd/main.rs, append_virtiofs_subcmd_options):
            // Kata's Go runtime runs `virtiofs --log-level L --apisock A --sock S` (nydusd.go), runtime-rs adds
            // --hybrid-mode (nydus_daemon.rs). The options after it are vfsd's own (nydusd's --sock, --apisock,
            // --log-level, --shared-dir, --bootstrap, --config, --prefetch-files among them).
            options.NydusVirtiofs = true;
            first = 1;
        }
        else if (args.Count > 0 && args[0] == "singleton")
        {
            throw new UsageException(args.Any(a => a == "--fscache" || a == "-F" || a.StartsWith("--fscache=", StringComparison.Ordinal))
                ? "nydusd's `singleton --fscache` mode (EROFS over fscache) is not supported: serve the image with `vfsd mount` (FUSE) or over virtio-fs"
                : "nydusd's `singleton` mode (a shared blob cache/fscache service) is not supported");
        }
        else if (args.Count > 0 && args[0] == "fuse")
        {
            options.Mode = DaemonMode.NydusFuse;
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
            else if (options.Mode == DaemonMode.NydusFuse && NydusShortOption(arg, out string? longName, out string? attached))
            {
                name = longName;
                inlineValue = attached;
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
                // --socket is virtiofsd's deprecated name for --socket-path.
                case "--socket-path" or "--sock" or "--socket": options.SocketPath = NonEmpty(name, Value()); break;
                case "--apisock": options.ApiSocket = NonEmpty(name, Value()); break;
                case "--id": options.DaemonId = NonEmpty(name, Value()); break;
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
                case "--xattrmap": options.XattrMap = ParseXattrMap(Value()); break;
                case "--posix-acl": NoValue(); options.PosixAcl = true; break;
                case "--no-posix-acl": NoValue(); options.PosixAcl = false; break;
                case "--security-label": NoValue(); options.SecurityLabel = true; break;
                case "--killpriv-v2": NoValue(); options.KillPrivV2 = true; break;
                case "--no-killpriv-v2": NoValue(); options.KillPrivV2 = false; break;
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
                // ---- virtiofsd 1.13 flags a Kata user may put in virtio_fs_extra_args (virtiofsd src/main.rs) ----
                case "--allow-mmap": NoValue(); options.AllowMmap = true; break;
                case "--allow-direct-io": NoValue(); options.AllowDirectIo = true; break;
                case "--preserve-noatime": NoValue(); options.PreserveNoatime = true; break;
                case "--no-announce-submounts": NoValue(); options.AnnounceSubmounts = false; break;
                case "--socket-group": options.SocketGroup = NonEmpty(name, Value()); break;
                case "--inode-file-handles": ParseInodeFileHandles(Value()); break;
                // virtiofsd: "Compatibility option that has no effect"; vfsd always stays in the foreground, as asked.
                case "-f": break;
                case "--daemonize":
                    throw new UsageException("--daemonize is not supported: vfsd stays in the foreground so its caller can supervise it");
                // nydusd (service/src/fusedev.rs create_vfs_backend): hybrid mode sets the VFS options a passthrough
                // needs (open, opendir, killpriv_v2) even when a RAFS is mounted at start, so both kinds can be mounted
                // in one tree at run time. vfsd's Vfs leaves OPEN to each mount, so its tree always works that way.
                // (nydusd's clap declares the flag ArgAction::SetFalse and reads it with is_present, so there it turns
                // hybrid mode off; without --bootstrap, Kata's case, its tree is passthrough-capable either way.)
                case "--hybrid-mode":
                    NoValue();
                    if (!options.NydusVirtiofs)
                    {
                        throw new UsageException("--hybrid-mode is an option of the `virtiofs` subcommand (nydusd's)");
                    }
                    options.HybridMode = true;
                    break;
                // nydusd's global logging flags (any mode) and its fuse subcommand's flags (vfsd fuse only).
                case "--log-file": options.LogFile = NonEmpty(name, Value()); break;
                case "--log-rotation-size": options.LogRotationSizeMiB = ParseRotationSize(Value()); break;
                case "--mountpoint" when options.Mode == DaemonMode.NydusFuse: options.MountPoint = NonEmpty(name, Value()); break;
                case "--thread-num" or "--fuse-threads" when options.Mode == DaemonMode.NydusFuse: options.FuseThreads = ParseThreads(name, Value()); break;
                case "--localfs-dir" when options.Mode == DaemonMode.NydusFuse: options.BlobDir = NonEmpty(name, Value()); localfsDir = true; break;
                case "--virtual-mountpoint" when options.Mode == DaemonMode.NydusFuse:
                    if (Value() != "/") throw new UsageException("--virtual-mountpoint other than / is not supported: a dedicated vfsd fuse serves its image at the mount's root");
                    break;
                case "--writable" when options.Mode == DaemonMode.NydusFuse:
                    throw new UsageException("--writable does not apply: vfsd fuse serves read-only RAFS images");
                case "--backend-source":
                    // nydusd's parser has no such option either (clap refuses it); nydus-snapshotter adds it only with
                    // its experimental enable_backend_source, so a working deployment leaves that off.
                    throw new UsageException("--backend-source is not supported (nydusd has no such option; turn off nydus-snapshotter's experimental.enable_backend_source)");
                case "--supervisor": options.Supervisor = NonEmpty(name, Value()); failoverGiven = true; break;
                case "--upgrade": NoValue(); options.Upgrade = true; failoverGiven = true; break;
                case "--failover-policy": options.FailoverPolicy = ParseFailoverPolicy(Value()); failoverGiven = true; break;
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
                    else if (MigrationOptions.Contains(name))
                    {
                        throw new UsageException($"{name} is not supported: vfsd does not implement vhost-user live migration (device state transfer)");
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
            if (localfsDir && options.ConfigFile is not null) throw new UsageException("--localfs-dir and --config cannot be used together (as in nydusd)");
            if (options.LogFile is not null && options.Syslog) throw new UsageException("--log-file and --syslog cannot be used together");
            if (failoverGiven) ValidateFailover(options);
            Validate(options);
        }
        return options;
    }

    /// <summary>
    /// nydusd's one-letter options (clap: <c>-M value</c>, <c>-M=value</c> or <c>-Mvalue</c>), mapped to their long names;
    /// only in <c>vfsd fuse</c>, where they cannot be mistaken for a virtiofsd option.
    /// </summary>
    private static bool NydusShortOption(string arg, out string name, out string? attached)
    {
        name = arg;
        attached = null;
        if (arg.Length < 2 || arg[0] != '-' || arg[1] == '-') return false;
        string? longName = arg[1] switch
        {
            'M' => "--mountpoint",
            'A' => "--apisock",
            'C' => "--config",
            'B' => "--bootstrap",
            'D' => "--localfs-dir",
            'm' => "--virtual-mountpoint",
            'l' => "--log-level",
            'L' => "--log-file",
            _ => null,
        };
        if (longName is null) return false;
        name = longName;
        if (arg.Length > 2) attached = arg[2] == '=' ? arg[3..] : arg[2..];
        return true;
    }

    /// <summary>nydusd's validate_threads_configuration: 1 to 1024.</summary>
    private static int ParseThreads(string name, string value)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n is < 1 or > 1024)
        {
            throw new UsageException($"option {name}: invalid thread number '{value}', valid range: [1-1024]");
        }
        return n;
    }

    /// <summary>MiB, 0 disabling rotation (nydusd multiplies by 1024 * 1024, so the product must fit 64 bits).</summary>
    private static ulong ParseRotationSize(string value)
    {
        const ulong Max = ulong.MaxValue >> 20;
        if (!ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n) || n > Max)
        {
            throw new UsageException($"option --log-rotation-size: '{value}' is not a size in MiB from 0 to {Max}");
        }
        return n;
    }

    /// <summary>--supervisor, --upgrade and --failover-policy belong to the /dev/fuse mount (nydusd's fuse mode).</summary>
    private static void ValidateFailover(DaemonOptions options)
    {
        if (options.Mode is not (DaemonMode.FuseMount or DaemonMode.NydusFuse))
        {
            throw new UsageException("--supervisor, --upgrade and --failover-policy apply to the /dev/fuse mount (vfsd fuse, vfsd mount)");
        }
        // nydus-snapshotter (pkg/manager/daemon_adaptor.go) passes --failover-policy to every fusedev daemon and
        // --supervisor when its recover policy is failover. A shared daemon's run-time mounts are not part of the
        // handed-over state, so taking one over is refused rather than done half.
        if (options.Mode == DaemonMode.NydusFuse && !options.ServesImage && (options.Supervisor is not null || options.Upgrade))
        {
            throw new UsageException("--supervisor and --upgrade need a dedicated daemon (--bootstrap): a shared vfsd fuse daemon's mounts cannot be handed over (snapshotter: daemon_mode = \"dedicated\", or recover_policy = \"restart\")");
        }
        if (options.Upgrade && (options.Supervisor is null || options.ApiSocket is null))
            throw new UsageException("--upgrade needs --supervisor and --apisock (the state is taken over through them)");
    }

    private static FailoverPolicy ParseFailoverPolicy(string value) => value switch
    {
        "resend" => FailoverPolicy.Resend,
        "flush" => FailoverPolicy.Flush,
        "none" => FailoverPolicy.None,
        _ => throw new UsageException($"failover policy '{value}' is not one of resend, flush, none"),
    };

    private static void Validate(DaemonOptions options)
    {
        bool imageFlags = options.BlobDir is not null || options.CacheDir is not null || options.Verify is not null
            || options.PrefetchFilesList is not null || options.PrefetchAll || options.NoPrefetch || options.ConfigFile is not null
            || options.RootDigest is not null || options.TrustKeyFile is not null;
        if (options.NydusVirtiofs && options.SocketPath is null)
        {
            // nydusd: `--sock` is required by the virtiofs subcommand (it has no --fd).
            throw new UsageException("the virtiofs subcommand needs --sock PATH");
        }
        if (options.Bootstrap is not null && options.Image is not null)
        {
            throw new UsageException("--bootstrap and --image cannot be used together (--image fetches the bootstrap itself)");
        }
        if (options.Mode == DaemonMode.NydusFuse)
        {
            // nydus-snapshotter (pkg/manager/daemon_adaptor.go): a dedicated daemon gets --bootstrap and --config, a
            // shared one neither; images then arrive through POST /api/v1/mount on --apisock.
            if (options.MountPoint is null) throw new UsageException("vfsd fuse needs --mountpoint M");
            if (options.SocketPath is not null || options.ListenFd is not null || options.SharedDir is not null)
                throw new UsageException("vfsd fuse serves RAFS images through /dev/fuse: --sock/--socket-path, --fd and --shared-dir do not apply");
            if (!options.ServesImage && options.ApiSocket is null)
                throw new UsageException("vfsd fuse needs --bootstrap B (a dedicated daemon) or --apisock A (a shared one, images mounted through the API)");
        }
        else if (options.Mode == DaemonMode.FuseMount)
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
        if (options.SocketGroup is not null && options.SocketPath is null)
        {
            // virtiofsd: --socket-group conflicts with --fd; an inherited socket belongs to whoever made it.
            throw new UsageException("--socket-group needs --socket-path (an inherited --fd socket is owned by its creator)");
        }
        if ((options.XattrMap is not null || options.PosixAcl || options.SecurityLabel || options.KillPrivV2) && options.SharedDir is null)
        {
            // They change how a writable host directory is served; images are read-only and --apisock mounts share
            // one session whose INIT cannot promise them for every filesystem.
            throw new UsageException("--xattrmap, --posix-acl, --security-label and --killpriv-v2 need --shared-dir");
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

    /// <summary>virtiofsd --xattrmap rules (doc/xattr-mapping.md); a bad map is refused with the parser's reason.</summary>
    private static VirtioFs.Passthrough.XattrMap ParseXattrMap(string value) =>
        VirtioFs.Passthrough.XattrMap.TryParse(value, out VirtioFs.Passthrough.XattrMap? map, out string error) ? map : throw new UsageException($"--xattrmap: {error}");

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
                // virtiofsd's parse_compat spells the log level "loglevel" (debug, info, warn, err).
                case "loglevel": options.LogLevel = ParseLogLevel(Need()); break;
                case "rw": options.ReadOnly = false; break;
                case "allow_direct_io": options.AllowDirectIo = true; break;
                case "no_allow_direct_io": options.AllowDirectIo = false; break;
                case "max_idle_threads":
                    throw new UsageException("-o max_idle_threads (C virtiofsd) is not supported: use --thread-pool-size N");
                case "timeout":
                    throw new UsageException("-o timeout (C virtiofsd) is not supported: the timeouts follow --cache never|auto|metadata|always");
                case "xattrmap": options.XattrMap = ParseXattrMap(Need()); break;
                case "posix_acl": options.PosixAcl = true; break;
                case "no_posix_acl": options.PosixAcl = false; break;
                case "security_label": options.SecurityLabel = true; break;
                case "no_security_label": options.SecurityLabel = false; break;
                case "killpriv_v2": options.KillPrivV2 = true; break;
                case "no_killpriv_v2": options.KillPrivV2 = false; break;
                case "sandbox": options.Sandbox = ParseSandbox(Need()); break;
                case "modcaps":
                    options.ModCaps = Capabilities.ParseModCaps(Need());
                    break;
                default: throw new UsageException($"unknown -o option '{key}'");
            }
        }
    }

    /// <summary>virtiofsd <c>--inode-file-handles=never|prefer|mandatory</c> (<c>fallback</c> = prefer). vfsd references
    /// every inode by an O_PATH fd, which is what <c>never</c> asks for; the others are refused rather than ignored.</summary>
    private static void ParseInodeFileHandles(string value)
    {
        switch (value)
        {
            case "never":
                return;
            case "prefer" or "fallback" or "mandatory":
                throw new UsageException($"--inode-file-handles={value} is not supported: vfsd references inodes by O_PATH fds only (use never)");
            default:
                throw new UsageException($"--inode-file-handles '{value}' is not one of never, prefer, mandatory");
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
