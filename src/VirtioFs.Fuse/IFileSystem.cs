namespace VirtioFs.Fuse;

/// <summary>Who is asking: the caller's credentials from fuse_in_header.</summary>
public readonly struct FuseContext
{
    public FuseContext(uint uid, uint gid, uint pid, ulong unique)
    {
        Uid = uid;
        Gid = gid;
        Pid = pid;
        Unique = unique;
    }

    public uint Uid { get; }
    public uint Gid { get; }
    public uint Pid { get; }
    public ulong Unique { get; }

    /// <summary>
    /// The security context the guest sent with CREATE, MKDIR, MKNOD, SYMLINK or TMPFILE when FUSE_SECURITY_CTX was
    /// negotiated (fuse.h struct fuse_secctx); null otherwise, or when the guest's LSM has none to send.
    /// </summary>
    public FuseSecurityContext? SecurityContext { get; init; }
}

/// <summary>One security context: its xattr name (e.g. "security.selinux") and value, copied out of the request.</summary>
public sealed class FuseSecurityContext(byte[] name, byte[] value)
{
    public byte[] Name { get; } = name;
    public byte[] Value { get; } = value;
}

/// <summary>The result of a name lookup (becomes fuse_entry_out). NodeId 0 means "negative entry".</summary>
public struct FuseEntry
{
    public ulong NodeId;
    public ulong Generation;
    public FuseAttr Attr;
    public TimeSpan EntryTimeout;
    public TimeSpan AttrTimeout;
}

/// <summary>Result of OPEN/OPENDIR/CREATE/TMPFILE: the handle id and FOPEN_* flags for the kernel.</summary>
public struct FuseOpenResult
{
    public ulong Handle;
    public uint OpenFlags;
}

/// <summary>
/// The filesystem seam: inode/handle based, errno-returning (0 = success, otherwise a positive errno), names as raw bytes
/// without their NUL. Shaped like fuse-backend-rs <c>FileSystem</c> (sync_io.rs): every method defaults to ENOSYS so a
/// read-only image filesystem implements only what it serves. Methods are called concurrently from several workers.
/// Node id <see cref="FuseConstants.RootId"/> is the root; every successful entry-returning call (lookup, create, mkdir,
/// mknod, symlink, link, tmpfile, and each READDIRPLUS entry with a non-zero NodeId) counts one lookup that
/// <see cref="Forget"/> later drops.
/// </summary>
public interface IFileSystem
{
    const int ENOSYS = Errno.ENOSYS;

    /// <summary>Called once at INIT with the flags negotiated with the kernel. Returns an errno.</summary>
    int Init(FuseInitFlags negotiated) => 0;

    /// <summary>DESTROY: the session is ending.</summary>
    void Destroy() { }

    int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry) { entry = default; return ENOSYS; }

    void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup) { }

    void BatchForget(in FuseContext ctx, ReadOnlySpan<FuseForgetOne> forgets)
    {
        foreach (ref readonly FuseForgetOne f in forgets)
        {
            Forget(ctx, f.nodeid, f.nlookup);
        }
    }

    /// <summary><paramref name="handle"/> is set when the kernel passed FUSE_GETATTR_FH.</summary>
    int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = default;
        return ENOSYS;
    }

    int SetAttr(in FuseContext ctx, ulong nodeId, in FuseSetattrIn changes, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = default;
        return ENOSYS;
    }

    /// <summary>Writes the link target into <paramref name="buffer"/> (4096 bytes) and returns its length.</summary>
    int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length) { length = 0; return ENOSYS; }

    int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry) { entry = default; return ENOSYS; }
    int MkNod(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntry entry) { entry = default; return ENOSYS; }
    int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry) { entry = default; return ENOSYS; }
    int Unlink(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => ENOSYS;
    int RmDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => ENOSYS;

    /// <summary>RENAME and RENAME2; <paramref name="flags"/> are RENAME_NOREPLACE/EXCHANGE/WHITEOUT (0 for RENAME).</summary>
    int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags) => ENOSYS;

    int Link(in FuseContext ctx, ulong nodeId, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntry entry) { entry = default; return ENOSYS; }

    /// <summary><paramref name="flags"/> are the guest's open(2) flags; <paramref name="fuseOpenFlags"/> FUSE_OPEN_*.</summary>
    int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result) { result = default; return ENOSYS; }

    int Create(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint flags, uint umask, uint fuseOpenFlags,
        out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        return ENOSYS;
    }

    /// <summary>
    /// Reads up to the total length of <paramref name="destination"/> bytes at <paramref name="offset"/> straight into the
    /// reply memory (guest memory for virtio-fs): a passthrough can preadv into these segments.
    /// </summary>
    int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        bytesRead = 0;
        return ENOSYS;
    }

    /// <summary>
    /// READ on a transport that can send data from where it lies (<see cref="IReplyReferences"/>): the filesystem may
    /// hand over memory it keeps (a decoded chunk) instead of copying it into <paramref name="destination"/>. By default
    /// it copies, as <see cref="Read(in FuseContext, ulong, ulong, ulong, ReadOnlySpan{IoSegment}, uint, out int)"/>.
    /// </summary>
    int ReadOrReference(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination,
        IReplyReferences references, uint flags, out int bytesRead) => Read(ctx, nodeId, handle, offset, destination, flags, out bytesRead);

    /// <summary>Writes the bytes described by <paramref name="source"/> (request memory; pwritev-able) at offset.</summary>
    int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
    {
        bytesWritten = 0;
        return ENOSYS;
    }

    int Flush(in FuseContext ctx, ulong nodeId, ulong handle, ulong lockOwner) => ENOSYS;
    int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner) => ENOSYS;
    int Fsync(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => ENOSYS;

    int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result) { result = default; return ENOSYS; }

    /// <summary>
    /// READDIR / READDIRPLUS (see <see cref="DirectoryWriter.IsPlus"/>): emit entries after <paramref name="offset"/>
    /// until the writer refuses one; each entry carries the offset the next call resumes from.
    /// </summary>
    int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer) => ENOSYS;

    int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags) => ENOSYS;
    int FsyncDir(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => ENOSYS;

    int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat) { stat = default; return ENOSYS; }

    int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags) => ENOSYS;

    /// <summary>
    /// An empty <paramref name="value"/> asks only for the size. Otherwise the value is written and its length returned;
    /// ERANGE when it does not fit.
    /// </summary>
    int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length) { length = 0; return ENOSYS; }

    /// <summary>Same size protocol as <see cref="GetXattr"/>; the list is NUL-separated names.</summary>
    int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length) { length = 0; return ENOSYS; }

    int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name) => ENOSYS;

    int Access(in FuseContext ctx, ulong nodeId, uint mask) => ENOSYS;

    int GetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, out FuseFileLock result)
    {
        result = default;
        return ENOSYS;
    }

    /// <summary>SETLK/SETLKW (<paramref name="sleep"/>); with FUSE_LK_FLOCK in <paramref name="lkFlags"/> a BSD flock.</summary>
    int SetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, bool sleep) => ENOSYS;

    int Fallocate(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ulong length, uint mode) => ENOSYS;

    int Lseek(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, uint whence, out ulong result) { result = 0; return ENOSYS; }

    int CopyFileRange(in FuseContext ctx, ulong nodeIdIn, ulong handleIn, ulong offsetIn, ulong nodeIdOut, ulong handleOut,
        ulong offsetOut, ulong length, ulong flags, out ulong copied)
    {
        copied = 0;
        return ENOSYS;
    }

    int SyncFs(in FuseContext ctx, ulong nodeId) => ENOSYS;

    int TmpFile(in FuseContext ctx, ulong parent, uint mode, uint flags, uint umask, uint fuseOpenFlags, out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        return ENOSYS;
    }
}
