using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

public sealed partial class FuseServer
{
    // ---- argument parsing -----------------------------------------------------------------------------------------

    /// <summary>Largest security context value taken from a request (an SELinux label is well under 4 KiB).</summary>
    private const int MaxSecurityContext = 4096;

    /// <summary>
    /// With FUSE_SECURITY_CTX the kernel sends the new inode's security context with a create: since 7.38 (Linux 6.2)
    /// as a request extension after the arguments (in_header.total_extlen; fuse.h struct fuse_ext_header, whose types
    /// 0..31 are a fuse_secctx_header with nr_secctx = type), before that appended to the arguments after the name.
    /// Each of the nr_secctx records is struct fuse_secctx {size, padding}, a NUL-terminated xattr name and size bytes
    /// of value. The kernel sends at most one (fs/fuse/dir.c get_security_context); more, or a record that overruns
    /// its header, is malformed. False only for a malformed request.
    /// </summary>
    private bool TrySecurityContext(in FuseContext ctx, ReadOnlySpan<byte> trailingArgs, ReadOnlySpan<byte> extensions, out FuseContext result)
    {
        result = ctx;
        if ((_negotiated & FuseInitFlags.SecurityCtx) == 0) return true;
        ReadOnlySpan<byte> block = default;
        if (extensions.Length > 0)
        {
            while (extensions.Length > 0)
            {
                if (!MemoryMarshal.TryRead(extensions, out FuseExtHeader eh) || eh.size < 8 || eh.size % 8 != 0 || eh.size > (uint)extensions.Length)
                    return false;
                if (eh.type <= 31)
                {
                    if (!block.IsEmpty) return false; // two security context headers
                    block = extensions[..(int)eh.size];
                }
                extensions = extensions[(int)eh.size..];
            }
        }
        else if (trailingArgs.Length >= 8)
        {
            if (!MemoryMarshal.TryRead(trailingArgs, out FuseExtHeader eh) || eh.size < 8 || eh.size > (uint)trailingArgs.Length) return false;
            block = trailingArgs[..(int)eh.size];
        }
        if (block.IsEmpty) return true;
        uint count = MemoryMarshal.Read<FuseExtHeader>(block).type;
        if (count == 0) return true;
        if (count > 1) return false;
        ReadOnlySpan<byte> rest = block[8..];
        if (!Take(ref rest, out FuseExtHeader sc) || !TakeName(ref rest, out ReadOnlySpan<byte> name)) return false;
        if (name.IsEmpty || name.Length > 255 || sc.size > MaxSecurityContext || sc.size > (uint)rest.Length) return false;
        result = new FuseContext(ctx.Uid, ctx.Gid, ctx.Pid, ctx.Unique)
        {
            SecurityContext = new FuseSecurityContext(name.ToArray(), rest[..(int)sc.size].ToArray()),
        };
        return true;
    }

    private static bool Take<T>(ref ReadOnlySpan<byte> args, out T value) where T : unmanaged
    {
        if (!MemoryMarshal.TryRead(args, out value))
        {
            return false;
        }
        args = args[System.Runtime.CompilerServices.Unsafe.SizeOf<T>()..];
        return true;
    }

    /// <summary>A NUL-terminated name; the NUL must be inside the arguments.</summary>
    private static bool TakeName(ref ReadOnlySpan<byte> args, out ReadOnlySpan<byte> name)
    {
        int nul = args.IndexOf((byte)0);
        if (nul < 0)
        {
            name = default;
            return false;
        }
        name = args[..nul];
        args = args[(nul + 1)..];
        return true;
    }
}
