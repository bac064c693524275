using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Interop;

namespace VirtioFs.Passthrough;

/// <summary>OPENDIR, READDIR(PLUS), RELEASEDIR, FSYNCDIR.</summary>
public sealed partial class PassthroughFileSystem
{
    /// <summary>One getdents64 block per directory handle (glibc's DIR buffer is 32 KiB; a block holds ~250 short names).</summary>
    private const int DirBufferSize = 8192;

    public unsafe int OpenDir(in FuseContext ctx, ulong nodeId, uint flags, out FuseOpenResult result)
    {
        result = default;
        var lease = new FdLease();
        try
        {
            if (!TryInode(nodeId, out Inode inode, ref lease)) return Errno.EBADF;
            if (inode.Type != S_IFDIR) return Errno.ENOTDIR;
            int fd;
            byte* dot = stackalloc byte[2] { (byte)'.', 0 };
            fd = openat(lease.Fd, dot, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0); // SAFETY: "." of a directory fd.
            if (fd < 0) return LastErrno;
            result = OpenResult(AddHandle(fd, nodeId), true);
            return 0;
        }
        finally
        {
            lease.Dispose();
        }
    }

    public unsafe int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        var lease = new FdLease();
        var ilease = new FdLease();
        try
        {
            if (!TryHandle(handle, out OpenHandle h, ref lease)) return Errno.EBADF;
            Inode? dir = null;
            if (writer.IsPlus && !TryInode(h.NodeId, out dir, ref ilease)) return Errno.EBADF;
            lock (h.DirLock)
            {
                // A READDIR that continues where the last one stopped is served from the entries already read (one
                // getdents64 per block, as a DIR* stream does); any other offset is a seek. getdents64 d_off values
                // are stable cookies for this directory, so seeking to the one the kernel passed back is exact.
                h.DirBuffer ??= GC.AllocateUninitializedArray<byte>(DirBufferSize);
                if (h.DirPosition >= h.DirLength || h.DirNextOffset != offset)
                {
                    if (lseek(lease.Fd, (long)Math.Min(offset, long.MaxValue), 0) < 0) return LastErrno;
                    h.DirLength = 0;
                    h.DirPosition = 0;
                    h.DirNextOffset = offset;
                }
                fixed (byte* buf = h.DirBuffer)
                {
                    while (true)
                    {
                        if (h.DirPosition >= h.DirLength)
                        {
                            nint n = getdents64(lease.Fd, buf, DirBufferSize); // SAFETY: buf has DirBufferSize bytes.
                            if (n < 0) return LastErrno;
                            if (n == 0) return 0;
                            h.DirLength = (int)n;
                            h.DirPosition = 0;
                        }
                        // linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
                        byte* rec = buf + h.DirPosition;
                        if (h.DirLength - h.DirPosition < 20)
                        {
                            h.DirLength = 0;
                            return Errno.EIO;
                        }
                        ulong ino = *(ulong*)rec;
                        ulong off = *(ulong*)(rec + 8);
                        ushort reclen = *(ushort*)(rec + 16);
                        byte type = rec[18];
                        if (reclen < 20 || reclen > h.DirLength - h.DirPosition)
                        {
                            h.DirLength = 0;
                            return Errno.EIO;
                        }
                        var name = new ReadOnlySpan<byte>(rec + 19, reclen - 19);
                        int nul = name.IndexOf((byte)0);
                        if (nul >= 0) name = name[..nul];
                        // A full reply leaves this entry first in line for the READDIR that continues at DirNextOffset.
                        if (!Emit(writer, dir, ilease.Fd, ino, off, type, name)) return 0;
                        h.DirPosition += reclen;
                        h.DirNextOffset = off;
                    }
                }
            }
        }
        finally
        {
            ilease.Dispose();
            lease.Dispose();
        }
    }

    /// <summary>Emits one entry; false when the reply is full (the entry is left for the next call).</summary>
    private bool Emit(DirectoryWriter writer, Inode? dir, int dirFd, ulong ino, ulong off, uint type, ReadOnlySpan<byte> name)
    {
        bool dots = name.SequenceEqual("."u8) || name.SequenceEqual(".."u8);
        if (!writer.IsPlus || dots)
        {
            return writer.TryAdd(ino, off, type, name);
        }
        if (!writer.Fits(name.Length))
        {
            return false;
        }
        if (CheckName(name) != 0 || DoLookup(dir!, dirFd, name, out FuseEntry e) != 0)
        {
            return true; // vanished since getdents: skip it
        }
        if (!writer.TryAddPlus(e, off, type, name))
        {
            Forget(default, e.NodeId, 1); // cannot happen after Fits, but never leak the lookup
            return false;
        }
        return true;
    }

    public int ReleaseDir(in FuseContext ctx, ulong nodeId, ulong handle, uint flags) => Release(ctx, nodeId, handle, flags, 0, 0);

    public int FsyncDir(in FuseContext ctx, ulong nodeId, ulong handle, bool dataSync) => Fsync(ctx, nodeId, handle, dataSync);
}
