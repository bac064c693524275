using VirtioFs.Daemon.CommandLine;

namespace VirtioFs.Daemon.Sandbox;

/// <summary><c>--sandbox</c> (Rust virtiofsd 1.13 src/sandbox.rs SandboxMode).</summary>
public enum SandboxMode
{
    /// <summary>New mount, pid, ipc (and net) namespaces; the shared directory, or a tmpfs holding only an image's
    /// files, becomes the root through pivot_root and the old root is detached.</summary>
    Namespace,
    /// <summary>chroot into the shared directory (no namespaces): for hosts that cannot create them.</summary>
    Chroot,
    None,
}

/// <summary><c>--seccomp</c>: what a syscall off the allow-list gets (virtiofsd src/seccomp.rs SeccompAction).</summary>
public enum SeccompAction
{
    /// <summary>The whole process is killed (SECCOMP_RET_KILL_PROCESS).</summary>
    Kill,
    /// <summary>Allowed and logged by the kernel (SECCOMP_RET_LOG): for building the list.</summary>
    Log,
    /// <summary>SIGSYS (SECCOMP_RET_TRAP).</summary>
    Trap,
    None,
}

/// <summary>What the sandbox of one daemon run is: the result of <see cref="SandboxPolicy.Resolve"/>.</summary>
public sealed record SandboxPlan
{
    public required SandboxMode Mode { get; init; }
    public required SeccompAction Seccomp { get; init; }
    /// <summary>The capability bits kept; null: capabilities are left alone (not root).</summary>
    public ulong? KeepCaps { get; init; }
    /// <summary>The directory that becomes "/" (passthrough); null in image modes, which get a tmpfs root.</summary>
    public string? Root { get; init; }
    /// <summary>Image modes: what the tmpfs root holds, at the host paths, parents before children.</summary>
    public IReadOnlyList<(string Path, bool ReadOnly)> Binds { get; init; } = [];
    public bool NewNetNamespace { get; init; }
    /// <summary>Load libssl/libcrypto before pivot_root: .NET opens them on first use (registry TLS, manifest sha256),
    /// when their directory is no longer reachable.</summary>
    public bool PreloadTls { get; init; }
    /// <summary>Not root: a new user namespace first, with <see cref="UidMaps"/>/<see cref="GidMaps"/> (empty: the
    /// caller's own id mapped to itself), in which the daemon then becomes root.</summary>
    public bool UserNamespace { get; init; }
    public IReadOnlyList<NamespaceIdMap> UidMaps { get; init; } = [];
    public IReadOnlyList<NamespaceIdMap> GidMaps { get; init; } = [];
    /// <summary>Why a default was chosen where it is not the usual one (logged).</summary>
    public string? Note { get; init; }

    public bool IsNoop => Mode == SandboxMode.None && Seccomp == SeccompAction.None && KeepCaps is null;
}

/// <summary>The files an image mode reads after the sandbox is up (from the command line and the nydusd config).</summary>
/// <param name="HostFiles">A registry backend's host files, those that exist (<see cref="SandboxPolicy.RegistryHostFiles"/>).</param>
public sealed record ImageFiles(string? Bootstrap, string? BlobDir, string? BlobFile, string? CacheDir, bool Registry,
    IReadOnlyList<string>? HostFiles = null);

/// <summary>
/// Decides the sandbox of a run from the command line, as a pure function so every rule is unit-tested. The defaults
/// are virtiofsd's (namespace, seccomp kill, its capability list) wherever they can work; where they cannot, the
/// default is what can, with the reason in <see cref="SandboxPlan.Note"/>, and asking for more is refused (exit 2).
/// </summary>
public static class SandboxPolicy
{
    /// <summary>What a registry client reads from the host after start: name resolution (glibc 2.34+ has nss files and
    /// dns built in, so only their configuration), the CA certificates OpenSSL's default paths lead to, and
    /// /dev/urandom (.NET's HttpClient makes a Guid per request activity; without it the first request throws).</summary>
    public static readonly string[] RegistryHostFiles =
    [
        "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
        "/etc/ssl/certs", "/usr/lib/ssl", "/usr/share/ca-certificates", "/dev/urandom",
    ];

    private const string NoSandboxBuild = "this vfsd has no sandbox: native-shim/sandbox.o is linked only into the NativeAOT publish (tests/setup.sh)";

    /// <param name="isRoot">euid 0: namespaces, pivot_root and capability drops are possible.</param>
    /// <param name="hasSandbox">The binary carries native-shim/sandbox.o (the NativeAOT publish).</param>
    /// <param name="imageFiles">Reads the image's paths (only called for image modes).</param>
    public static SandboxPlan Resolve(DaemonOptions o, bool isRoot, bool hasSandbox, Func<ImageFiles> imageFiles)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(imageFiles);
        bool explicitSandbox = o.Sandbox is SandboxMode.Namespace or SandboxMode.Chroot;
        bool explicitSeccomp = o.Seccomp is SeccompAction.Kill or SeccompAction.Log or SeccompAction.Trap;
        var noop = new SandboxPlan { Mode = SandboxMode.None, Seccomp = SeccompAction.None };

        if (o.Mode is DaemonMode.FuseMount or DaemonMode.NydusFuse)
        {
            // A host FUSE mount is made in, and must stay visible from, the host's mount namespace, and mounting it
            // takes CAP_SYS_ADMIN, most of root: no root, namespace or capability set of ours would hold.
            if (explicitSandbox || explicitSeccomp || o.ModCaps.Count > 0 || o.UidMaps.Count + o.GidMaps.Count > 0)
                throw new OptionParser.UsageException("vfsd mount and vfsd fuse mount on the host: --sandbox, --seccomp and --modcaps do not apply (use none)");
            return noop with { Note = "/dev/fuse mount: no sandbox (the mount lives in the host mount namespace)" };
        }
        if (!hasSandbox)
        {
            if (explicitSandbox || explicitSeccomp || o.ModCaps.Count > 0 || o.UidMaps.Count + o.GidMaps.Count > 0) throw new OptionParser.UsageException(NoSandboxBuild);
            return noop with { Note = NoSandboxBuild };
        }

        string? note = null;
        bool registry = false;
        SandboxMode mode;
        bool apiOnly = o.ApiSocket is not null && !o.ServesImage;
        ImageFiles? image = o.ServesImage ? imageFiles() : null;
        if (apiOnly)
        {
            // Directories and images arrive at run time by host path (POST /api/v1/mount): no root can be fixed first.
            if (explicitSandbox) throw new OptionParser.UsageException("--sandbox namespace|chroot cannot serve --apisock mounts named at run time by host path (use none)");
            mode = SandboxMode.None;
            note = "--apisock: no mount sandbox (mounts are named by host path at run time)";
        }
        else if (image is { Registry: true })
        {
            // The registry backend needs the host's network (no net namespace), its resolver configuration and CA
            // certificates (bound read-only into the root) and the TLS library (loaded before pivot_root).
            if (o.Sandbox == SandboxMode.Chroot) throw new OptionParser.UsageException("--sandbox chroot needs one directory to enter (--shared-dir); images use namespace");
            mode = o.Sandbox ?? SandboxMode.Namespace;
            registry = true;
            if (mode == SandboxMode.Namespace) note = "registry backend: no network namespace (the registry is reached over the host's network)";
        }
        else
        {
            mode = o.Sandbox ?? SandboxMode.Namespace;
            if (mode == SandboxMode.Chroot && image is not null)
                throw new OptionParser.UsageException("--sandbox chroot needs one directory to enter (--shared-dir); images use namespace");
        }
        if (o.LogFile is not null && mode != SandboxMode.None)
        {
            // The log file is opened by the daemon, after it is rooted elsewhere: the host path would not be there.
            if (o.Sandbox is not null)
                throw new OptionParser.UsageException("--log-file cannot be written from inside --sandbox namespace|chroot (the file is outside the new root): log to stderr or --syslog, or use --sandbox none");
            mode = SandboxMode.None;
            note = "--log-file: no mount sandbox (the log file lies outside the new root)";
        }
        bool idMaps = o.UidMaps.Count + o.GidMaps.Count > 0;
        bool userNamespace = false;
        if (idMaps && (isRoot || mode != SandboxMode.Namespace))
        {
            // virtiofsd sandbox.rs enter(): SandboxModeInvalidUidMap / SandboxModeInvalidGidMap.
            throw new OptionParser.UsageException(isRoot
                ? "--uid-map/--gid-map apply only when vfsd is not root (they set up the user namespace of --sandbox namespace)"
                : "--uid-map/--gid-map need --sandbox namespace (they set up its user namespace)");
        }
        if (!isRoot && mode != SandboxMode.None)
        {
            if (mode == SandboxMode.Chroot)
                throw new OptionParser.UsageException("--sandbox chroot needs root (use --sandbox namespace: a user namespace)");
            // As virtiofsd (sandbox.rs enter_namespace): not root, the namespace sandbox, default or asked for, is
            // entered through a new user namespace (CLONE_NEWUSER), mapped by --uid-map/--gid-map or, without them,
            // the caller's own uid and gid to themselves. Where unprivileged user namespaces are not allowed it fails
            // at start, as virtiofsd does; --sandbox none runs without one.
            userNamespace = true;
            note ??= "not root: the namespace sandbox is entered through a new user namespace (--sandbox none to run without one)";
        }

        ulong? caps = null;
        if (isRoot || userNamespace)
        {
            // In a user namespace the daemon is root of it with every capability there: dropped the same way.
            caps = Capabilities.Mask(image is null ? Capabilities.Passthrough : Capabilities.Image, o.ModCaps);
        }
        else if (o.ModCaps.Count > 0)
        {
            throw new OptionParser.UsageException("--modcaps needs root (there are no capabilities to change)");
        }

        var binds = new List<(string, bool)>();
        if (mode == SandboxMode.Namespace && image is not null)
        {
            binds = ImageBinds(o, image);
        }
        return new SandboxPlan
        {
            Mode = mode,
            Seccomp = o.Seccomp ?? SeccompAction.Kill,
            KeepCaps = caps,
            Root = image is null && mode != SandboxMode.None ? Path.GetFullPath(o.SharedDir!) : null,
            Binds = binds,
            NewNetNamespace = mode == SandboxMode.Namespace && !registry,
            PreloadTls = mode == SandboxMode.Namespace && registry,
            UserNamespace = userNamespace,
            UidMaps = [.. o.UidMaps],
            GidMaps = [.. o.GidMaps],
            Note = note,
        };
    }

    /// <summary>The image's files, its cache and the API socket's directory, absolute, parents first; a path inside
    /// one already bound with at least its access is dropped (binding it again could not be done in a read-only one).</summary>
    private static List<(string, bool)> ImageBinds(DaemonOptions o, ImageFiles image)
    {
        var wanted = new List<(string Path, bool ReadOnly)>();
        void Add(string? path, bool readOnly)
        {
            if (path is not null) wanted.Add((Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)), readOnly));
        }
        Add(image.Bootstrap, true);
        Add(image.BlobDir, true);
        Add(image.BlobFile, true);
        Add(image.CacheDir, false);
        Add(o.ConfigFile, true);
        Add(o.PrefetchFilesList, true);
        Add(o.TrustKeyFile, true);
        if (o.ApiSocket is { } api) Add(Path.GetDirectoryName(Path.GetFullPath(api)), false);
        foreach (string hostFile in image.HostFiles ?? []) Add(hostFile, true);

        var result = new List<(string, bool)>();
        foreach (var (path, readOnly) in wanted.OrderBy(w => w.Path.Length).ThenBy(w => w.ReadOnly))
        {
            bool covered = result.Any(b => (b.Item1 == path || path.StartsWith(b.Item1 + "/", StringComparison.Ordinal) || b.Item1 == "/")
                && (readOnly || !b.Item2));
            if (!covered) result.Add((path, readOnly));
        }
        return result;
    }
}
