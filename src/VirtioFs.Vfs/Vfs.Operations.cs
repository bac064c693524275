using System.Text;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

// The IFileSystem side: every request is routed by the slot in its node id, to the pseudo filesystem (slot 0) or to a
// pinned mount; ids and handles coming back are namespaced on the way out.
public sealed partial class Vfs
{
    private const uint W_OK = 2;
    private const uint DT_DIR = 4;

    /// <summary>One request: metrics and, once entered, the pin on its mount. Always Dispose in a finally.</summary>
    private struct Call
    {
        private readonly VfsMetrics _metrics;
        private readonly FuseOpcode _op;
        private readonly long _start;
        public MountEntry? Mount;
        /// <summary>Bytes a READ returned, for the mount's statistics.</summary>
        public int Bytes;
        private int _result;

        public Call(Vfs vfs, FuseOpcode op)
        {
            _metrics = vfs.Metrics;
            _op = op;
            _result = Errno.EIO; // what an exception escaping the filesystem becomes in FuseServer
            _start = _metrics.Start(op);
            Mount = null;
            Bytes = 0;
        }

        public int Return(int err) => _result = err;

        public readonly void Dispose()
        {
            if (Mount is not null)
            {
                Mount.Stats.Record(_op, System.Diagnostics.Stopwatch.GetElapsedTime(_start), _result, Bytes);
                Exit(Mount);
            }
            _metrics.Stop(_op, _start, _result);
        }
    }

    /// <summary>Pins the mount of <paramref name="slot"/> into the call; false (ESTALE) when it is gone.</summary>
    private bool Enter(ref Call c, ushort slot)
    {
        if (!TryEnter(slot, out MountEntry m)) return false;
        c.Mount = m;
        return true;
    }

    private int PseudoMutation(ulong nodeId) => _pseudo.TryGet(nodeId, out _) ? Errno.EROFS : ESTALE;

    // ---- session ------------------------------------------------------------------------------------------------

    public int Init(FuseInitFlags negotiated)
    {
        lock (_mountLock)
        {
            _negotiated = negotiated;
            _initialized = true;
            foreach (MountEntry? m in _table)
            {
                if (m is null || m.Detached || m.Initialized) continue;
                int err = m.Fs.Init(negotiated);
                if (err != 0)
                {
                    // One broken filesystem must not take the whole session down: its requests go through anyway.
                    VfsLog.InitFailed(_logger, m.Path, err);
                }
                m.Initialized = true;
            }
        }
        return 0;
    }

    public void Destroy()
    {
        lock (_mountLock)
        {
            _initialized = false;
            for (int i = 0; i < _table.Length; i++)
            {
                MountEntry? m = _table[i];
                if (m is null) continue;
                // The kernel forgets everything at DESTROY: nothing it held can come back, so drained slots are free.
                Volatile.Write(ref m.KernelRefs, 0);
                if (m.Detached)
                {
                    Volatile.Write(ref _table[i], null);
                    continue;
                }
                if (m.Initialized)
                {
                    m.Fs.Destroy();
                    m.Initialized = false;
                }
            }
        }
    }

    // ---- names --------------------------------------------------------------------------------------------------

    public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        var c = new Call(this, FuseOpcode.Lookup);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoLookup(ctx, parent, name, out entry));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            MountEntry m = c.Mount!;
            ulong inner = InnerOf(parent);
            if (inner == FuseConstants.RootId && name.SequenceEqual(".."u8))
            {
                // ".." of a mount root leaves the mounted filesystem (only asked for by NFS-style reconnects).
                PseudoNode? up = m.Node.Parent;
                if (up is null) return c.Return(ESTALE);
                entry = _pseudo.Entry(up);
                return c.Return(0);
            }
            int err = m.Fs.Lookup(ctx, inner, name, out entry);
            return c.Return(err != 0 ? err : Export(ctx, m, ref entry));
        }
        finally
        {
            c.Dispose();
        }
    }

    private int PseudoLookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        switch (_pseudo.Lookup(parent, name, out PseudoNode? node, out MountEntry? mount))
        {
            case PseudoTree.LookupKind.Directory:
                entry = _pseudo.Entry(node!);
                return 0;
            case PseudoTree.LookupKind.MountRoot:
                return MountRootEntry(ctx, mount!, out entry);
            case PseudoTree.LookupKind.Stale:
                return ESTALE;
            default:
                return Errno.ENOENT;
        }
    }

    /// <summary>The entry for a mountpoint's name: the mounted filesystem's root, counted as one lookup.</summary>
    private int MountRootEntry(in FuseContext ctx, MountEntry mount, out FuseEntry entry)
    {
        entry = default;
        if (!TryEnter(mount.Slot, out MountEntry m)) return Errno.ENOENT;
        try
        {
            int err = m.Fs.GetAttr(ctx, FuseConstants.RootId, null, out FuseAttr attr, out TimeSpan attrTimeout);
            if (err != 0) return err;
            entry = new FuseEntry
            {
                NodeId = Encode(m.Slot, FuseConstants.RootId),
                Attr = attr,
                EntryTimeout = _options.PseudoEntryTimeout,
                AttrTimeout = attrTimeout,
            };
            Interlocked.Increment(ref m.KernelRefs);
            return 0;
        }
        finally
        {
            Exit(m);
        }
    }

    public void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup)
    {
        long t = Metrics.Start(FuseOpcode.Forget);
        try
        {
            ForgetOne(ctx, nodeId, nlookup, forward: true);
        }
        finally
        {
            Metrics.Stop(FuseOpcode.Forget, t, 0);
        }
    }

    /// <summary>Accounts one forget; forwards it when <paramref name="forward"/> and the mount is live. Returns the mount.</summary>
    private MountEntry? ForgetOne(in FuseContext ctx, ulong nodeId, ulong nlookup, bool forward)
    {
        ushort slot = SlotOf(nodeId);
        if (slot == 0) return null; // pseudo directories live as long as their mounts, not as long as the kernel's refs
        MountEntry? e = EntryOf(slot);
        if (e is null) return null;
        Interlocked.Add(ref e.KernelRefs, -(long)Math.Min(nlookup, long.MaxValue));
        ulong inner = InnerOf(nodeId);
        // A mount root was counted here, not in the filesystem: the filesystem never sees its root forgotten.
        if (!forward || inner == FuseConstants.RootId || !TryEnter(slot, out MountEntry m)) return null;
        try
        {
            m.Fs.Forget(ctx, inner, nlookup);
        }
        finally
        {
            Exit(m);
        }
        return m;
    }

    public void BatchForget(in FuseContext ctx, ReadOnlySpan<FuseForgetOne> forgets)
    {
        long t = Metrics.Start(FuseOpcode.BatchForget);
        try
        {
            // Forward in runs of the same mount so each filesystem still gets batches.
            Span<FuseForgetOne> run = stackalloc FuseForgetOne[64];
            int n = 0;
            ushort runSlot = 0;
            foreach (ref readonly FuseForgetOne f in forgets)
            {
                ushort slot = SlotOf(f.nodeid);
                if (n > 0 && (slot != runSlot || n == run.Length))
                {
                    FlushForgets(ctx, runSlot, run[..n]);
                    n = 0;
                }
                ForgetOne(ctx, f.nodeid, f.nlookup, forward: false);
                ulong inner = InnerOf(f.nodeid);
                if (slot == 0 || inner == FuseConstants.RootId) continue;
                runSlot = slot;
                run[n++] = new FuseForgetOne { nodeid = inner, nlookup = f.nlookup };
            }
            if (n > 0) FlushForgets(ctx, runSlot, run[..n]);
        }
        finally
        {
            Metrics.Stop(FuseOpcode.BatchForget, t, 0);
        }
    }

    private void FlushForgets(in FuseContext ctx, ushort slot, ReadOnlySpan<FuseForgetOne> run)
    {
        if (!TryEnter(slot, out MountEntry m)) return;
        try
        {
            m.Fs.BatchForget(ctx, run);
        }
        finally
        {
            Exit(m);
        }
    }

    // ---- attributes ---------------------------------------------------------------------------------------------

    public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = default;
        var c = new Call(this, FuseOpcode.GetAttr);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0)
            {
                if (!_pseudo.TryGet(nodeId, out PseudoNode? n)) return c.Return(ESTALE);
                attr = _pseudo.Attr(n);
                timeout = _options.PseudoAttrTimeout;
                return c.Return(0);
            }
            ulong? fh = null;
            if (handle is ulong h)
            {
                if (!TryInnerHandle(slot, h, out ulong ih)) return c.Return(Errno.EBADF);
                fh = ih;
            }
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.GetAttr(ctx, InnerOf(nodeId), fh, out attr, out timeout));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int SetAttr(in FuseContext ctx, ulong nodeId, in FuseSetattrIn changes, out FuseAttr attr, out TimeSpan timeout)
    {
        attr = default;
        timeout = default;
        var c = new Call(this, FuseOpcode.SetAttr);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(PseudoMutation(nodeId));
            FuseSetattrIn inner = changes;
            if ((changes.valid & FuseConstants.FATTR_FH) != 0)
            {
                if (!TryInnerHandle(slot, changes.fh, out ulong ih)) return c.Return(Errno.EBADF);
                inner.fh = ih;
            }
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.SetAttr(ctx, InnerOf(nodeId), inner, out attr, out timeout));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int ReadLink(in FuseContext ctx, ulong nodeId, Span<byte> buffer, out int length)
    {
        length = 0;
        var c = new Call(this, FuseOpcode.ReadLink);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(_pseudo.TryGet(nodeId, out _) ? Errno.EINVAL : ESTALE);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.ReadLink(ctx, InnerOf(nodeId), buffer, out length));
        }
        finally
        {
            c.Dispose();
        }
    }

    // ---- entry-creating mutations -------------------------------------------------------------------------------

    public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        entry = default;
        var c = new Call(this, FuseOpcode.Symlink);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoMutation(parent));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.Symlink(ctx, target, InnerOf(parent), name, out entry);
            return c.Return(err != 0 ? err : Export(ctx, c.Mount, ref entry));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int MkNod(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntry entry)
    {
        entry = default;
        var c = new Call(this, FuseOpcode.MkNod);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoMutation(parent));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.MkNod(ctx, InnerOf(parent), name, mode, rdev, umask, out entry);
            return c.Return(err != 0 ? err : Export(ctx, c.Mount, ref entry));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int MkDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntry entry)
    {
        entry = default;
        var c = new Call(this, FuseOpcode.MkDir);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoMutation(parent));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.MkDir(ctx, InnerOf(parent), name, mode, umask, out entry);
            return c.Return(err != 0 ? err : Export(ctx, c.Mount, ref entry));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Link(in FuseContext ctx, ulong nodeId, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntry entry)
    {
        entry = default;
        var c = new Call(this, FuseOpcode.Link);
        try
        {
            ushort slot = SlotOf(newParent);
            if (slot == 0) return c.Return(PseudoMutation(newParent));
            if (SlotOf(nodeId) != slot) return c.Return(Errno.EXDEV);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.Link(ctx, InnerOf(nodeId), InnerOf(newParent), newName, out entry);
            return c.Return(err != 0 ? err : Export(ctx, c.Mount, ref entry));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Create(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, uint mode, uint flags, uint umask, uint fuseOpenFlags,
        out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        var c = new Call(this, FuseOpcode.Create);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoMutation(parent));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.Create(ctx, InnerOf(parent), name, mode, flags, umask, fuseOpenFlags, out entry, out result);
            return c.Return(err != 0 ? err : ExportCreated(ctx, c.Mount, ref entry, ref result));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int TmpFile(in FuseContext ctx, ulong parent, uint mode, uint flags, uint umask, uint fuseOpenFlags, out FuseEntry entry, out FuseOpenResult result)
    {
        entry = default;
        result = default;
        var c = new Call(this, FuseOpcode.TmpFile);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoMutation(parent));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.TmpFile(ctx, InnerOf(parent), mode, flags, umask, fuseOpenFlags, out entry, out result);
            return c.Return(err != 0 ? err : ExportCreated(ctx, c.Mount, ref entry, ref result));
        }
        finally
        {
            c.Dispose();
        }
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

    public int Unlink(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => RemoveName(ctx, FuseOpcode.Unlink, parent, name);
    public int RmDir(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name) => RemoveName(ctx, FuseOpcode.RmDir, parent, name);

    private int RemoveName(in FuseContext ctx, FuseOpcode op, ulong parent, ReadOnlySpan<byte> name)
    {
        var c = new Call(this, op);
        try
        {
            ushort slot = SlotOf(parent);
            if (slot == 0) return c.Return(PseudoMutation(parent));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            ulong inner = InnerOf(parent);
            return c.Return(op == FuseOpcode.Unlink ? c.Mount!.Fs.Unlink(ctx, inner, name) : c.Mount!.Fs.RmDir(ctx, inner, name));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
    {
        var c = new Call(this, flags == 0 ? FuseOpcode.Rename : FuseOpcode.Rename2);
        try
        {
            ushort slot = SlotOf(oldParent);
            if (slot == 0) return c.Return(PseudoMutation(oldParent));
            if (SlotOf(newParent) != slot) return c.Return(Errno.EXDEV);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.Rename(ctx, InnerOf(oldParent), oldName, InnerOf(newParent), newName, flags));
        }
        finally
        {
            c.Dispose();
        }
    }

    // ---- files --------------------------------------------------------------------------------------------------

    public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
    {
        result = default;
        var c = new Call(this, FuseOpcode.Open);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(_pseudo.TryGet(nodeId, out _) ? Errno.EISDIR : ESTALE);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            ulong inner = InnerOf(nodeId);
            int err = c.Mount!.Fs.Open(ctx, inner, flags, fuseOpenFlags, out result);
            return c.Return(err != 0 ? err : ExportHandle(ctx, c.Mount, inner, ref result, dir: false));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        bytesRead = 0;
        var c = new Call(this, FuseOpcode.Read);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0 || !TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.Read(ctx, InnerOf(nodeId), ih, offset, destination, flags, out bytesRead);
            if (err == 0) Metrics.AddRead(c.Bytes = bytesRead);
            return c.Return(err);
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
    {
        bytesWritten = 0;
        var c = new Call(this, FuseOpcode.Write);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0 || !TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            int err = c.Mount!.Fs.Write(ctx, InnerOf(nodeId), ih, offset, source, writeFlags, flags, out bytesWritten);
            if (err == 0) Metrics.AddWritten(bytesWritten);
            return c.Return(err);
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Flush(in FuseContext ctx, ulong nodeId, ulong handle, ulong lockOwner)
    {
        var c = new Call(this, FuseOpcode.Flush);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(0);
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(0); // nothing left to flush into
            return c.Return(c.Mount!.Fs.Flush(ctx, InnerOf(nodeId), ih, lockOwner));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Release(in FuseContext ctx, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner) =>
        ReleaseAny(ctx, FuseOpcode.Release, nodeId, handle, flags, releaseFlags, lockOwner);

    public int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags) =>
        ReleaseAny(ctx, FuseOpcode.ReleaseDir, nodeId, handle, flags, 0, 0);

    private int ReleaseAny(in FuseContext ctx, FuseOpcode op, ulong nodeId, ulong handle, uint flags, uint releaseFlags, ulong lockOwner)
    {
        var c = new Call(this, op);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(0); // pseudo handles hold nothing
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            MountEntry? e = EntryOf(slot);
            if (e is not null) Interlocked.Decrement(ref e.KernelRefs);
            // After an unmount the filesystem was Destroyed, which dropped this handle already.
            if (!Enter(ref c, slot)) return c.Return(0);
            ulong inner = InnerOf(nodeId);
            return c.Return(op == FuseOpcode.Release
                ? c.Mount!.Fs.Release(ctx, inner, ih, flags, releaseFlags, lockOwner)
                : c.Mount!.Fs.ReleaseDir(ctx, inner, ih, flags));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Fsync(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => SyncAny(ctx, FuseOpcode.Fsync, nodeId, handle, dataSync);
    public int FsyncDir(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => SyncAny(ctx, FuseOpcode.FsyncDir, nodeId, handle, dataSync);

    private int SyncAny(in FuseContext ctx, FuseOpcode op, ulong nodeId, ulong handle, bool dataSync)
    {
        var c = new Call(this, op);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(0);
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            ulong inner = InnerOf(nodeId);
            return c.Return(op == FuseOpcode.Fsync ? c.Mount!.Fs.Fsync(ctx, inner, ih, dataSync) : c.Mount!.Fs.FsyncDir(ctx, inner, ih, dataSync));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Fallocate(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ulong length, uint mode)
    {
        var c = new Call(this, FuseOpcode.Fallocate);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0 || !TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.Fallocate(ctx, InnerOf(nodeId), ih, offset, length, mode));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Lseek(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, uint whence, out ulong result)
    {
        result = 0;
        var c = new Call(this, FuseOpcode.Lseek);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(Errno.ENOSYS); // directories: the kernel falls back to its generic llseek
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.Lseek(ctx, InnerOf(nodeId), ih, offset, whence, out result));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int CopyFileRange(in FuseContext ctx, ulong nodeIdIn, ulong handleIn, ulong offsetIn, ulong nodeIdOut, ulong handleOut,
        ulong offsetOut, ulong length, ulong flags, out ulong copied)
    {
        copied = 0;
        var c = new Call(this, FuseOpcode.CopyFileRange);
        try
        {
            ushort slot = SlotOf(nodeIdIn);
            if (slot == 0 || !TryInnerHandle(slot, handleIn, out ulong hin)) return c.Return(Errno.EBADF);
            // Across filesystems the kernel falls back to a plain read/write copy on EXDEV.
            if (SlotOf(nodeIdOut) != slot) return c.Return(Errno.EXDEV);
            if (!TryInnerHandle(slot, handleOut, out ulong hout)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.CopyFileRange(ctx, InnerOf(nodeIdIn), hin, offsetIn, InnerOf(nodeIdOut), hout, offsetOut,
                length, flags, out copied));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int GetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, out FuseFileLock result)
    {
        result = default;
        var c = new Call(this, FuseOpcode.GetLk);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(Errno.ENOSYS);
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.GetLk(ctx, InnerOf(nodeId), ih, owner, lk, lkFlags, out result));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int SetLk(in FuseContext ctx, ulong nodeId, ulong handle, ulong owner, in FuseFileLock lk, uint lkFlags, bool sleep)
    {
        var c = new Call(this, sleep ? FuseOpcode.SetLkW : FuseOpcode.SetLk);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(Errno.ENOSYS);
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.SetLk(ctx, InnerOf(nodeId), ih, owner, lk, lkFlags, sleep));
        }
        finally
        {
            c.Dispose();
        }
    }

    // ---- directories --------------------------------------------------------------------------------------------

    public int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result)
    {
        result = default;
        var c = new Call(this, FuseOpcode.OpenDir);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(_pseudo.TryGet(nodeId, out _) ? 0 : ESTALE); // stateless: handle 0 of slot 0
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            ulong inner = InnerOf(nodeId);
            int err = c.Mount!.Fs.OpenDir(ctx, inner, flags, out result);
            return c.Return(err != 0 ? err : ExportHandle(ctx, c.Mount, inner, ref result, dir: true));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        var c = new Call(this, writer.IsPlus ? FuseOpcode.ReadDirPlus : FuseOpcode.ReadDir);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(PseudoReadDir(ctx, nodeId, offset, writer));
            if (!TryInnerHandle(slot, handle, out ulong ih)) return c.Return(Errno.EBADF);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            ulong inner = InnerOf(nodeId);
            // Plain dirents carry no node id: the filesystem may write them straight into the reply.
            return c.Return(writer.IsPlus
                ? RelayReadDirPlus(ctx, c.Mount!, inner, ih, offset, writer)
                : c.Mount!.Fs.ReadDir(ctx, inner, ih, offset, writer));
        }
        finally
        {
            c.Dispose();
        }
    }

    private int RelayReadDirPlus(in FuseContext ctx, MountEntry m, ulong inner, ulong handle, ulong offset, DirectoryWriter writer)
    {
        ReadDirPlusRelay.Scratch s = _relay.Rent();
        try
        {
            ulong next = offset;
            bool any = false;
            // Each round emits at least one record or ends; the cap only stops a filesystem whose cookies never advance.
            for (int round = 0; round < 1024; round++)
            {
                int err = s.Fill(ctx, m.Fs, inner, handle, next, out ReadOnlySpan<byte> records);
                if (err != 0) return any ? 0 : err;
                if (records.IsEmpty) return 0;
                bool full = false;
                while (!records.IsEmpty)
                {
                    if (!ReadDirPlusRelay.TryParse(records, out FuseDirentplus d, out ReadOnlySpan<byte> name, out int size))
                    {
                        VfsLog.BadRelayRecord(_logger, m.Path);
                        return any ? 0 : Errno.EIO;
                    }
                    records = records[size..];
                    ulong innerId = d.entry_out.nodeid;
                    if (full)
                    {
                        // Looked up by the filesystem but never delivered: give the lookup back.
                        if (innerId != 0) m.Fs.Forget(ctx, innerId, 1);
                        continue;
                    }
                    FuseEntry e = ReadDirPlusRelay.ToEntry(d.entry_out);
                    if (Export(ctx, m, ref e) != 0)
                    {
                        next = d.dirent.off;
                        continue; // refused (and forgotten) by Export
                    }
                    if (!writer.TryAddPlus(e, d.dirent.off, d.dirent.type, name))
                    {
                        full = true;
                        if (innerId != 0)
                        {
                            Interlocked.Decrement(ref m.KernelRefs);
                            m.Fs.Forget(ctx, innerId, 1);
                        }
                        continue;
                    }
                    any = true;
                    next = d.dirent.off;
                }
                if (full) return 0;
            }
            return 0;
        }
        finally
        {
            _relay.Return(s);
        }
    }

    private int PseudoReadDir(in FuseContext ctx, ulong nodeId, ulong offset, DirectoryWriter writer)
    {
        if (!_pseudo.TryGet(nodeId, out PseudoNode? dir)) return ESTALE;
        if (offset < 1 && !writer.TryAdd(dir.Id, 1, DT_DIR, "."u8)) return 0;
        if (offset < 2 && !writer.TryAdd(dir.Parent?.Id ?? dir.Id, 2, DT_DIR, ".."u8)) return 0;
        Span<byte> name = stackalloc byte[256];
        var batch = new (ulong Cookie, PseudoNode Node)[16];
        ulong cursor = Math.Max(offset, 2);
        while (true)
        {
            int n = _pseudo.Children(dir, cursor, batch);
            if (n == 0) return 0;
            for (int i = 0; i < n; i++)
            {
                (ulong cookie, PseudoNode child) = batch[i];
                int len = Encoding.UTF8.GetBytes(child.Name, name);
                if (!writer.Fits(len)) return 0;
                if (!EmitPseudoChild(ctx, writer, child, cookie, name[..len])) return 0;
                cursor = cookie;
            }
        }
    }

    /// <summary>False when the reply is full.</summary>
    private bool EmitPseudoChild(in FuseContext ctx, DirectoryWriter writer, PseudoNode child, ulong cookie, ReadOnlySpan<byte> name)
    {
        if (!writer.IsPlus) return writer.TryAdd(child.Id, cookie, DT_DIR, name);
        MountEntry? mount = child.Mount;
        if (mount is null) return writer.TryAddPlus(_pseudo.Entry(child), cookie, DT_DIR, name);
        if (MountRootEntry(ctx, mount, out FuseEntry e) != 0) return true; // being unmounted: skip it
        if (writer.TryAddPlus(e, cookie, DT_DIR, name)) return true;
        Interlocked.Decrement(ref mount.KernelRefs);
        return false;
    }

    // ---- filesystem-wide and xattrs -----------------------------------------------------------------------------

    public int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        stat = default;
        var c = new Call(this, FuseOpcode.StatFs);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0)
            {
                if (!_pseudo.TryGet(nodeId, out _)) return c.Return(ESTALE);
                stat.bsize = 4096;
                stat.frsize = 4096;
                stat.namelen = 255;
                return c.Return(0);
            }
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.StatFs(ctx, InnerOf(nodeId), out stat));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int Access(in FuseContext ctx, ulong nodeId, uint mask)
    {
        var c = new Call(this, FuseOpcode.Access);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0)
            {
                if (!_pseudo.TryGet(nodeId, out _)) return c.Return(ESTALE);
                return c.Return((mask & W_OK) != 0 ? Errno.EROFS : 0);
            }
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.Access(ctx, InnerOf(nodeId), mask));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int SyncFs(in FuseContext ctx, ulong nodeId)
    {
        var c = new Call(this, FuseOpcode.SyncFs);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot != 0)
            {
                if (!Enter(ref c, slot)) return c.Return(ESTALE);
                return c.Return(c.Mount!.Fs.SyncFs(ctx, InnerOf(nodeId)));
            }
            // syncfs(2) on the session: every mounted filesystem syncs; the first error wins, ENOSYS counts as nothing to do.
            int result = 0;
            MountEntry?[] table = Volatile.Read(ref _table);
            for (ushort s = 1; s < table.Length; s++)
            {
                if (!TryEnter(s, out MountEntry m)) continue;
                try
                {
                    int err = m.Fs.SyncFs(ctx, FuseConstants.RootId);
                    if (err != 0 && err != Errno.ENOSYS && result == 0) result = err;
                }
                finally
                {
                    Exit(m);
                }
            }
            return c.Return(result);
        }
        finally
        {
            c.Dispose();
        }
    }

    public int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags)
    {
        var c = new Call(this, FuseOpcode.SetXattr);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(PseudoMutation(nodeId));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.SetXattr(ctx, InnerOf(nodeId), name, value, flags, setxattrFlags));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        var c = new Call(this, FuseOpcode.GetXattr);
        try
        {
            ushort slot = SlotOf(nodeId);
            // ENODATA, not ENOSYS: the kernel remembers ENOSYS for the whole session, which would hide every mount's xattrs.
            if (slot == 0) return c.Return(_pseudo.TryGet(nodeId, out _) ? Errno.ENODATA : ESTALE);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.GetXattr(ctx, InnerOf(nodeId), name, value, out length));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        length = 0;
        var c = new Call(this, FuseOpcode.ListXattr);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(_pseudo.TryGet(nodeId, out _) ? 0 : ESTALE);
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.ListXattr(ctx, InnerOf(nodeId), list, out length));
        }
        finally
        {
            c.Dispose();
        }
    }

    public int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name)
    {
        var c = new Call(this, FuseOpcode.RemoveXattr);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(PseudoMutation(nodeId));
            if (!Enter(ref c, slot)) return c.Return(ESTALE);
            return c.Return(c.Mount!.Fs.RemoveXattr(ctx, InnerOf(nodeId), name));
        }
        finally
        {
            c.Dispose();
        }
    }
}
