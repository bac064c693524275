using System.Runtime.InteropServices;

namespace VirtioFs.Storage;

/// <summary>
/// <c>struct iovec</c> from &lt;sys/uio.h&gt;: one piece of destination memory. The FUSE layer's reply segments use this
/// same layout (pointer, then a 64-bit length), so a span of them can be reinterpreted with MemoryMarshal.Cast and
/// handed to <see cref="Cache.BlobCacheManager.ReadFile(IReadOnlyList{VirtioFs.Rafs.Reader.RafsChunk}, ulong, ulong, int, ReadOnlySpan{Iovec})"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct Iovec
{
    public byte* iov_base;
    public nuint iov_len;

    public Iovec(byte* pointer, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        iov_base = pointer;
        iov_len = (nuint)length;
    }
}

/// <summary>The syscalls Tmds.LibC does not bind.</summary>
internal static unsafe partial class Interop
{
    [LibraryImport("libc", SetLastError = true)]
    internal static partial nint preadv(int fd, Iovec* iov, int iovcnt, long offset);
}
