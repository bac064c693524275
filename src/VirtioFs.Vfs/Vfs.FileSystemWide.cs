using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

// Filesystem-wide requests and extended attributes through the Vfs.
public sealed partial class Vfs
{
    private const uint W_OK = 2;

    // ---- filesystem-wide and xattrs -----------------------------------------------------------------------------

    private ref struct FsArgs
    {
        public FuseContext Ctx;
        public uint Mask;
        public FuseKstatfs Stat;
    }

    public int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        var a = new FsArgs { Ctx = ctx };
        int err = Route(FuseOpcode.StatFs, nodeId, ref a,
            static (vfs, id, ref a) =>
            {
                if (!vfs._pseudo.TryGet(id, out _)) return ESTALE;
                a.Stat.bsize = 4096;
                a.Stat.frsize = 4096;
                a.Stat.namelen = 255;
                return 0;
            },
            static (vfs, ref c, ref a) => c.Fs.StatFs(a.Ctx, c.Node, out a.Stat));
        stat = a.Stat;
        return err;
    }

    public int Access(in FuseContext ctx, ulong nodeId, uint mask)
    {
        var a = new FsArgs { Ctx = ctx, Mask = mask };
        return Route(FuseOpcode.Access, nodeId, ref a,
            static (vfs, id, ref a) => vfs.IfPseudoExists(id, (a.Mask & W_OK) != 0 ? Errno.EROFS : 0),
            static (vfs, ref c, ref a) => c.Fs.Access(a.Ctx, c.Node, a.Mask));
    }

    public int SyncFs(in FuseContext ctx, ulong nodeId)
    {
        var a = new FsArgs { Ctx = ctx };
        return Route(FuseOpcode.SyncFs, nodeId, ref a,
            static (vfs, id, ref a) => vfs.SyncAllMounts(a.Ctx),
            static (vfs, ref c, ref a) => c.Fs.SyncFs(a.Ctx, c.Node));
    }

    /// <summary>syncfs(2) on the session: every mounted filesystem syncs; the first error wins, ENOSYS counts as nothing to do.</summary>
    private int SyncAllMounts(in FuseContext ctx)
    {
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
        return result;
    }

    public int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags)
    {
        var a = new XattrArgs { Ctx = ctx, Name = name, NewValue = value, Flags = flags, SetxattrFlags = setxattrFlags };
        return Route(FuseOpcode.SetXattr, nodeId, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) => c.Fs.SetXattr(a.Ctx, c.Node, a.Name, a.NewValue, a.Flags, a.SetxattrFlags));
    }

    private ref struct XattrArgs
    {
        public FuseContext Ctx;
        public ReadOnlySpan<byte> Name, NewValue;
        public uint Flags, SetxattrFlags;
        public Span<byte> Buffer;
        public int Length;
    }

    public int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        var a = new XattrArgs { Ctx = ctx, Name = name, Buffer = value };
        int err = Route(FuseOpcode.GetXattr, nodeId, ref a,
            // ENODATA, not ENOSYS: the kernel remembers ENOSYS for the whole session, which would hide every mount's xattrs.
            static (vfs, id, ref a) => vfs.IfPseudoExists(id, Errno.ENODATA),
            static (vfs, ref c, ref a) => c.Fs.GetXattr(a.Ctx, c.Node, a.Name, a.Buffer, out a.Length));
        length = a.Length;
        return err;
    }

    public int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        var a = new XattrArgs { Ctx = ctx, Buffer = list };
        int err = Route(FuseOpcode.ListXattr, nodeId, ref a,
            static (vfs, id, ref a) => vfs.IfPseudoExists(id, 0),
            static (vfs, ref c, ref a) => c.Fs.ListXattr(a.Ctx, c.Node, a.Buffer, out a.Length));
        length = a.Length;
        return err;
    }

    public int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name)
    {
        var a = new XattrArgs { Ctx = ctx, Name = name };
        return Route(FuseOpcode.RemoveXattr, nodeId, ref a,
            static (vfs, id, ref a) => vfs.PseudoMutation(id),
            static (vfs, ref c, ref a) => c.Fs.RemoveXattr(a.Ctx, c.Node, a.Name));
    }
}
