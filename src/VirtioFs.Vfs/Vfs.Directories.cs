using System.Text;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

// Directories through the Vfs: opening and reading them, with READDIRPLUS entries namespaced on the way out and the
// pseudo tree listing its children and mountpoints.
public sealed partial class Vfs
{
    private const uint DT_DIR = 4;

    // ---- directories --------------------------------------------------------------------------------------------

    public int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result)
    {
        var a = new OpenArgs { Ctx = ctx, Flags = flags };
        int err = Route(FuseOpcode.OpenDir, nodeId, ref a,
            static (vfs, id, ref a) => vfs.IfPseudoExists(id, 0), // stateless: handle 0 of slot 0
            static (vfs, ref c, ref a) =>
            {
                int err = c.Fs.OpenDir(a.Ctx, c.Node, a.Flags, out a.Result);
                return err != 0 ? err : vfs.ExportHandle(a.Ctx, c.Mount!, c.Node, ref a.Result, dir: true);
            });
        result = a.Result;
        return err;
    }

    private ref struct ReadDirArgs
    {
        public FuseContext Ctx;
        public ulong Offset;
        public DirectoryWriter Writer;
    }

    public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        var a = new ReadDirArgs { Ctx = ctx, Offset = offset, Writer = writer };
        return Route(writer.IsPlus ? FuseOpcode.ReadDirPlus : FuseOpcode.ReadDir, nodeId, ref a,
            static (vfs, id, ref a) => vfs.PseudoReadDir(a.Ctx, id, a.Offset, a.Writer),
            // Plain dirents carry no node id: the filesystem may write them straight into the reply.
            static (vfs, ref c, ref a) => a.Writer.IsPlus
                ? vfs.RelayReadDirPlus(a.Ctx, c.Mount!, c.Node, c.Handle, a.Offset, a.Writer)
                : c.Fs.ReadDir(a.Ctx, c.Node, c.Handle, a.Offset, a.Writer),
            handle);
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
}
