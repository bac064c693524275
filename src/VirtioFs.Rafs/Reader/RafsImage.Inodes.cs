using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Reader;

// RAFS v6 inodes: the EROFS inode header decoded and bounds-checked, attributes, inline or plain data, symlinks.
public sealed partial class RafsImage
{
    /// <summary>Decoded EROFS inode header.</summary>
    internal readonly struct Inode
    {
        public required ulong Nid { get; init; }
        public required long Offset { get; init; }
        public required int InodeSize { get; init; }
        public required int XattrSize { get; init; }
        public required ushort Layout { get; init; }
        public required uint Mode { get; init; }
        public required ulong Size { get; init; }
        public required uint U { get; init; }
        public required uint Ino { get; init; }
        public required uint Uid { get; init; }
        public required uint Gid { get; init; }
        public required long Mtime { get; init; }
        public required uint MtimeNsec { get; init; }
        public required uint Nlink { get; init; }
        public long TailOffset => Offset + InodeSize + XattrSize;
    }

    internal int TryInode(ulong nid, out Inode inode)
    {
        inode = default;
        if (nid > (ulong)(_size >> V6.InodeSlotBits)) return EIO;
        long off = _metaBase + (long)nid * V6.InodeSlotSize;
        if (!TrySpan(off, RafsV6InodeCompact.Size, out var s)) return EIO;
        ushort format = BinaryPrimitives.ReadUInt16LittleEndian(s);
        ushort layout = (ushort)((format >> 1) & 0x7);
        if ((format & ~0xF) != 0 && (format >> 4) != 0) { /* newer EROFS bits; tolerate */ }
        if (layout is not (V6.InodeFlatPlain or V6.InodeFlatInline or V6.InodeChunkBased)) return EIO;
        ushort icount = BinaryPrimitives.ReadUInt16LittleEndian(s[2..]);
        int xsize = icount == 0 ? 0 : ErofsXattrIbodyHeader.Size + (icount - 1) * 4;
        if ((format & 1) == V6.InodeLayoutExtended)
        {
            if (!TrySpan(off, RafsV6InodeExtended.Size, out s)) return EIO;
            var e = MemoryMarshal.Read<RafsV6InodeExtended>(s);
            inode = new Inode
            {
                Nid = nid, Offset = off, InodeSize = RafsV6InodeExtended.Size, XattrSize = xsize, Layout = layout, Mode = e.i_mode,
                Size = e.i_size, U = e.i_u, Ino = e.i_ino, Uid = e.i_uid, Gid = e.i_gid, Mtime = (long)e.i_mtime, MtimeNsec = e.i_mtime_nsec, Nlink = e.i_nlink,
            };
        }
        else
        {
            var c = MemoryMarshal.Read<RafsV6InodeCompact>(s);
            inode = new Inode
            {
                Nid = nid, Offset = off, InodeSize = RafsV6InodeCompact.Size, XattrSize = xsize, Layout = layout, Mode = c.i_mode,
                Size = c.i_size, U = c.i_u, Ino = c.i_ino, Uid = c.i_uid, Gid = c.i_gid, Mtime = (long)_sb.s_build_time, MtimeNsec = _sb.s_build_time_nsec, Nlink = c.i_nlink,
            };
        }
        if (!InRange(inode.TailOffset, 0)) return EIO;
        if (inode.MtimeNsec >= 1_000_000_000) return EIO;
        return 0;
    }

    public int GetAttr(ulong ino, out RafsAttr attr)
    {
        if (Version == RafsVersion.V5) return V5GetAttr(ino, out attr);
        attr = default;
        int rc = TryInode(ino, out var inode);
        if (rc != 0) return rc;
        ulong rdev = (inode.Mode & 0xF000) is 0x2000 or 0x6000 ? Builder.V6Writer.DecodeDev(inode.U) : 0;
        ulong size = (inode.Mode & 0xF000) is 0x2000 or 0x6000 or 0x1000 or 0xC000 ? 0 : inode.Size;
        attr = new RafsAttr(inode.Ino, inode.Mode, inode.Nlink, inode.Uid, inode.Gid, size, rdev, inode.Mtime, inode.MtimeNsec);
        return 0;
    }

    /// <summary>Bytes [pos, pos+len) of a plain or inline inode's data (directory blocks, symlink target).</summary>
    private bool TryData(in Inode inode, ulong pos, int len, out ReadOnlySpan<byte> s)
    {
        s = default;
        if (pos > inode.Size || (ulong)len > inode.Size - pos) return false;
        if (inode.Layout == V6.InodeFlatPlain)
        {
            return TrySpan((long)inode.U * BlockSize + (long)pos, len, out s);
        }
        if (inode.Layout == V6.InodeFlatInline)
        {
            ulong tailStart = inode.Size / BlockSize * BlockSize;
            if (inode.Size % BlockSize == 0) tailStart = inode.Size;
            if (pos >= tailStart)
            {
                long t = inode.TailOffset + (long)(pos - tailStart);
                // The inline tail must stay inside the inode's block (EROFS rule).
                if ((inode.TailOffset % BlockSize) + (long)(inode.Size - tailStart) > BlockSize) return false;
                return TrySpan(t, len, out s);
            }
            if (pos + (ulong)len > tailStart) return false;
            return TrySpan((long)inode.U * BlockSize + (long)pos, len, out s);
        }
        return false;
    }

    public int ReadLink(ulong ino, out byte[] target)
    {
        if (Version == RafsVersion.V5) return V5ReadLink(ino, out target);
        target = [];
        int rc = TryInode(ino, out var inode);
        if (rc != 0) return rc;
        if ((inode.Mode & 0xF000) != 0xA000) return EINVAL;
        if (inode.Size > 4096 || !TryData(inode, 0, (int)inode.Size, out var s)) return EIO;
        target = s.ToArray();
        return 0;
    }
}
