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
public static partial class OptionParser
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
                                    the shared dir as root; not root: in a new user namespace); see README "Security"
          --seccomp kill|log|trap|none
                                    action for a syscall off vfsd's allow-list (default kill)
          --modcaps +CAP:-CAP...    add to or remove from the capabilities kept (e.g. +sys_admin:-mknod)
          --uid-map :NS:HOST:COUNT: / --gid-map ...  (repeatable; not root, --sandbox namespace) the user
                                    namespace's maps, set with newuidmap/newgidmap unless it maps only oneself
          --translate-uid TYPE:A:B:N / --translate-gid ...  (repeatable) translate ids between guest and host in the
                                    daemon: guest, host, squash-guest, squash-host, map (A B N) or forbid-guest:A:N
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
          --no-prefetch-libs        do not fetch a program's shared libraries (DT_NEEDED) when it is first read
                                    (done by default with --cache-dir for a registry or bucket image)
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
                case "--uid-map": options.UidMaps.Add(IdMaps.ParseNamespaceMap(name, Value())); break;
                case "--gid-map": options.GidMaps.Add(IdMaps.ParseNamespaceMap(name, Value())); break;
                case "--translate-uid": options.TranslateUid.Add(IdMaps.ParseTranslation(name, Value())); break;
                case "--translate-gid": options.TranslateGid.Add(IdMaps.ParseTranslation(name, Value())); break;
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
                case "--no-prefetch-libs": NoValue(); options.NoPrefetchLibraries = true; break;
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
}
