namespace VirtioFs.Passthrough;

/// <summary>virtiofsd cache modes: how long the guest may trust attributes, names and page cache.</summary>
public enum CachePolicy
{
    /// <summary>No caching: timeouts 0 and FOPEN_DIRECT_IO.</summary>
    Never,
    /// <summary>1 s timeouts; page cache dropped on open.</summary>
    Auto,
    /// <summary>86400 s metadata timeouts; page cache dropped on open.</summary>
    Metadata,
    /// <summary>86400 s timeouts; FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR.</summary>
    Always,
}

public sealed class PassthroughOptions
{
    /// <summary>The host directory served as the root.</summary>
    public required string SharedDir { get; init; }
    /// <summary>Refuse every mutation with EROFS.</summary>
    public bool ReadOnly { get; init; }
    public CachePolicy Cache { get; init; } = CachePolicy.Auto;
    /// <summary>Serve extended attributes (virtiofsd --xattr); otherwise the xattr ops answer ENOSYS.</summary>
    public bool Xattr { get; init; }
    /// <summary>Mark mount points inside the shared dir with FUSE_ATTR_SUBMOUNT (needs FUSE_SUBMOUNTS negotiated).</summary>
    public bool AnnounceSubmounts { get; init; }
    /// <summary>virtiofsd --allow-direct-io: keep the guest's O_DIRECT on the host open (otherwise dropped).</summary>
    public bool AllowDirectIo { get; init; }
    /// <summary>virtiofsd --preserve-noatime: keep the guest's O_NOATIME on the host open. By default it is dropped, as
    /// virtiofsd does: with the guest's fsuid an O_NOATIME open of a file it does not own fails with EPERM.</summary>
    public bool PreserveNoatime { get; init; }
    /// <summary>virtiofsd --xattrmap: guest xattr names are mapped (and filtered) by these rules; needs <see cref="Xattr"/>.</summary>
    public XattrMap? XattrMap { get; init; }
    /// <summary>
    /// virtiofsd --posix-acl: system.posix_acl_* pass through and creates honour the guest's umask only where the
    /// parent has no default ACL (the session must negotiate FUSE_POSIX_ACL, FUSE_DONT_MASK and FUSE_SETXATTR_EXT).
    /// Without it those names answer ENOTSUP and are hidden from listxattr, as in virtiofsd. Needs <see cref="Xattr"/>.
    /// </summary>
    public bool PosixAcl { get; init; }
    /// <summary>virtiofsd --security-label: the security context sent with a create (FUSE_SECURITY_CTX) is set on the new inode.</summary>
    public bool SecurityLabel { get; init; }
    /// <summary>virtiofsd --translate-uid: uids translated between guest and host by the daemon (null: none).</summary>
    public IdTranslator? Uids { get; init; }
    /// <summary>virtiofsd --translate-gid.</summary>
    public IdTranslator? Gids { get; init; }
}
