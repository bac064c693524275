namespace VirtioFs.Fuse;

/// <summary>What the server offers at INIT. Flags are only enabled when the kernel offers them too.</summary>
public sealed class FuseServerOptions
{
    /// <summary>Largest WRITE payload (init_out.max_write); also bounds max_pages. Default 1 MiB like virtiofsd.</summary>
    public uint MaxWrite { get; init; } = 1024 * 1024;
    public uint MaxReadahead { get; init; } = 1024 * 1024;
    public ushort MaxBackground { get; init; } = 64;
    public ushort CongestionThreshold { get; init; } = 48;
    /// <summary>Timestamp granularity in ns (init_out.time_gran).</summary>
    public uint TimeGran { get; init; } = 1;
    /// <summary>FUSE_WRITEBACK_CACHE: only when asked (virtiofsd --writeback).</summary>
    public bool WritebackCache { get; init; }
    /// <summary>FUSE_POSIX_LOCKS: the filesystem implements GETLK/SETLK (a blocking SETLKW holds a worker).</summary>
    public bool PosixLocks { get; init; }
    /// <summary>FUSE_FLOCK_LOCKS: BSD flock through SETLK with FUSE_LK_FLOCK.</summary>
    public bool FlockLocks { get; init; }
    /// <summary>FUSE_SUBMOUNTS: the filesystem marks mount points with FUSE_ATTR_SUBMOUNT.</summary>
    public bool AnnounceSubmounts { get; init; }
    /// <summary>FUSE_HANDLE_KILLPRIV_V2: the filesystem clears suid/sgid on write/truncate/chown itself.</summary>
    public bool HandleKillPrivV2 { get; init; }
    /// <summary>
    /// FUSE_POSIX_ACL with the FUSE_DONT_MASK and FUSE_SETXATTR_EXT it depends on (virtiofsd --posix-acl): a kernel
    /// that does not offer all three fails INIT with EPROTO, as virtiofsd does, rather than run without ACLs.
    /// </summary>
    public bool PosixAcl { get; init; }
    /// <summary>FUSE_SECURITY_CTX (virtiofsd --security-label): a kernel that does not offer it fails INIT with EPROTO.</summary>
    public bool SecurityLabel { get; init; }
    /// <summary>FUSE_SETXATTR_EXT: fuse_setxattr_in grows to 16 bytes carrying setxattr_flags.</summary>
    public bool SetxattrExt { get; init; }
    /// <summary>FUSE_DO_READDIRPLUS (+ READDIRPLUS_AUTO).</summary>
    public bool ReadDirPlus { get; init; } = true;
    /// <summary>FUSE_EXPORT_SUPPORT: lookups of "." and ".." (NFS export of the mount).</summary>
    public bool ExportSupport { get; init; }
    /// <summary>FUSE_DIRECT_IO_ALLOW_MMAP (virtiofsd --allow-mmap): the guest may mmap MAP_SHARED a file opened with
    /// FOPEN_DIRECT_IO (cache=never); without it the kernel refuses such mmaps with ENODEV.</summary>
    public bool DirectIoAllowMmap { get; init; }
    /// <summary>Where every request is counted (nydusd's fs metrics and in-flight list); null counts nothing.</summary>
    public FsIoStats? Stats { get; init; }
}
