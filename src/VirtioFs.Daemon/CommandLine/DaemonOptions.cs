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
}

/// <summary>Where cached chunks are checked against their digests (<c>--verify</c>).</summary>
public enum VerifyOption
{
    /// <summary>When a chunk is fetched from the backend; the cache is trusted afterwards.</summary>
    Fetch,
    /// <summary>On every read from the cache too; a bad cached chunk is fetched again.</summary>
    Always,
}

/// <summary>What the daemon was asked to do, after parsing; no I/O happens while these are built.</summary>
public sealed class DaemonOptions
{
    public DaemonMode Mode { get; set; } = DaemonMode.VhostUser;
    /// <summary>The host directory <c>vfsd mount</c> mounts the image on.</summary>
    public string? MountPoint { get; set; }

    // ---- image serving (nydusd-style): a RAFS bootstrap instead of --shared-dir ----
    public string? Bootstrap { get; set; }
    public string? BlobDir { get; set; }
    public string? CacheDir { get; set; }
    public VerifyOption? Verify { get; set; }
    /// <summary>A file listing image paths to prefetch, one per line.</summary>
    public string? PrefetchFilesList { get; set; }
    public bool PrefetchAll { get; set; }
    public bool NoPrefetch { get; set; }
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
    /// <summary>An inherited, already listening vhost-user socket (Kata's Go runtime passes <c>--fd=3</c>).</summary>
    public int? ListenFd { get; set; }
    public string? SharedDir { get; set; }
    public string? Tag { get; set; }
    public CacheMode Cache { get; set; } = CacheMode.Auto;
    public int ThreadPoolSize { get; set; }
    public bool AnnounceSubmounts { get; set; }
    public bool Xattr { get; set; }
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
    public bool PrintCapabilities { get; set; }
    public bool ShowHelp { get; set; }
    public bool ShowVersion { get; set; }
}
