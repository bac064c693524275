using System.Buffers.Binary;
using System.Text;

namespace VirtioFs.ImageTool.Bom.Sqlite;

/// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> of the database file (fewer only at its end).</summary>
public delegate byte[] ReadAt(long offset, int length);

/// <summary>
/// A read-only reader of the SQLite 3 database file format (https://www.sqlite.org/fileformat2.html), just enough to
/// walk one rowid table: the 100-byte database header (§1.3), table b-tree interior and leaf pages (§1.6), cell payload
/// overflow chains (§1.7), records (§2.1) and the schema table on page 1 (§2.6). Index b-trees, WITHOUT ROWID tables,
/// the freelist and journals are not read. Pages are read one at a time through <see cref="ReadAt"/>, so from an image
/// only the pages a table walk reaches are fetched.
///
/// The file comes from an image and is hostile: every page number is range-checked, a walk visits each page at most
/// once (a cycle in the b-tree or in an overflow chain is an error, not a hang), payload sizes are capped and checked
/// against the pages that could hold them before anything is allocated, and every malformed structure is an
/// <see cref="InvalidDataException"/> naming the file.
/// </summary>
public sealed class SqliteFile
{
    /// <summary>§1.3: every database starts with "SQLite format 3\0".</summary>
    private static readonly byte[] Magic = "SQLite format 3\0"u8.ToArray();
    public const int HeaderSize = 100;
    /// <summary>§1.3.4: "the usable size is not allowed to be less than 480".</summary>
    private const int MinUsableSize = 480;
    /// <summary>§1.2: the largest page number is 2147483646.</summary>
    private const long MaxPageNumber = 2147483646;

    private readonly ReadAt _read;
    private readonly string _name;
    private readonly long _fileSize;
    private readonly SqliteWal? _wal;

    public int PageSize { get; }
    /// <summary>§1.3.4: the page size less the reserved bytes at the end of each page.</summary>
    public int UsableSize { get; }
    public uint PageCount { get; }
    /// <summary>§1.3.13: 1 UTF-8, 2 UTF-16le, 3 UTF-16be; TEXT values are decoded with it.</summary>
    public Encoding TextEncoding { get; }
    /// <summary>Largest payload (one row's record) a walk accepts.</summary>
    public int MaxPayload { get; }

    /// <param name="name">The file's name in messages.</param>
    /// <param name="fileSize">The file's size in bytes; pages past it do not exist.</param>
    /// <param name="read">Random-access reads of the file.</param>
    /// <param name="maxPayload">Largest record accepted (a larger one is an error, not an allocation).</param>
    /// <param name="openWal">Given the page size, the database's write-ahead log (§4), or null when it has none.</param>
    public SqliteFile(string name, long fileSize, ReadAt read, int maxPayload = 32 << 20, Func<int, SqliteWal?>? openWal = null)
    {
        _name = name;
        _read = read;
        _fileSize = fileSize;
        MaxPayload = maxPayload;
        if (fileSize < HeaderSize) throw Bad($"{fileSize} bytes is too short for an SQLite database");
        var h = read(0, HeaderSize);
        if (h.Length < HeaderSize || !h.AsSpan(0, Magic.Length).SequenceEqual(Magic)) throw Bad("not an SQLite 3 database (no \"SQLite format 3\" header)");
        // §1.3.2: a power of two 512..32768 big-endian, or 1 meaning 65536.
        int ps = BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(16));
        if (ps == 1) ps = 65536;
        if (ps < 512 || (ps & (ps - 1)) != 0) throw Bad($"page size {ps} is not a power of two from 512 to 65536");
        PageSize = ps;
        // §1.3.3: read version above 2 means a format this reader does not know (1 rollback journal, 2 WAL).
        if (h[19] is not (1 or 2)) throw Bad($"file format read version {h[19]} is not 1 or 2");
        UsableSize = ps - h[20];
        if (UsableSize < MinUsableSize) throw Bad($"usable page size {UsableSize} (page {ps} less {h[20]} reserved) is under {MinUsableSize}");
        // §1.3.5: the payload fractions "must be 64, 32 and 32"; the overflow arithmetic below assumes them.
        if (h[21] != 64 || h[22] != 32 || h[23] != 32) throw Bad($"payload fractions {h[21]}/{h[22]}/{h[23]} are not 64/32/32");
        TextEncoding = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(56)) switch
        {
            0 or 1 => new UTF8Encoding(false, true), // 0: no schema yet, SQLite then uses UTF-8
            2 => new UnicodeEncoding(false, false, true),
            3 => new UnicodeEncoding(true, false, true),
            var e => throw Bad($"text encoding {e} is not 1, 2 or 3"),
        };
        // §1.3.7: the in-header size is only trusted by SQLite when valid; the file's own size bounds what we read.
        PageCount = (uint)Math.Min(fileSize / ps, MaxPageNumber);
        _wal = openWal?.Invoke(ps);
        // After the WAL's last commit the database has the commit frame's page count; each page past the file's end
        // must have come from a frame, which bounds a hostile count.
        if (_wal?.DatabasePages is uint walPages) PageCount = (uint)Math.Min(Math.Min(walPages, (long)PageCount + _wal.CommittedFrames), MaxPageNumber);
    }

    private InvalidDataException Bad(string what) => new($"{_name}: {what}");

    /// <summary>Reads page <paramref name="n"/> (1-based), checking it lies in the file.</summary>
    private byte[] Page(uint n)
    {
        if (n < 1 || n > PageCount) throw Bad($"page number {n} is outside the file's {PageCount} pages");
        var p = _wal?.Page(n, PageSize) ?? ((long)n * PageSize <= _fileSize ? _read((long)(n - 1) * PageSize, PageSize) : []);
        if (p.Length != PageSize) throw Bad($"page {n} is truncated ({p.Length} of {PageSize} bytes)");
        return p;
    }

    /// <summary>The root page of the rowid table <paramref name="table"/>, from the schema table on page 1 (§2.6:
    /// columns type, name, tbl_name, rootpage, sql).</summary>
    public uint FindTableRoot(string table)
    {
        foreach (var (_, payload) in ReadTable(1))
        {
            var row = SqliteRecord.Parse(payload, TextEncoding, _name);
            if (row.Length < 4 || row[0] is not string type || row[1] is not string name) continue;
            if (type != "table" || !string.Equals(name, table, StringComparison.OrdinalIgnoreCase)) continue;
            if (row[3] is not long root || root < 1 || root > PageCount) throw Bad($"table {table} has root page {row[3] ?? "NULL"}, outside the file");
            // A WITHOUT ROWID table is an index b-tree (§2.4), which this reader does not walk.
            if (row.Length > 4 && row[4] is string sql && sql.Contains("WITHOUT ROWID", StringComparison.OrdinalIgnoreCase))
                throw Bad($"table {table} is a WITHOUT ROWID table, which this reader does not read");
            return (uint)root;
        }
        throw Bad($"no table named {table} in the schema");
    }

    /// <summary>
    /// Every row of the table b-tree rooted at <paramref name="root"/> in rowid order: the rowid and the whole record
    /// (with its overflow pages followed). §1.6: a page's b-tree header is at offset 100 on page 1, else 0; byte 0 is
    /// 0x05 (table interior) or 0x0D (table leaf); a leaf's header is 8 bytes, an interior's 12 (the last 4 the
    /// right-most child); then the cell pointer array of 2-byte offsets.
    /// </summary>
    public IEnumerable<(long RowId, byte[] Payload)> ReadTable(uint root)
    {
        // One walk visits each page once: a b-tree or overflow page reached twice is a corrupt (or hostile) file.
        var visited = new HashSet<uint>();
        var pending = new Stack<uint>();
        pending.Push(root);
        // In a b-tree each page is some interior page's child at most once, so more child pointers than pages is
        // corrupt; counting them bounds the stack by the file's size, whatever the interior pages claim.
        long pushed = 1;
        while (pending.Count > 0)
        {
            uint n = pending.Pop();
            if (!visited.Add(n)) throw Bad($"page {n} is reached twice in the b-tree of table root {root} (a cycle)");
            var page = Page(n);
            int hdr = n == 1 ? HeaderSize : 0;
            byte kind = page[hdr];
            bool leaf = kind == 0x0D;
            if (kind != 0x0D && kind != 0x05) throw Bad($"page {n} has b-tree page type 0x{kind:X2}, not a table b-tree page (0x05 or 0x0D)");
            int cells = BinaryPrimitives.ReadUInt16BigEndian(page.AsSpan(hdr + 3));
            int ptrs = hdr + (leaf ? 8 : 12);
            if (ptrs + 2 * cells > UsableSize) throw Bad($"page {n}: {cells} cell pointers do not fit the page");
            if (!leaf)
            {
                pushed += cells + 1;
                if (pushed > PageCount) throw Bad($"page {n}: the b-tree of table root {root} has more child pointers than the file has pages");
                // Children in key order: each cell's left child, then the right-most pointer. Pushed in reverse.
                pending.Push(BinaryPrimitives.ReadUInt32BigEndian(page.AsSpan(hdr + 8)));
                for (int i = cells - 1; i >= 0; i--)
                {
                    int c = CellOffset(page, n, ptrs, i);
                    if (c + 4 > UsableSize) throw Bad($"page {n}: cell {i} runs past the page");
                    pending.Push(BinaryPrimitives.ReadUInt32BigEndian(page.AsSpan(c)));
                }
                continue;
            }
            for (int i = 0; i < cells; i++)
            {
                int c = CellOffset(page, n, ptrs, i);
                var span = page.AsSpan(c, UsableSize - c);
                // §1.6 table leaf cell: varint payload size P, varint rowid, the first local bytes, 4-byte first overflow page.
                if (!Varint.TryRead(span, out ulong p, out int a)) throw Bad($"page {n}: cell {i}: bad payload-size varint");
                if (!Varint.TryRead(span[a..], out ulong rowid, out int b)) throw Bad($"page {n}: cell {i}: bad rowid varint");
                if (p > (ulong)MaxPayload) throw Bad($"page {n}: cell {i}: payload of {p} bytes exceeds the {MaxPayload}-byte cap");
                yield return ((long)rowid, Payload(span[(a + b)..], (int)p, n, i, visited));
            }
        }
    }

    private int CellOffset(byte[] page, uint n, int ptrs, int i)
    {
        int c = BinaryPrimitives.ReadUInt16BigEndian(page.AsSpan(ptrs + 2 * i));
        if (c < ptrs || c >= UsableSize) throw Bad($"page {n}: cell {i} at offset {c} is outside the cell content area");
        return c;
    }

    /// <summary>
    /// §1.6 (overflow thresholds): with U the usable size and P the payload size, a table leaf cell stores all of P
    /// locally if P ≤ X = U-35; else K = M + ((P-M) % (U-4)) bytes with M = ((U-12)*32/255)-23 when K ≤ X, else M,
    /// followed by a 4-byte page number. §1.7: each overflow page starts with the next page's number (0 ends the chain)
    /// and holds U-4 bytes of payload.
    /// </summary>
    private byte[] Payload(ReadOnlySpan<byte> cell, int p, uint n, int i, HashSet<uint> visited)
    {
        int u = UsableSize, x = u - 35;
        if (p <= x)
        {
            if (cell.Length < p) throw Bad($"page {n}: cell {i}: {p}-byte payload runs past the page");
            return cell[..p].ToArray();
        }
        int m = ((u - 12) * 32 / 255) - 23;
        int k = m + ((p - m) % (u - 4));
        int local = k <= x ? k : m;
        // The rest needs this many overflow pages; more than the file has cannot be (checked before allocating).
        long overflowPages = ((long)(p - local) + (u - 4) - 1) / (u - 4);
        if (overflowPages > PageCount) throw Bad($"page {n}: cell {i}: a {p}-byte payload needs {overflowPages} overflow pages, more than the file has");
        if (cell.Length < local + 4) throw Bad($"page {n}: cell {i}: local payload runs past the page");
        var result = new byte[p];
        cell[..local].CopyTo(result);
        int have = local;
        uint next = BinaryPrimitives.ReadUInt32BigEndian(cell[local..]);
        while (have < p)
        {
            if (next == 0) throw Bad($"page {n}: cell {i}: overflow chain ends after {have} of {p} bytes");
            if (!visited.Add(next)) throw Bad($"page {n}: cell {i}: overflow page {next} is reached twice (a cycle)");
            var o = Page(next);
            int take = Math.Min(u - 4, p - have);
            o.AsSpan(4, take).CopyTo(result.AsSpan(have));
            have += take;
            next = BinaryPrimitives.ReadUInt32BigEndian(o);
        }
        return result;
    }
}

/// <summary>§1.6 (varint): 1 to 9 bytes, big-endian; the first eight carry 7 bits each and a continuation bit, the
/// ninth all 8 bits.</summary>
public static class Varint
{
    public static bool TryRead(ReadOnlySpan<byte> s, out ulong value, out int length)
    {
        value = 0;
        for (int i = 0; i < 9; i++)
        {
            if (i >= s.Length) { length = 0; return false; }
            byte b = s[i];
            if (i == 8) { value = (value << 8) | b; length = 9; return true; }
            value = (value << 7) | (uint)(b & 0x7F);
            if ((b & 0x80) == 0) { length = i + 1; return true; }
        }
        length = 0;
        return false;
    }
}

/// <summary>§2.1 record format: a varint header size, one varint serial type per column, then the values.</summary>
public static class SqliteRecord
{
    /// <summary>More columns than this is not a record we want (SQLite's own default limit is 2000).</summary>
    private const int MaxColumns = 2000;

    /// <summary>The record's values: null, long, double, byte[] (BLOB) or string (TEXT).</summary>
    public static object?[] Parse(ReadOnlySpan<byte> rec, Encoding text, string name)
    {
        if (!Varint.TryRead(rec, out ulong hsize, out int at)) throw new InvalidDataException($"{name}: record header size is a bad varint");
        if (hsize > (ulong)rec.Length || hsize < (ulong)at) throw new InvalidDataException($"{name}: record header of {hsize} bytes does not fit the {rec.Length}-byte record");
        var types = new List<ulong>();
        while (at < (int)hsize)
        {
            if (!Varint.TryRead(rec[at..(int)hsize], out ulong t, out int l)) throw new InvalidDataException($"{name}: record serial type is a bad varint");
            if (types.Count == MaxColumns) throw new InvalidDataException($"{name}: record has more than {MaxColumns} columns");
            types.Add(t);
            at += l;
        }
        var values = new object?[types.Count];
        int pos = (int)hsize;
        for (int i = 0; i < types.Count; i++)
        {
            ulong t = types[i];
            // Serial types: 0 NULL; 1,2,3,4,5,6 big-endian two's-complement integers of 1,2,3,4,6,8 bytes; 7 a
            // big-endian IEEE 754 double; 8 and 9 the integers 0 and 1; 10, 11 reserved; N ≥ 12 even a BLOB of
            // (N-12)/2 bytes; N ≥ 13 odd TEXT of (N-13)/2 bytes in the database text encoding.
            int size = t switch
            {
                0 or 8 or 9 => 0,
                1 => 1,
                2 => 2,
                3 => 3,
                4 => 4,
                5 => 6,
                6 or 7 => 8,
                10 or 11 => throw new InvalidDataException($"{name}: record column {i} has reserved serial type {t}"),
                _ => (t - 12) / 2 > (ulong)(rec.Length - pos) ? -1 : (int)((t - 12) / 2),
            };
            if (size < 0 || size > rec.Length - pos) throw new InvalidDataException($"{name}: record column {i} (serial type {t}) runs past the record");
            var v = rec.Slice(pos, size);
            values[i] = t switch
            {
                0 => null,
                8 => 0L,
                9 => 1L,
                7 => BinaryPrimitives.ReadDoubleBigEndian(v),
                <= 6 => SignedBigEndian(v),
                _ when t % 2 == 0 => v.ToArray(),
                _ => Text(text, v, name, i),
            };
            pos += size;
        }
        return values;
    }

    private static string Text(Encoding text, ReadOnlySpan<byte> v, string name, int column)
    {
        try { return text.GetString(v); }
        catch (DecoderFallbackException) { throw new InvalidDataException($"{name}: record column {column} is not valid {text.WebName} text"); }
    }

    private static long SignedBigEndian(ReadOnlySpan<byte> v)
    {
        long r = (sbyte)v[0];
        for (int i = 1; i < v.Length; i++) r = (r << 8) | v[i];
        return r;
    }
}
