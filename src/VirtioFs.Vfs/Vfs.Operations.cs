using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

// The IFileSystem side: every request is routed by the slot in its node id (Vfs.Routing.cs: Route), to the pseudo
// filesystem (slot 0) or to a pinned mount; ids and handles coming back are namespaced on the way out. Each request
// carries its arguments in a small ref struct on the stack, so the handlers can be static lambdas.
public sealed partial class Vfs
{
    // ---- names --------------------------------------------------------------------------------------------------

    private ref struct LookupArgs
    {
        public FuseContext Ctx;
        public ReadOnlySpan<byte> Name;
        public FuseEntry Entry;
    }

    public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        var a = new LookupArgs { Ctx = ctx, Name = name };
        int err = Route(FuseOpcode.Lookup, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoLookup(a.Ctx, id, a.Name, out a.Entry),
            static (vfs, ref c, ref a) =>
            {
                if (c.Node == FuseConstants.RootId && a.Name.SequenceEqual(".."u8))
                {
                    // ".." of a mount root leaves the mounted filesystem (only asked for by NFS-style reconnects).
                    PseudoNode? up = c.Mount!.Node.Parent;
                    if (up is null) return ESTALE;
                    a.Entry = vfs._pseudo.Entry(up);
                    return 0;
                }
                int err = c.Fs.Lookup(a.Ctx, c.Node, a.Name, out a.Entry);
                return err != 0 ? err : vfs.Export(a.Ctx, c.Mount!, ref a.Entry);
            });
        entry = a.Entry;
        return err;
    }

    // ---- attributes ---------------------------------------------------------------------------------------------

    private ref struct AttrArgs
    {
        public FuseContext Ctx;
        public bool HasHandle;
        public FuseSetattrIn Changes;
        public FuseAttr Attr;
        public TimeSpan Timeout;
    }

    public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        var a = new AttrArgs { Ctx = ctx, HasHandle = handle.HasValue };
        int err = Route(FuseOpcode.GetAttr, nodeId, ref a,
            static (vfs, id, ref a) =>
            {
                if (!vfs._pseudo.TryGet(id, out PseudoNode? n)) return ESTALE;
                a.Attr = vfs._pseudo.Attr(n);
                a.Timeout = vfs._options.PseudoAttrTimeout;
                return 0;
            },
            static (vfs, ref c, ref a) => c.Fs.GetAttr(a.Ctx, c.Node, a.HasHandle ? c.Handle : null, out a.Attr, out a.Timeout),
            handle);
        attr = a.Attr;
        timeout = a.Timeout;
        return err;
    }

    public int SetAttr(in FuseContext ctx, ulong nodeId, in FuseSetattrIn changes, out FuseAttr attr, out TimeSpan timeout)
    {
        bool hasHandle = (changes.valid & FuseConstants.FATTR_FH) != 0;
        var a = new AttrArgs { Ctx = ctx, HasHandle = hasHandle, Changes = changes };
        int err = Route(FuseOpcode.SetAttr, nodeId, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                if (a.HasHandle) a.Changes.fh = c.Handle;
                return c.Fs.SetAttr(a.Ctx, c.Node, a.Changes, out a.Attr, out a.Timeout);
            },
            hasHandle ? changes.fh : null);
        attr = a.Attr;
        timeout = a.Timeout;
        return err;
    }

    private ref struct BufferArgs
    {
        public FuseContext Ctx;
        public Span<byte> Buffer;
        public int Length;
    }

    public int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length)
    {
        var a = new BufferArgs { Ctx = ctx, Buffer = buffer };
        int err = Route(FuseOpcode.ReadLink, nodeId, ref a,
            static (vfs, id, ref a) => vfs.IfPseudoExists(id, Errno.EINVAL),
            static (vfs, ref c, ref a) => c.Fs.ReadLink(a.Ctx, c.Node, a.Buffer, out a.Length));
        length = a.Length;
        return err;
    }

    // ---- entry-creating mutations -------------------------------------------------------------------------------

    private ref struct CreateArgs
    {
        public FuseContext Ctx;
        public ReadOnlySpan<byte> Name;
        public ReadOnlySpan<byte> SymlinkTarget;
        public ulong LinkedNode;
        public uint Mode, Rdev, Umask, Flags, FuseOpenFlags;
        public FuseEntry Entry;
        public FuseOpenResult Open;
    }

    public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        var a = new CreateArgs { Ctx = ctx, SymlinkTarget = target, Name = name };
        int err = Route(FuseOpcode.Symlink, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.Symlink(a.Ctx, a.SymlinkTarget, c.Node, a.Name, out a.Entry);
                return err != 0 ? err : vfs.Export(a.Ctx, c.Mount!, ref a.Entry);
            });
        entry = a.Entry;
        return err;
    }

    public int MkNod(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntry entry)
    {
        var a = new CreateArgs { Ctx = ctx, Name = name, Mode = mode, Rdev = rdev, Umask = umask };
        int err = Route(FuseOpcode.MkNod, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.MkNod(a.Ctx, c.Node, a.Name, a.Mode, a.Rdev, a.Umask, out a.Entry);
                return err != 0 ? err : vfs.Export(a.Ctx, c.Mount!, ref a.Entry);
            });
        entry = a.Entry;
        return err;
    }

    public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry)
    {
        var a = new CreateArgs { Ctx = ctx, Name = name, Mode = mode, Umask = umask };
        int err = Route(FuseOpcode.MkDir, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.MkDir(a.Ctx, c.Node, a.Name, a.Mode, a.Umask, out a.Entry);
                return err != 0 ? err : vfs.Export(a.Ctx, c.Mount!, ref a.Entry);
            });
        entry = a.Entry;
        return err;
    }

    public int Link(in FuseContext ctx, ulong nodeId, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntry entry)
    {
        var a = new CreateArgs { Ctx = ctx, LinkedNode = InnerOf(nodeId), Name = newName };
        int err = Route(FuseOpcode.Link, newParent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.Link(a.Ctx, a.LinkedNode, c.Node, a.Name, out a.Entry);
                return err != 0 ? err : vfs.Export(a.Ctx, c.Mount!, ref a.Entry);
            },
            sameMountAs: nodeId);
        entry = a.Entry;
        return err;
    }

    public int Create(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint flags, uint umask, uint fuseOpenFlags,
        out FuseEntry entry, out FuseOpenResult result)
    {
        var a = new CreateArgs { Ctx = ctx, Name = name, Mode = mode, Flags = flags, Umask = umask, FuseOpenFlags = fuseOpenFlags };
        int err = Route(FuseOpcode.Create, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.Create(a.Ctx, c.Node, a.Name, a.Mode, a.Flags, a.Umask, a.FuseOpenFlags, out a.Entry, out a.Open);
                return err != 0 ? err : vfs.ExportCreated(a.Ctx, c.Mount!, ref a.Entry, ref a.Open);
            });
        entry = a.Entry;
        result = a.Open;
        return err;
    }

    public int TmpFile(in FuseContext ctx, ulong parent, uint mode, uint flags, uint umask, uint fuseOpenFlags, out FuseEntry entry, out FuseOpenResult result)
    {
        var a = new CreateArgs { Ctx = ctx, Mode = mode, Flags = flags, Umask = umask, FuseOpenFlags = fuseOpenFlags };
        int err = Route(FuseOpcode.TmpFile, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.TmpFile(a.Ctx, c.Node, a.Mode, a.Flags, a.Umask, a.FuseOpenFlags, out a.Entry, out a.Open);
                return err != 0 ? err : vfs.ExportCreated(a.Ctx, c.Mount!, ref a.Entry, ref a.Open);
            });
        entry = a.Entry;
        result = a.Open;
        return err;
    }

    /// <summary>Namespaces both halves of a CREATE/TMPFILE reply, undoing the other half if one cannot be.</summary>
    private int ExportCreated(in FuseContext ctx, MountEntry m, ref FuseEntry entry, ref FuseOpenResult result)
    {
        ulong innerNode = entry.NodeId;
        if (entry.NodeId > InnerMask || result.Handle > InnerMask)
        {
            m.Fs.Release(ctx, innerNode, result.Handle, 0, 0, 0);
            if (innerNode != 0) m.Fs.Forget(ctx, innerNode, 1);
            VfsLog.IdTooWide(_logger, m.Path, Math.Max(innerNode, result.Handle));
            return Errno.EIO;
        }
        int err = Export(ctx, m, ref entry);
        return err != 0 ? err : ExportHandle(ctx, m, innerNode, ref result, dir: false);
    }

    // ---- other namespace mutations ------------------------------------------------------------------------------

    private ref struct RenameArgs
    {
        public FuseContext Ctx;
        public ReadOnlySpan<byte> Name;
        public ulong NewParent;
        public ReadOnlySpan<byte> NewName;
        public uint Flags;
    }

    public int Unlink(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name)
    {
        var a = new RenameArgs { Ctx = ctx, Name = name };
        return Route(FuseOpcode.Unlink, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) => c.Fs.Unlink(a.Ctx, c.Node, a.Name));
    }

    public int RmDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name)
    {
        var a = new RenameArgs { Ctx = ctx, Name = name };
        return Route(FuseOpcode.RmDir, parent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) => c.Fs.RmDir(a.Ctx, c.Node, a.Name));
    }

    public int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
    {
        var a = new RenameArgs { Ctx = ctx, Name = oldName, NewParent = InnerOf(newParent), NewName = newName, Flags = flags };
        return Route(flags == 0 ? FuseOpcode.Rename : FuseOpcode.Rename2, oldParent, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) => c.Fs.Rename(a.Ctx, c.Node, a.Name, a.NewParent, a.NewName, a.Flags),
            sameMountAs: newParent);
    }

    // ---- files --------------------------------------------------------------------------------------------------

    private ref struct OpenArgs
    {
        public FuseContext Ctx;
        public uint Flags, FuseOpenFlags;
        public FuseOpenResult Result;
    }

    public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
    {
        var a = new OpenArgs { Ctx = ctx, Flags = flags, FuseOpenFlags = fuseOpenFlags };
        int err = Route(FuseOpcode.Open, nodeId, ref a,
            static (vfs, id, ref a) => vfs.IfPseudoExists(id, Errno.EISDIR),
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.Open(a.Ctx, c.Node, a.Flags, a.FuseOpenFlags, out a.Result);
                return err != 0 ? err : vfs.ExportHandle(a.Ctx, c.Mount!, c.Node, ref a.Result, dir: false);
            });
        result = a.Result;
        return err;
    }

    private ref struct IoArgs
    {
        public FuseContext Ctx;
        public ulong Offset;
        public ReadOnlySpan<IoSegment> Segments;
        public uint WriteFlags, Flags;
        public int Bytes;
    }

    public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        var a = new IoArgs { Ctx = ctx, Offset = offset, Segments = destination, Flags = flags };
        int err = Route(FuseOpcode.Read, nodeId, ref a,
            static (vfs, id, ref a) => Errno.EBADF,
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.Read(a.Ctx, c.Node, c.Handle, a.Offset, a.Segments, a.Flags, out a.Bytes);
                if (err == 0) vfs.Metrics.AddRead(c.Bytes = a.Bytes);
                return err;
            },
            handle);
        bytesRead = a.Bytes;
        return err;
    }

    public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
    {
        var a = new IoArgs { Ctx = ctx, Offset = offset, Segments = source, WriteFlags = writeFlags, Flags = flags };
        int err = Route(FuseOpcode.Write, nodeId, ref a,
            static (vfs, id, ref a) => Errno.EBADF,
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.Write(a.Ctx, c.Node, c.Handle, a.Offset, a.Segments, a.WriteFlags, a.Flags, out a.Bytes);
                if (err == 0) vfs.Metrics.AddWritten(a.Bytes);
                return err;
            },
            handle);
        bytesWritten = a.Bytes;
        return err;
    }

    private ref struct HandleArgs
    {
        public FuseContext Ctx;
        public ulong Offset, Length, Owner;
        public uint Flags, Mode;
        public bool DataSync;
        public ulong Result;
    }

    public int Flush(in FuseContext ctx, ulong nodeId, ulong handle, ulong lockOwner)
    {
        var a = new HandleArgs { Ctx = ctx, Owner = lockOwner };
        return Route(FuseOpcode.Flush, nodeId, ref a,
            static (vfs, id, ref a) => 0,
            static (vfs, ref c, ref a) => c.Fs.Flush(a.Ctx, c.Node, c.Handle, a.Owner),
            handle, whenUnmounted: 0); // nothing left to flush into
    }

    public int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner)
    {
        DropHandleRef(nodeId, handle);
        var a = new HandleArgs { Ctx = ctx, Flags = flags, Mode = releaseFlags, Owner = lockOwner };
        // After an unmount the filesystem was Destroyed, which dropped this handle already. Pseudo handles hold nothing.
        return Route(FuseOpcode.Release, nodeId, ref a,
            static (vfs, id, ref a) => 0,
            static (vfs, ref c, ref a) => c.Fs.Release(a.Ctx, c.Node, c.Handle, a.Flags, a.Mode, a.Owner),
            handle, whenUnmounted: 0);
    }

    public int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags)
    {
        DropHandleRef(nodeId, handle);
        var a = new HandleArgs { Ctx = ctx, Flags = flags };
        return Route(FuseOpcode.ReleaseDir, nodeId, ref a,
            static (vfs, id, ref a) => 0,
            static (vfs, ref c, ref a) => c.Fs.ReleaseDir(a.Ctx, c.Node, c.Handle, a.Flags),
            handle, whenUnmounted: 0);
    }

    /// <summary>A released handle no longer pins its mount's slot, whether or not the mount is still live.</summary>
    private void DropHandleRef(ulong nodeId, ulong handle)
    {
        ushort slot = SlotOf(nodeId);
        if (slot != 0 && TryInnerHandle(slot, handle, out _) && EntryOf(slot) is MountEntry e) Interlocked.Decrement(ref e.KernelRefs);
    }

    public int Fsync(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync)
    {
        var a = new HandleArgs { Ctx = ctx, DataSync = dataSync };
        return Route(FuseOpcode.Fsync, nodeId, ref a,
            static (vfs, id, ref a) => 0,
            static (vfs, ref c, ref a) => c.Fs.Fsync(a.Ctx, c.Node, c.Handle, a.DataSync),
            handle);
    }

    public int FsyncDir(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync)
    {
        var a = new HandleArgs { Ctx = ctx, DataSync = dataSync };
        return Route(FuseOpcode.FsyncDir, nodeId, ref a,
            static (vfs, id, ref a) => 0,
            static (vfs, ref c, ref a) => c.Fs.FsyncDir(a.Ctx, c.Node, c.Handle, a.DataSync),
            handle);
    }

    public int Fallocate(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ulong length, uint mode)
    {
        var a = new HandleArgs { Ctx = ctx, Offset = offset, Length = length, Mode = mode };
        return Route(FuseOpcode.Fallocate, nodeId, ref a,
            static (vfs, id, ref a) => Errno.EBADF,
            static (vfs, ref c, ref a) => c.Fs.Fallocate(a.Ctx, c.Node, c.Handle, a.Offset, a.Length, a.Mode),
            handle);
    }

    public int Lseek(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, uint whence, out ulong result)
    {
        var a = new HandleArgs { Ctx = ctx, Offset = offset, Mode = whence };
        int err = Route(FuseOpcode.Lseek, nodeId, ref a,
            static (vfs, id, ref a) => Errno.ENOSYS, // directories: the kernel falls back to its generic llseek
            static (vfs, ref c, ref a) => c.Fs.Lseek(a.Ctx, c.Node, c.Handle, a.Offset, a.Mode, out a.Result),
            handle);
        result = a.Result;
        return err;
    }

    private ref struct CopyArgs
    {
        public FuseContext Ctx;
        public ulong OffsetIn, NodeOut, HandleOut, OffsetOut, Length, Flags;
        public ulong Copied;
    }

    public int CopyFileRange(in FuseContext ctx, ulong nodeIdIn, ulong handleIn, ulong offsetIn, ulong nodeIdOut, ulong handleOut,
        ulong offsetOut, ulong length, ulong flags, out ulong copied)
    {
        var a = new CopyArgs
        {
            Ctx = ctx, OffsetIn = offsetIn, NodeOut = nodeIdOut, HandleOut = handleOut, OffsetOut = offsetOut, Length = length, Flags = flags,
        };
        // Across filesystems (EXDEV) the kernel falls back to a plain read/write copy.
        int err = Route(FuseOpcode.CopyFileRange, nodeIdIn, ref a,
            static (vfs, id, ref a) => Errno.EBADF,
            static (vfs, ref c, ref a) =>
            {
                if (!TryInnerHandle(c.Mount!.Slot, a.HandleOut, out ulong handleOut)) return Errno.EBADF;
                return c.Fs.CopyFileRange(a.Ctx, c.Node, c.Handle, a.OffsetIn, InnerOf(a.NodeOut), handleOut, a.OffsetOut, a.Length,
                    a.Flags, out a.Copied);
            },
            handleIn, sameMountAs: nodeIdOut);
        copied = a.Copied;
        return err;
    }

    private ref struct LockArgs
    {
        public FuseContext Ctx;
        public ulong Owner;
        public FuseFileLock Lock;
        public uint LockFlags;
        public bool Sleep;
        public FuseFileLock Result;
    }

    public int GetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, out FuseFileLock result)
    {
        var a = new LockArgs { Ctx = ctx, Owner = owner, Lock = lk, LockFlags = lkFlags };
        int err = Route(FuseOpcode.GetLk, nodeId, ref a,
            static (vfs, id, ref a) => Errno.ENOSYS,
            static (vfs, ref c, ref a) => c.Fs.GetLk(a.Ctx, c.Node, c.Handle, a.Owner, a.Lock, a.LockFlags, out a.Result),
            handle);
        result = a.Result;
        return err;
    }

    public int SetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, bool sleep)
    {
        var a = new LockArgs { Ctx = ctx, Owner = owner, Lock = lk, LockFlags = lkFlags, Sleep = sleep };
        return Route(sleep ? FuseOpcode.SetLkW : FuseOpcode.SetLk, nodeId, ref a,
            static (vfs, id, ref a) => Errno.ENOSYS,
            static (vfs, ref c, ref a) => c.Fs.SetLk(a.Ctx, c.Node, c.Handle, a.Owner, a.Lock, a.LockFlags, a.Sleep),
            handle);
    }
}
