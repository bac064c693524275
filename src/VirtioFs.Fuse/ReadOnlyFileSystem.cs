namespace VirtioFs.Fuse;

/// <summary>
/// Base for read-only filesystems (RAFS images): every <see cref="IFileSystem"/> member is virtual, queries answer
/// ENOSYS until overridden, and every mutation answers EROFS, so the guest sees a read-only filesystem rather than
/// an unimplemented one.
/// </summary>
public abstract class ReadOnlyFileSystem : IFileSystem
{
    protected const int ENOSYS = Errno.ENOSYS;
    protected const int EROFS = Errno.EROFS;

    public virtual int Init(FuseInitFlags negotiated) => 0;
    public virtual void Destroy() { }
    public virtual int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry) { entry = default; return ENOSYS; }
    public virtual void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup) { }

    public virtual void BatchForget(in FuseContext ctx, ReadOnlySpan<FuseForgetOne> forgets)
    {
        foreach (ref readonly FuseForgetOne f in forgets)
        {
            Forget(ctx, f.nodeid, f.nlookup);
        }
    }

    public virtual int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = default;
        return ENOSYS;
    }

    public virtual int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length) { length = 0; return ENOSYS; }
    public virtual int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result) { result = default; return ENOSYS; }

    public virtual int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        bytesRead = 0;
        return ENOSYS;
    }

    public virtual int ReadOrReference(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination,
        IReplyReferences references, uint flags, out int bytesRead) => Read(ctx, nodeId, handle, offset, destination, flags, out bytesRead);

    public virtual int Flush(in FuseContext ctx, ulong nodeId, ulong handle, ulong lockOwner) => 0;
    public virtual int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner) => 0;
    public virtual int Fsync(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => 0;
    public virtual int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result) { result = default; return ENOSYS; }
    public virtual int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer) => ENOSYS;
    public virtual int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags) => 0;
    public virtual int FsyncDir(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => 0;
    public virtual int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat) { stat = default; return ENOSYS; }
    public virtual int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length) { length = 0; return ENOSYS; }
    public virtual int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length) { length = 0; return ENOSYS; }
    public virtual int Access(in FuseContext ctx, ulong nodeId, uint mask) => (mask & 2) != 0 ? EROFS : ENOSYS;
    public virtual int Lseek(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, uint whence, out ulong result) { result = 0; return ENOSYS; }
    public virtual int SyncFs(in FuseContext ctx, ulong nodeId) => 0;

    public virtual int GetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, out FuseFileLock result)
    {
        result = default;
        return ENOSYS;
    }

    public virtual int SetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, bool sleep) => ENOSYS;

    // ---- mutations: always EROFS --------------------------------------------------------------------------------

    public int SetAttr(in FuseContext ctx, ulong nodeId, in FuseSetattrIn changes, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = default;
        return EROFS;
    }

    public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry) { entry = default; return EROFS; }
    public int MkNod(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntry entry) { entry = default; return EROFS; }
    public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry) { entry = default; return EROFS; }
    public int Unlink(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => EROFS;
    public int RmDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => EROFS;
    public int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags) => EROFS;
    public int Link(in FuseContext ctx, ulong nodeId, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntry entry) { entry = default; return EROFS; }

    public int Create(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint flags, uint umask, uint fuseOpenFlags,
        out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        return EROFS;
    }

    public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
    {
        bytesWritten = 0;
        return EROFS;
    }

    public int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags) => EROFS;
    public int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name) => EROFS;
    public int Fallocate(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ulong length, uint mode) => EROFS;

    public int CopyFileRange(in FuseContext ctx, ulong nodeIdIn, ulong handleIn, ulong offsetIn, ulong nodeIdOut, ulong handleOut,
        ulong offsetOut, ulong length, ulong flags, out ulong copied)
    {
        copied = 0;
        return EROFS;
    }

    public int TmpFile(in FuseContext ctx, ulong parent, uint mode, uint flags, uint umask, uint fuseOpenFlags, out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        return EROFS;
    }
}
