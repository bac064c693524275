using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>Extended attributes (only with PassthroughOptions.Xattr).</summary>
public sealed unsafe partial class PassthroughFileSystem
{
    /// <summary>Resolves the path used for xattr calls: /proc/self/fd/N of a file or directory.</summary>
    private int XattrTarget(ulong nodeId, ref FdLease lease, scoped Span<byte> proc)
    {
        if (!_options.Xattr) return Errno.ENOSYS; // the kernel then stops sending xattr requests (fc->no_xattr)
        if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
        // Following the magic link of a symlink or special file would act on it without opening it only for regular
        // files and directories; the rest are refused like a filesystem without xattr support on them.
        if (inode.Type is not (S_IFREG or S_IFDIR)) return Errno.EOPNOTSUPP;
        ProcPath(lease.Fd, proc);
        return 0;
    }

    private static bool XattrName(ReadOnlySpan<byte> name, Span<byte> dest)
    {
        if (name.Length is 0 or > NameMax) return false;
        ToCString(name, dest);
        return true;
    }

    public int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            if (!XattrName(name, cname)) return Errno.ERANGE;
            fixed (byte* pp = proc)
            fixed (byte* np = cname)
            fixed (byte* vp = value)
            {
                nint n = getxattr(pp, np, vp, (nuint)value.Length); // SAFETY: NUL-terminated strings; vp has value.Length bytes.
                if (n < 0) return LastErrno;
                length = (int)n;
                return 0;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            fixed (byte* pp = proc)
            fixed (byte* lp = list)
            {
                nint n = listxattr(pp, lp, (nuint)list.Length); // SAFETY: lp has list.Length bytes.
                if (n < 0) return LastErrno;
                length = (int)n;
                return 0;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            if (!XattrName(name, cname)) return Errno.ERANGE;
            fixed (byte* pp = proc)
            fixed (byte* np = cname)
            fixed (byte* vp = value)
            {
                // SAFETY: NUL-terminated strings; vp has value.Length bytes.
                return setxattr(pp, np, vp, (nuint)value.Length, (int)flags) == 0 ? 0 : LastErrno;
            }
        }
        finally
        {
            lease.Dispose();
        }
    }

    public int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            Span<byte> cname = stackalloc byte[NameMax + 1];
            if (!XattrName(name, cname)) return Errno.ERANGE;
            fixed (byte* pp = proc)
            fixed (byte* np = cname)
            {
                return removexattr(pp, np) == 0 ? 0 : LastErrno; // SAFETY: NUL-terminated strings.
            }
        }
        finally
        {
            lease.Dispose();
        }
    }
}
