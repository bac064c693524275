using System.Globalization;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Sandbox;
using VirtioFs.Oci;

namespace VirtioFs.Daemon.CommandLine;

// The rules across options, checked once the whole command line is read (OptionParser.cs Parse).
public static partial class OptionParser
{
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
            || options.PrefetchFilesList is not null || options.PrefetchAll || options.NoPrefetch || options.NoPrefetchLibraries || options.ConfigFile is not null
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
            throw new UsageException("--blob-dir, --cache-dir, --verify, --prefetch-*, --no-prefetch*, --config, --root-digest and --trust-key need --bootstrap or --image");
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
        if (options.TranslateUid.Count + options.TranslateGid.Count > 0)
        {
            // virtiofsd main.rs: conflicts_with = "posix_acl" (ACL entries carry ids the daemon would not translate).
            if (options.PosixAcl) throw new UsageException("--translate-uid/--translate-gid cannot be used with --posix-acl (the ids inside ACLs would not be translated)");
            if (options.SharedDir is null) throw new UsageException("--translate-uid/--translate-gid need --shared-dir (images keep the ids they were built with)");
            IdMaps.ToTranslator("--translate-uid", options.TranslateUid);
            IdMaps.ToTranslator("--translate-gid", options.TranslateGid);
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
}
