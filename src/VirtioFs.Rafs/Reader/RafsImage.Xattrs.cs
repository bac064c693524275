using System.Buffers.Binary;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Reader;

// Extended attributes of RAFS v6 inodes: the EROFS inline xattr body, listed and looked up by full name.
public sealed partial class RafsImage
{
    internal delegate bool XattrVisitor(byte index, ReadOnlySpan<byte> suffix, ReadOnlySpan<byte> value);

    private int WalkXattrs(ulong ino, XattrVisitor visit)
    {
        if (Version == RafsVersion.V5) return V5WalkXattrs(ino, visit);
        int rc = TryInode(ino, out var n);
        if (rc != 0) return rc;
        if (n.XattrSize == 0) return 0;
        if (!TrySpan(n.Offset + n.InodeSize, n.XattrSize, out var x)) return EIO;
        int shared = x[4];
        int p = ErofsXattrIbodyHeader.Size + shared * 4;
        if (p > x.Length) return EIO;
        // Shared xattrs (mkfs.erofs; nydus does not emit them): u32 ids into the shared area at s_xattr_blkaddr.
        for (int i = 0; i < shared; i++)
        {
            long at = (long)_sb.s_xattr_blkaddr * BlockSize + (long)BinaryPrimitives.ReadUInt32LittleEndian(x[(ErofsXattrIbodyHeader.Size + i * 4)..]) * 4;
            if (!TrySpan(at, ErofsXattrEntry.Size, out var eh)) return EIO;
            int snlen = eh[0], sidx = eh[1], svlen = BinaryPrimitives.ReadUInt16LittleEndian(eh[2..]);
            if (!TrySpan(at + 4, snlen + svlen, out var body)) return EIO;
            if (!visit((byte)sidx, body[..snlen], body[snlen..])) return 0;
        }
        while (p + ErofsXattrEntry.Size <= x.Length)
        {
            int nlen = x[p], idx = x[p + 1], vlen = BinaryPrimitives.ReadUInt16LittleEndian(x[(p + 2)..]);
            if (p + 4 + nlen + vlen > x.Length) return EIO;
            if (!visit((byte)idx, x.Slice(p + 4, nlen), x.Slice(p + 4 + nlen, vlen))) return 0;
            p = (p + 4 + nlen + vlen + 3) & ~3;
        }
        return 0;
    }

    /// <summary>Appends every xattr the image serves for <paramref name="ino"/> (full name, value), in stored order.</summary>
    public int GetXattrs(ulong ino, List<KeyValuePair<byte[], byte[]>> xattrs)
    {
        return WalkXattrs(ino, (idx, suffix, value) =>
        {
            var prefix = idx == 0 ? default : Builder.V6Writer.XattrPrefix(idx);
            if (prefix.IsEmpty && idx != 0) return true; // an unknown name index is never served (ListXattr skips it too)
            var full = new byte[prefix.Length + suffix.Length];
            prefix.CopyTo(full);
            suffix.CopyTo(full.AsSpan(prefix.Length));
            xattrs.Add(new(full, value.ToArray()));
            return true;
        });
    }

    public int ListXattr(ulong ino, List<byte[]> names)
    {
        return WalkXattrs(ino, (idx, suffix, _) =>
        {
            var prefix = idx == 0 ? default : Builder.V6Writer.XattrPrefix(idx);
            if (prefix.IsEmpty && idx != 0) return true;
            var full = new byte[prefix.Length + suffix.Length];
            prefix.CopyTo(full);
            suffix.CopyTo(full.AsSpan(prefix.Length));
            names.Add(full);
            return true;
        });
    }

    public int GetXattr(ulong ino, ReadOnlySpan<byte> name, out byte[] value)
    {
        byte[]? found = null;
        var want = name.ToArray();
        int rc = WalkXattrs(ino, (idx, suffix, v) =>
        {
            var prefix = idx == 0 ? default : Builder.V6Writer.XattrPrefix(idx);
            if ((prefix.IsEmpty && idx != 0) || want.Length != prefix.Length + suffix.Length) return true;
            if (!want.AsSpan().StartsWith(prefix) || !want.AsSpan(prefix.Length).SequenceEqual(suffix)) return true;
            found = v.ToArray();
            return false;
        });
        value = found ?? [];
        if (rc != 0) return rc;
        return found is null ? ENODATA : 0;
    }
}
