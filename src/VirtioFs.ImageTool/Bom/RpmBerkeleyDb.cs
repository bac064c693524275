using System.Buffers.Binary;
using VirtioFs.ImageTool.Bom.Sqlite;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// The values of a Berkeley DB hash database, as rpm before 4.16 keeps its Packages file (key: the 4-byte header
/// instance number, value: the header blob; instance 0 holds rpm's next-instance counter). Layout from Berkeley DB's
/// dbinc/db_page.h: page 0 is the metadata page (DBMETA: magic 0x061561 at offset 12 in the writer's byte order,
/// version, page size at 20, encryption at 24, type at 25, flags at 26, last page number at 32); every page starts
/// with a 26-byte header (lsn, pgno, prev_pgno, next_pgno, entries at 20, hf_offset at 22, level, type at 25) and an
/// index of 2-byte item offsets. Hash pages (type 13, or 2 unsorted) hold key/data item pairs: H_KEYDATA (1) is the
/// bytes up to the previous item, H_OFFPAGE (3) names an overflow chain {pgno at 4, total length at 8}; overflow
/// pages (type 7) hold hf_offset bytes after the header and chain by next_pgno. Like other rpmdb readers, every hash
/// page is scanned in page order instead of walking buckets. Hostile input: page numbers are range-checked, every
/// overflow page is used at most once, lengths are capped, and all errors are InvalidDataException naming the file.
/// </summary>
public sealed class BerkeleyHashDb
{
    private const uint HashMagic = 0x061561;
    private const int PageHeader = 26;
    private const byte PHashUnsorted = 2, POverflow = 7, PHashMeta = 8, PHash = 13;
    private const byte HKeyData = 1, HOffPage = 3;

    private readonly string _name;
    private readonly ReadAt _read;
    private readonly bool _bigEndian;
    public int PageSize { get; }
    public uint LastPage { get; }
    public int MaxValue { get; }

    public BerkeleyHashDb(string name, long fileSize, ReadAt read, int maxValue = 32 << 20)
    {
        _name = name;
        _read = read;
        MaxValue = maxValue;
        if (fileSize < 512) throw Bad($"{fileSize} bytes is too short for a Berkeley DB database");
        var m = read(0, 72);
        if (m.Length < 72) throw Bad("truncated metadata page");
        if (BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(12)) == HashMagic) _bigEndian = false;
        else if (BinaryPrimitives.ReadUInt32BigEndian(m.AsSpan(12)) == HashMagic) _bigEndian = true;
        else throw Bad("not a Berkeley DB hash database (no hash magic 0x061561)");
        uint ps = U32(m, 20);
        if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) throw Bad($"page size {ps} is not a power of two from 512 to 65536");
        PageSize = (int)ps;
        if (m[24] != 0) throw Bad("the database is encrypted");
        if (m[25] != PHashMeta) throw Bad($"metadata page type {m[25]} is not a hash database's");
        // DBMETA_CHKSUM: checksummed pages carry a larger header this reader does not parse.
        if ((m[26] & 1) != 0) throw Bad("the database has page checksums, which this reader does not read");
        LastPage = (uint)Math.Min(U32(m, 32), fileSize / ps - 1);
    }

    private InvalidDataException Bad(string what) => new($"{_name}: {what}");
    private uint U32(byte[] b, int at) => _bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(at)) : BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at));
    private ushort U16(byte[] b, int at) => _bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(at)) : BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(at));

    private byte[] Page(uint n)
    {
        if (n < 1 || n > LastPage) throw Bad($"page number {n} is outside the file's pages 1..{LastPage}");
        var p = _read((long)n * PageSize, PageSize);
        if (p.Length != PageSize) throw Bad($"page {n} is truncated");
        return p;
    }

    /// <summary>Every (key, value) pair of the hash pages, values of overflow items reassembled.</summary>
    public IEnumerable<(byte[] Key, byte[] Value)> ReadAll()
    {
        var usedOverflow = new HashSet<uint>();
        for (uint n = 1; n <= LastPage; n++)
        {
            var page = Page(n);
            if (page[25] is not (PHash or PHashUnsorted)) continue;
            int entries = U16(page, 20);
            if (PageHeader + 2 * entries > PageSize) throw Bad($"page {n}: {entries} item offsets do not fit the page");
            for (int i = 0; i + 1 < entries; i += 2)
            {
                var key = Item(page, n, i, entries, usedOverflow);
                var value = Item(page, n, i + 1, entries, usedOverflow);
                yield return (key, value);
            }
        }
    }

    private byte[] Item(byte[] page, uint n, int i, int entries, HashSet<uint> usedOverflow)
    {
        int off = U16(page, PageHeader + 2 * i);
        // Items are laid out from the page's end downwards in index order: item i runs to item i-1 (or the page end).
        int end = i == 0 ? PageSize : U16(page, PageHeader + 2 * (i - 1));
        if (off < PageHeader + 2 * entries || off >= end || end > PageSize) throw Bad($"page {n}: item {i} at {off}..{end} is outside the page");
        switch (page[off])
        {
            case HKeyData:
                return page.AsSpan(off + 1, end - off - 1).ToArray();
            case HOffPage:
                if (end - off < 12) throw Bad($"page {n}: off-page item {i} is truncated");
                return Overflow(U32(page, off + 4), U32(page, off + 8), n, usedOverflow);
            default:
                throw Bad($"page {n}: item {i} has type {page[off]}, not a key/data or off-page item (duplicates are not rpm's)");
        }
    }

    private byte[] Overflow(uint first, uint total, uint n, HashSet<uint> used)
    {
        if (total > (uint)MaxValue) throw Bad($"page {n}: an off-page item of {total} bytes exceeds the {MaxValue}-byte cap");
        // Each overflow page holds at most PageSize-26 bytes: more than the file's pages could hold cannot be.
        if ((long)total > (long)LastPage * (PageSize - PageHeader)) throw Bad($"page {n}: an off-page item of {total} bytes is larger than the file");
        var r = new byte[total];
        int have = 0;
        uint p = first;
        while (have < total)
        {
            if (p == 0) throw Bad($"page {n}: overflow chain ends after {have} of {total} bytes");
            if (!used.Add(p)) throw Bad($"overflow page {p} is used twice (a cycle or a shared chain)");
            var o = Page(p);
            if (o[25] != POverflow) throw Bad($"page {p} in an overflow chain has type {o[25]}");
            int len = U16(o, 22);
            if (len > PageSize - PageHeader || len > total - have) throw Bad($"overflow page {p} claims {len} bytes");
            if (len == 0) throw Bad($"overflow page {p} holds no bytes");
            o.AsSpan(PageHeader, len).CopyTo(r.AsSpan(have));
            have += len;
            p = U32(o, 16);
        }
        return r;
    }
}
