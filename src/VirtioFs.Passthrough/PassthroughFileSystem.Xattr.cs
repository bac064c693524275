using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>
/// Extended attributes (only with PassthroughOptions.Xattr). Guest names go through the --xattrmap rules before they
/// reach the host and host names from listxattr come back through them (<see cref="XattrMap"/>); the answers for refused
/// names are virtiofsd's (src/passthrough/mod.rs): a <c>bad</c> name is EPERM for set/remove and ENODATA for get (as if
/// it were not there), an <c>unsupported</c> one ENOTSUP, and both are left out of listxattr. POSIX ACL names are served
/// only when FUSE_POSIX_ACL was negotiated (--posix-acl); otherwise they are ENOTSUP and hidden, as virtiofsd does.
/// </summary>
public sealed partial class PassthroughFileSystem
{
    private static ReadOnlySpan<byte> AclAccessName => "system.posix_acl_access"u8;
    private static ReadOnlySpan<byte> AclDefaultName => "system.posix_acl_default"u8;

    /// <summary>Room for a mapped name: XATTR_NAME_MAX bytes and the NUL.</summary>
    private const int XattrNameBuffer = XATTR_NAME_MAX + 1;

    private static bool IsAclName(ReadOnlySpan<byte> name) => name.SequenceEqual(AclAccessName) || name.SequenceEqual(AclDefaultName);

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

    /// <summary>The start every per-name xattr call shares: <see cref="XattrTarget"/> into <paramref name="proc"/>, then
    /// <see cref="HostXattrName"/> into <paramref name="cname"/>.</summary>
    private int XattrTargetAndName(ulong nodeId, ReadOnlySpan<byte> name, bool forGet, ref FdLease lease, scoped Span<byte> proc, scoped Span<byte> cname)
    {
        int err = XattrTarget(nodeId, ref lease, proc);
        return err != 0 ? err : HostXattrName(name, cname, forGet);
    }

    /// <summary>
    /// The host name for a guest's xattr name, NUL-terminated in <paramref name="dest"/> (<see cref="XattrNameBuffer"/>
    /// bytes), or the errno the guest gets. <paramref name="forGet"/>: a <c>bad</c> rule answers ENODATA instead of EPERM.
    /// </summary>
    private int HostXattrName(ReadOnlySpan<byte> name, Span<byte> dest, bool forGet)
    {
        if (name.Length is 0 or > XATTR_NAME_MAX) return Errno.ERANGE;
        if (!_posixAcl && IsAclName(name)) return Errno.EOPNOTSUPP;
        XattrMap? map = _options.XattrMap;
        if (map is null)
        {
            name.CopyTo(dest);
            dest[name.Length] = 0;
            return 0;
        }
        switch (map.MapClient(name, dest[..XATTR_NAME_MAX], out int n))
        {
            case XattrMapResult.Pass:
                dest[n] = 0;
                return 0;
            case XattrMapResult.Deny:
                return forGet ? Errno.ENODATA : Errno.EPERM;
            case XattrMapResult.Unsupported:
                return Errno.EOPNOTSUPP;
            default:
                return Errno.ERANGE; // longer than XATTR_NAME_MAX once prefixed: what the host would answer
        }
    }

    public unsafe int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            Span<byte> cname = stackalloc byte[XattrNameBuffer];
            int err = XattrTargetAndName(nodeId, name, forGet: true, ref lease, proc, cname);
            if (err != 0) return err;
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

    public unsafe int ListXattr(in FuseContext ctx, ulong nodeId, Span<byte> list, out int length)
    {
        length = 0;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            int err = XattrTarget(nodeId, ref lease, proc);
            if (err != 0) return err;
            nint n;
            fixed (byte* pp = proc)
            fixed (byte* lp = list)
            {
                n = listxattr(pp, lp, (nuint)list.Length); // SAFETY: lp has list.Length bytes.
            }
            if (n < 0) return LastErrno;
            length = (int)n;
            // A size probe (no buffer) answers the host's length, an upper bound of the filtered list (virtiofsd does
            // the same); the names are rewritten only when they are returned.
            if (list.Length == 0) return 0;
            if (_options.XattrMap is { } map) length = map.MapServerList(list, length);
            if (!_posixAcl) length = DropAclNames(list, length);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    /// <summary>Removes system.posix_acl_* from a NUL-separated list in place; returns the new length.</summary>
    private static int DropAclNames(Span<byte> list, int length)
    {
        int read = 0;
        int write = 0;
        while (read < length)
        {
            int nul = list[read..length].IndexOf((byte)0);
            int end = nul < 0 ? length : read + nul;
            int len = end - read;
            if (len > 0 && !IsAclName(list[read..end]))
            {
                list[read..end].CopyTo(list[write..]);
                write += len;
                list[write++] = 0;
            }
            read = end + 1;
        }
        return write;
    }

    public unsafe int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            Span<byte> cname = stackalloc byte[XattrNameBuffer];
            int err = XattrTargetAndName(nodeId, name, forGet: false, ref lease, proc, cname);
            if (err != 0) return err;
            if (_posixAcl && (setxattrFlags & FuseConstants.FUSE_SETXATTR_ACL_KILL_SGID) != 0
                && cname[..cname.IndexOf((byte)0)].SequenceEqual(AclAccessName))
            {
                // The guest kernel found that its caller may not keep SGID while setting an access ACL
                // (posix_acl_update_mode); we set the ACL as root with CAP_FSETID, so the host would keep it: clear it
                // first, as virtiofsd's clear_sgid does.
                ClearMode(lease.Fd, S_ISGID);
            }
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

    public unsafe int RemoveXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (_options.ReadOnly) return Errno.EROFS;
        var lease = new FdLease();
        try
        {
            Span<byte> proc = stackalloc byte[32];
            Span<byte> cname = stackalloc byte[XattrNameBuffer];
            int err = XattrTargetAndName(nodeId, name, forGet: false, ref lease, proc, cname);
            if (err != 0) return err;
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

    /// <summary>
    /// When the map renames <c>security.capability</c>, the host kernel no longer knows the renamed attribute is a
    /// file capability, so it would survive a write, truncate or chown that must drop it. Remove it ourselves, as
    /// virtiofsd's clear_file_capabilities does. A no-op without such a map.
    /// </summary>
    private unsafe void DropMappedCapability(int pathFd)
    {
        byte[]? name = _mappedCapability;
        if (name is null) return;
        Span<byte> proc = stackalloc byte[32];
        ProcPath(pathFd, proc);
        fixed (byte* pp = proc)
        fixed (byte* np = name)
        {
            removexattr(pp, np); // SAFETY: NUL-terminated strings. ENODATA (none set) is the common, harmless answer.
        }
    }

    /// <summary>Sets the security context the guest sent with a create (FUSE_SECURITY_CTX) on the new inode.</summary>
    private unsafe int ApplySecurityContext(in FuseContext ctx, int pathFd)
    {
        if (!_securityLabel || ctx.SecurityContext is not { } sec) return 0;
        if (!_options.Xattr) return Errno.EOPNOTSUPP;
        Span<byte> cname = stackalloc byte[XattrNameBuffer];
        int err = HostXattrName(sec.Name, cname, forGet: false);
        if (err != 0) return err;
        Span<byte> proc = stackalloc byte[32];
        ProcPath(pathFd, proc);
        fixed (byte* pp = proc)
        fixed (byte* np = cname)
        fixed (byte* vp = sec.Value)
        {
            // SAFETY: NUL-terminated strings; vp has Value.Length bytes. The magic link of an O_PATH fd reaches the new
            // inode itself, even a symlink or a device node, without opening it (virtiofsd does the same).
            return setxattr(pp, np, vp, (nuint)sec.Value.Length, 0) == 0 ? 0 : LastErrno;
        }
    }
}
