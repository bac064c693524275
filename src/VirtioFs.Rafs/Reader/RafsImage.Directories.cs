using System.Buffers.Binary;
using VirtioFs.Rafs.Layout;

namespace VirtioFs.Rafs.Reader;

// RAFS v6 directories: EROFS directory blocks (sorted dirents, names after them), lookup by binary search, readdir.
public sealed partial class RafsImage
{
    private static int ParseBlock(ReadOnlySpan<byte> block, out int count)
    {
        count = 0;
        if (block.Length < V6.DirentSize) return EIO;
        int firstNameOffset = BinaryPrimitives.ReadUInt16LittleEndian(block[8..]);
        if (firstNameOffset < V6.DirentSize || firstNameOffset % V6.DirentSize != 0 || firstNameOffset > block.Length) return EIO;
        count = firstNameOffset / V6.DirentSize;
        return 0;
    }

    /// <summary>Entry i of a parsed block: name, nid, file type.</summary>
    private static int Entry(ReadOnlySpan<byte> block, int count, int i, out ReadOnlySpan<byte> name, out ulong nid, out byte fileType)
    {
        name = default;
        var d = block.Slice(i * V6.DirentSize, V6.DirentSize);
        nid = BinaryPrimitives.ReadUInt64LittleEndian(d);
        int start = BinaryPrimitives.ReadUInt16LittleEndian(d[8..]);
        fileType = d[10];
        int end = i + 1 < count ? BinaryPrimitives.ReadUInt16LittleEndian(block[((i + 1) * V6.DirentSize + 8)..]) : block.Length;
        if (start < count * V6.DirentSize || end > block.Length || start >= end) return EIO;
        name = block[start..end];
        if (i + 1 == count)
        {
            int z = name.IndexOf((byte)0);
            if (z >= 0) name = name[..z];
        }
        // A name with '/' or NUL would let a hostile image alias paths.
        if (name.Length == 0 || name.Length > 255 || name.IndexOfAny((byte)'/', (byte)0) >= 0) return EIO;
        return 0;
    }

    private int Block(in Inode dir, ulong b, out ReadOnlySpan<byte> block)
    {
        ulong pos = b * BlockSize;
        int len = (int)Math.Min(BlockSize, dir.Size - pos);
        return TryData(dir, pos, len, out block) ? 0 : EIO;
    }

    private static ulong BlockCount(in Inode dir) => (dir.Size + BlockSize - 1) / BlockSize;

    public int Lookup(ulong parent, ReadOnlySpan<byte> name, out ulong ino)
    {
        if (Version == RafsVersion.V5) return V5Lookup(parent, name, out ino);
        ino = 0;
        int rc = TryInode(parent, out var dir);
        if (rc != 0) return rc;
        if ((dir.Mode & 0xF000) != 0x4000) return ENOTDIR;
        if (name.Length == 0 || name.Length > 255) return ENOENT;
        ulong lo = 0, hi = BlockCount(dir);
        if (hi > (ulong)(_size / BlockSize) + 1) return EIO;
        // Binary search for the last block whose first name <= name, then within it (EROFS dirs are sorted).
        while (lo < hi)
        {
            ulong mid = lo + (hi - lo) / 2;
            if ((rc = Block(dir, mid, out var block)) != 0 || (rc = ParseBlock(block, out int cnt)) != 0) return rc;
            if ((rc = Entry(block, cnt, 0, out var first, out _, out _)) != 0) return rc;
            int c = first.SequenceCompareTo(name);
            if (c == 0) { ino = BinaryPrimitives.ReadUInt64LittleEndian(block); return 0; }
            if (c < 0) lo = mid + 1; else hi = mid;
        }
        if (lo == 0) return ENOENT;
        {
            if ((rc = Block(dir, lo - 1, out var block)) != 0 || (rc = ParseBlock(block, out int cnt)) != 0) return rc;
            int l = 0, h = cnt - 1;
            while (l <= h)
            {
                int m = l + (h - l) / 2;
                if ((rc = Entry(block, cnt, m, out var nm, out ulong nid, out _)) != 0) return rc;
                int c = nm.SequenceCompareTo(name);
                if (c == 0) { ino = nid; return 0; }
                if (c < 0) l = m + 1; else h = m - 1;
            }
        }
        return ENOENT;
    }

    /// <summary>Lists a directory from <paramref name="offset"/> (0 = start; otherwise a value a previous callback
    /// got as nextOffset). Offsets encode (block &lt;&lt; 16 | entry), so resuming is O(1).</summary>
    public int ReadDir(ulong dirIno, ulong offset, ReadDirCallback callback)
    {
        if (Version == RafsVersion.V5) return V5ReadDir(dirIno, offset, callback);
        int rc = TryInode(dirIno, out var dir);
        if (rc != 0) return rc;
        if ((dir.Mode & 0xF000) != 0x4000) return ENOTDIR;
        ulong nblocks = BlockCount(dir);
        ulong b = offset >> 16;
        int start = (int)(offset & 0xFFFF);
        for (; b < nblocks; b++, start = 0)
        {
            if ((rc = Block(dir, b, out var block)) != 0 || (rc = ParseBlock(block, out int cnt)) != 0) return rc;
            for (int i = start; i < cnt; i++)
            {
                if ((rc = Entry(block, cnt, i, out var name, out ulong nid, out byte fileType)) != 0) return rc;
                ulong next = i + 1 < cnt ? (b << 16) | (uint)(i + 1) : (b + 1) << 16;
                if (!callback(name, nid, V6.ModeOfFileType(fileType), next)) return 0;
            }
        }
        return 0;
    }
}
