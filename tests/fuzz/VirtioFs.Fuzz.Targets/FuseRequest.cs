using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using VirtioFs.Fuse;

namespace VirtioFs.Fuzz;

/// <summary>Builds raw FUSE requests (fuse_in_header + arguments) the way the kernel lays them out.</summary>
public static class FuseRequest
{
    public const int InHeaderSize = 40;

    public static byte[] Make(FuseOpcode op, ulong nodeId, ulong unique, params byte[][] args)
    {
        int argLength = args.Sum(a => a.Length);
        var header = new FuseInHeader
        {
            len = (uint)(InHeaderSize + argLength), opcode = (uint)op, unique = unique, nodeid = nodeId, uid = 0, gid = 0, pid = 1,
        };
        var bytes = new byte[InHeaderSize + argLength];
        MemoryMarshal.Write(bytes, in header);
        int at = InHeaderSize;
        foreach (byte[] a in args)
        {
            a.CopyTo(bytes, at);
            at += a.Length;
        }
        return bytes;
    }

    public static byte[] Bytes<T>(in T value) where T : unmanaged
    {
        var b = new byte[Unsafe.SizeOf<T>()];
        MemoryMarshal.Write(b, in value);
        return b;
    }

    /// <summary>A NUL-terminated name.</summary>
    public static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    public static byte[] Init(ulong unique = 1) =>
        Make(FuseOpcode.Init, 0, unique, Bytes(new FuseInitIn
        {
            major = 7, minor = 38, max_readahead = 128 * 1024, flags = 0xFFFF_FFFF, flags2 = 0,
        }));
}
