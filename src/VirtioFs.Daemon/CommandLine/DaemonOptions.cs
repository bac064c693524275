using Microsoft.Extensions.Logging;
using VirtioFs.Oci;

namespace VirtioFs.Daemon.CommandLine;

/// <summary>virtiofsd's cache modes (virtiofsd README "--cache"): how long the guest may trust what it has seen.</summary>
public enum CacheMode
{
    /// <summary>No caching: attribute and entry timeouts 0, direct I/O.</summary>
    Never,
    /// <summary>1 second timeouts; page cache dropped on open.</summary>
    Auto,
    /// <summary>Metadata cached for a day, data not kept across opens.</summary>
    Metadata,
    /// <summary>Everything cached for a day; the host directory must not change behind the guest.</summary>
    Always,
}

/// <summary>How vfsd serves: as a vhost-user virtio-fs back-end (the default), or on the host through /dev/fuse
/// (<c>vfsd mount ... MOUNTPOINT</c>).</summary>
public enum DaemonMode
{
    VhostUser,
    FuseMount,
    /// <summary><c>vfsd fuse --mountpoint M ...</c>: nydusd's <c>fuse</c> subcommand as nydus-snapshotter runs it; one
    /// image with <c>--bootstrap</c> (a dedicated daemon), else a mount tree filled through the API (a shared one).</summary>
    NydusFuse,
}

/// <summary>Where cached chunks are checked against their digests (<c>--verify</c>).</summary>
public enum VerifyOption
{
    /// <summary>When a chunk is fetched from the backend; the cache is trusted afterwards.</summary>
    Fetch,
    /// <summary>On every read from the cache too; a bad cached chunk is fetched again.</summary>
    Always,
}

/// <summary>What a successor does with the requests a crashed daemon had read and never answered (nydusd
/// <c>--failover-policy</c>, service/src/upgrade.rs FailoverPolicy).</summary>
public enum FailoverPolicy
{
    /// <summary>Nothing: those requests wait until the connection ends.</summary>
    None,
    /// <summary>FUSE_NOTIFY_RESEND: the kernel hands them out again and they are served (nydusd's default).</summary>
    Resend,
    /// <summary>They fail: the kernel's own flush where it has one, else resend and answer each with EIO.</summary>
    Flush,
}

/// <summary>What the daemon was asked to do, after parsing; no I/O happens while these are built.</summary>
public sealed class DaemonOptions
{
    public DaemonMode Mode { get; set; } = DaemonMode.VhostUser;
    /// <summary>The host directory <c>vfsd mount</c> mounts the image on.</summary>
    public string? MountPoint { get; set; }

    // ---- failover and hot upgrade of the /dev/fuse mount (nydus-snapshotter's supervisor) ----
    /// <summary><c>--supervisor PATH</c>: the Unix socket the session fd and state are handed to and fetched from.</summary>
    public string? Supervisor { get; set; }
    /// <summary><c>--upgrade</c>: do not mount; wait in INIT for PUT /api/v1/daemon/fuse/takeover.</summary>
    public bool Upgrade { get; set; }
    public FailoverPolicy FailoverPolicy { get; set; } = FailoverPolicy.Resend;

    // ---- image serving (nydusd-style): a RAFS bootstrap instead of --shared-dir ----
    public string? Bootstrap { get; set; }
    public string? BlobDir { get; set; }
    public string? CacheDir { get; set; }
    public VerifyOption? Verify { get; set; }
    /// <summary>A file listing image paths to prefetch, one per line.</summary>
    public string? PrefetchFilesList { get; set; }
    public bool PrefetchAll { get; set; }
    public bool NoPrefetch { get; set; }

    /// <summary>--no-prefetch-libs: do not fetch a program's shared libraries when it is first read.</summary>
    public bool NoPrefetchLibraries { get; set; }
    /// <summary>A nydusd JSON config (device.backend, device.cache, digest_validate, fs_prefetch).</summary>
    public string? ConfigFile { get; set; }
    /// <summary>The image's trusted merkle root, 32 bytes.</summary>
    public byte[]? RootDigest { get; set; }
    /// <summary>File holding the Ed25519 public key the image's root must be signed with.</summary>
    public string? TrustKeyFile { get; set; }

    /// <summary><c>--image HOST/REPO[:TAG][@DIGEST]</c>: a nydus image in a registry, resolved to a bootstrap at start
    /// (cached under the cache directory) and served with its blobs read lazily from the registry.</summary>
    public OciReference? Image { get; set; }

    /// <summary>The platform picked from an image index (<c>--platform os/arch[/variant]</c>).</summary>
    public OciPlatform Platform { get; set; } = DefaultPlatform;

    public static readonly OciPlatform DefaultPlatform = new("linux", "amd64");

    public bool ServesImage => Bootstrap is not null || Image is not null;

    public string? SocketPath { get; set; }
    /// <summary>The nydusd-compatible HTTP API socket: filesystems are mounted and unmounted at run time through it.</summary>
    public string? ApiSocket { get; set; }
    /// <summary>nydusd's <c>--id</c>: the daemon's name, reported as <c>id</c> by GET /api/v1/daemon (nydus-snapshotter
    /// passes its daemon id and matches it there).</summary>
    public string? DaemonId { get; set; }
    /// <summary>An inherited, already listening vhost-user socket (Kata's Go runtime passes <c>--fd=3</c>).</summary>
    public int? ListenFd { get; set; }
    public string? SharedDir { get; set; }
    public string? Tag { get; set; }
    public CacheMode Cache { get; set; } = CacheMode.Auto;
    public int ThreadPoolSize { get; set; }
    public bool AnnounceSubmounts { get; set; }
    public bool Xattr { get; set; }
    /// <summary>--xattrmap: guest xattr names mapped and filtered by these rules (implies xattr, as in virtiofsd).</summary>
    public VirtioFs.Passthrough.XattrMap? XattrMap { get; set; }
    /// <summary>--posix-acl: negotiate FUSE_POSIX_ACL (implies xattr).</summary>
    public bool PosixAcl { get; set; }
    /// <summary>--security-label: negotiate FUSE_SECURITY_CTX and label new inodes (implies xattr).</summary>
    public bool SecurityLabel { get; set; }
    /// <summary>--killpriv-v2: negotiate FUSE_HANDLE_KILLPRIV_V2 (off by default, as in virtiofsd).</summary>
    public bool KillPrivV2 { get; set; }
    /// <summary>Extended attributes are served: --xattr, or an option that implies it (virtiofsd main.rs).</summary>
    public bool XattrEnabled => Xattr || XattrMap is not null || PosixAcl || SecurityLabel;
    public bool ReadOnly { get; set; }
    public bool Writeback { get; set; }
    public bool Readdirplus { get; set; } = true;
    public bool PosixLock { get; set; } = true;
    public bool Flock { get; set; }
    public bool Syslog { get; set; }
    public LogLevel LogLevel { get; set; } = LogLevel.Information;
    public int RequestQueues { get; set; } = 1;
    public ulong? RlimitNofile { get; set; }
    /// <summary><c>--sandbox</c>; null: the default for the serving mode (<see cref="Sandbox.SandboxPolicy"/>).</summary>
    public Sandbox.SandboxMode? Sandbox { get; set; }
    /// <summary><c>--seccomp</c>; null: the default for the serving mode.</summary>
    public Sandbox.SeccompAction? Seccomp { get; set; }
    /// <summary><c>--modcaps</c>: capabilities added to (true) or removed from (false) the kept set, in order.</summary>
    public IReadOnlyList<(int Cap, bool Add)> ModCaps { get; set; } = [];
    /// <summary>virtiofsd <c>--uid-map</c>/<c>--gid-map</c> (repeatable): the user namespace of an unprivileged
    /// <c>--sandbox namespace</c>; empty: the caller's own uid/gid mapped to itself, as virtiofsd does.</summary>
    public List<Sandbox.NamespaceIdMap> UidMaps { get; } = [];
    public List<Sandbox.NamespaceIdMap> GidMaps { get; } = [];
    /// <summary>virtiofsd <c>--translate-uid</c>/<c>--translate-gid</c> (repeatable): ids the daemon translates between
    /// guest and host itself.</summary>
    public List<Sandbox.IdTranslation> TranslateUid { get; } = [];
    public List<Sandbox.IdTranslation> TranslateGid { get; } = [];
    public bool PrintCapabilities { get; set; }
    public bool ShowHelp { get; set; }
    public bool ShowVersion { get; set; }

    // ---- launch forms and virtiofsd flags Kata users pass in virtio_fs_extra_args ----
    /// <summary>Started as nydusd's <c>virtiofs</c> subcommand (Kata's <c>virtio-fs-nydus</c> mode).</summary>
    public bool NydusVirtiofs { get; set; }
    /// <summary>nydusd <c>virtiofs --hybrid-mode</c>: passthrough and RAFS mounted side by side at run time in one tree.
    /// vfsd's tree always works that way (each mount answers OPEN itself), so this only records that it was asked.</summary>
    public bool HybridMode { get; set; }
    /// <summary>virtiofsd <c>--allow-mmap</c>: offer FUSE_DIRECT_IO_ALLOW_MMAP so the guest may mmap MAP_SHARED files
    /// opened with FOPEN_DIRECT_IO (cache=never).</summary>
    public bool AllowMmap { get; set; }
    /// <summary>virtiofsd <c>--allow-direct-io</c>: keep the guest's O_DIRECT when opening the host file.</summary>
    public bool AllowDirectIo { get; set; }
    /// <summary>virtiofsd <c>--preserve-noatime</c>: keep the guest's O_NOATIME (by default it is dropped, as an
    /// unprivileged open with O_NOATIME of a file one does not own fails with EPERM).</summary>
    public bool PreserveNoatime { get; set; }
    /// <summary>virtiofsd <c>--socket-group</c>: the socket is made mode 0770 and owned by this group.</summary>
    public string? SocketGroup { get; set; }
    // ---- nydusd's fuse subcommand and its global logging flags (nydus src/bin/nydusd/main.rs) ----
    /// <summary><c>--thread-num</c> / <c>--fuse-threads</c>: threads reading the one /dev/fuse session fd (nydusd's
    /// default is 4, range 1-1024).</summary>
    public int FuseThreads { get; set; } = DefaultFuseThreads;

    public const int DefaultFuseThreads = 4;

    /// <summary>Threads reading the /dev/fuse session fd: <c>vfsd fuse</c> takes nydusd's <c>--thread-num</c>;
    /// <c>vfsd mount</c> keeps its <c>--thread-pool-size</c>, at least two so a slow read never stalls every other request.</summary>
    public int FuseReaderThreads => Mode == DaemonMode.NydusFuse ? FuseThreads : Math.Max(2, ThreadPoolSize);

    /// <summary><c>--log-file F</c>: log to F instead of stderr (".log" is added when F has no extension, as nydusd does).</summary>
    public string? LogFile { get; set; }

    /// <summary><c>--log-rotation-size N</c>: rotate the log file once it exceeds N MiB; 0 (the default) never rotates.</summary>
    public ulong LogRotationSizeMiB { get; set; }
}
