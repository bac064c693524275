using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

// The session through the Vfs: INIT and DESTROY reach every mount, FORGETs are accounted per mount and forwarded in
// runs so each filesystem still gets batches.
public sealed partial class Vfs
{
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
}
