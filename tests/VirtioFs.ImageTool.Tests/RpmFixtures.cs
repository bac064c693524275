using System.Buffers.Binary;
using System.Text;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// Builds SQLite database files and rpm header blobs byte by byte for the reader tests, following the same documents
/// the reader follows (sqlite.org fileformat2 §1.3 header, §1.6 b-tree pages, §1.7 overflow, §2.1 records; rpm
/// docs/manual/format.md header layout), so hostile variants (cycles, bad pointers) can be made on purpose. The
/// well-formed output is checked against the sqlite3 command where it is installed (RpmTests).
/// </summary>
internal sealed class SqliteBuilder(int pageSize = 4096)
{
    public int PageSize { get; } = pageSize;
    public int Usable => PageSize;
    private readonly List<byte[]> _pages = [null!]; // page 1 is written last (it holds the header)

    public uint NextPage => (uint)_pages.Count + 1;

    public uint Add(byte[] page) { _pages.Add(page); return (uint)_pages.Count; }

    /// <summary>Adds <paramref name="n"/> empty leaf pages (unreferenced, as free pages would be).</summary>
    public void Pad(int n) { for (int i = 0; i < n; i++) Add(Page(false, [])); }

    public void Set(uint n, byte[] page) => _pages[(int)n - 1] = page;

    public static byte[] Varint(ulong v)
    {
        if (v > 0x00ffffffffffffffUL)
        {
            var r9 = new byte[9];
            r9[8] = (byte)v;
            v >>= 8;
            for (int i = 7; i >= 0; i--) { r9[i] = (byte)((v & 0x7f) | 0x80); v >>= 7; }
            return r9;
        }
        var tmp = new List<byte>();
        do { tmp.Insert(0, (byte)(v & 0x7f)); v >>= 7; } while (v != 0);
        for (int i = 0; i < tmp.Count - 1; i++) tmp[i] |= 0x80;
        return [.. tmp];
    }

    /// <summary>§2.1: a record of NULL, long, string (UTF-8 TEXT) or byte[] (BLOB) columns.</summary>
    public static byte[] Record(params object?[] cols)
    {
        var types = new List<byte>();
        var body = new List<byte>();
        foreach (var c in cols)
        {
            switch (c)
            {
                case null: types.AddRange(Varint(0)); break;
                case long l:
                    types.AddRange(Varint(6));
                    var b = new byte[8]; BinaryPrimitives.WriteInt64BigEndian(b, l); body.AddRange(b);
                    break;
                case string s:
                    var t = Encoding.UTF8.GetBytes(s);
                    types.AddRange(Varint((ulong)(t.Length * 2 + 13))); body.AddRange(t);
                    break;
                case byte[] blob:
                    types.AddRange(Varint((ulong)(blob.Length * 2 + 12))); body.AddRange(blob);
                    break;
                default: throw new ArgumentException(c.GetType().Name);
            }
        }
        // The header size counts its own varint; one byte suffices for the small headers made here.
        var hdr = new List<byte> { (byte)(types.Count + 1) };
        hdr.AddRange(types);
        return [.. hdr, .. body];
    }

    /// <summary>§1.6 table leaf cell, spilling to freshly added overflow pages (§1.7) as SQLite would.</summary>
    public byte[] LeafCell(long rowid, byte[] payload)
    {
        int u = Usable, x = u - 35, p = payload.Length;
        var head = new List<byte>(Varint((ulong)p));
        head.AddRange(Varint((ulong)rowid));
        if (p <= x) return [.. head, .. payload];
        int m = ((u - 12) * 32 / 255) - 23, k = m + ((p - m) % (u - 4)), local = k <= x ? k : m;
        // Overflow pages in order, each pointing at the next.
        var rest = payload.AsSpan(local).ToArray();
        int n = (rest.Length + u - 5) / (u - 4);
        uint first = NextPage;
        for (int i = 0; i < n; i++)
        {
            var page = new byte[PageSize];
            BinaryPrimitives.WriteUInt32BigEndian(page, i == n - 1 ? 0 : first + (uint)i + 1);
            rest.AsSpan(i * (u - 4), Math.Min(u - 4, rest.Length - i * (u - 4))).CopyTo(page.AsSpan(4));
            Add(page);
        }
        var ptr = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(ptr, first);
        return [.. head, .. payload.AsSpan(0, local).ToArray(), .. ptr];
    }

    /// <summary>§1.6: a table leaf (0x0D) or interior (0x05) page; cells packed from the end.</summary>
    public byte[] Page(bool first, IReadOnlyList<byte[]> cells, uint? rightMost = null)
    {
        var page = new byte[PageSize];
        int hdr = first ? 100 : 0;
        page[hdr] = rightMost is null ? (byte)0x0D : (byte)0x05;
        BinaryPrimitives.WriteUInt16BigEndian(page.AsSpan(hdr + 3), (ushort)cells.Count);
        int ptrs = hdr + (rightMost is null ? 8 : 12);
        if (rightMost is uint r) BinaryPrimitives.WriteUInt32BigEndian(page.AsSpan(hdr + 8), r);
        int end = Usable;
        for (int i = 0; i < cells.Count; i++)
        {
            end -= cells[i].Length;
            if (end < ptrs + 2 * cells.Count) throw new InvalidOperationException("cells do not fit the page");
            cells[i].CopyTo(page, end);
            BinaryPrimitives.WriteUInt16BigEndian(page.AsSpan(ptrs + 2 * i), (ushort)end);
        }
        BinaryPrimitives.WriteUInt16BigEndian(page.AsSpan(hdr + 5), (ushort)(end == 65536 ? 0 : end));
        return page;
    }

    public static byte[] InteriorCell(uint child, long key) =>
        [(byte)(child >> 24), (byte)(child >> 16), (byte)(child >> 8), (byte)child, .. Varint((ulong)key)];

    /// <summary>Page 1: the §1.3 header and the schema table as a leaf, naming the given tables and their roots.</summary>
    public byte[] Build(params (string Table, uint Root)[] tables)
    {
        var cells = tables.Select((t, i) => LeafCell(i + 1, Record("table", t.Table, t.Table, (long)t.Root,
            $"CREATE TABLE {t.Table} (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"))).ToList();
        var p1 = Page(true, cells);
        "SQLite format 3\0"u8.CopyTo(p1);
        BinaryPrimitives.WriteUInt16BigEndian(p1.AsSpan(16), (ushort)(PageSize == 65536 ? 1 : PageSize));
        p1[18] = 1; p1[19] = 1; p1[20] = 0; p1[21] = 64; p1[22] = 32; p1[23] = 32;
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(24), 1);
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(28), (uint)_pages.Count);
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(40), 1);  // schema cookie
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(44), 4);  // schema format
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(56), 1);  // UTF-8
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(92), 1);  // version-valid-for = change counter
        BinaryPrimitives.WriteUInt32BigEndian(p1.AsSpan(96), 3040001);
        _pages[0] = p1;
        return _pages.SelectMany(p => p).ToArray();
    }
}

/// <summary>rpm header blobs as the rpm database stores them: il, dl, 16-byte entries, data store (big-endian).</summary>
internal static class RpmHeaderBuilder
{
    public static byte[] Build(params (int Tag, object Value)[] tags)
    {
        var data = new List<byte>();
        var entries = new List<(int Tag, uint Type, int Offset, int Count)>();
        foreach (var (tag, value) in tags)
        {
            switch (value)
            {
                case string s:
                    entries.Add((tag, 6, data.Count, 1));
                    data.AddRange(Encoding.UTF8.GetBytes(s)); data.Add(0);
                    break;
                case string[] a:
                    entries.Add((tag, 8, data.Count, a.Length));
                    foreach (var s in a) { data.AddRange(Encoding.UTF8.GetBytes(s)); data.Add(0); }
                    break;
                case int[] ints:
                    while (data.Count % 4 != 0) data.Add(0);
                    entries.Add((tag, 4, data.Count, ints.Length));
                    foreach (var i in ints) { var b = new byte[4]; BinaryPrimitives.WriteInt32BigEndian(b, i); data.AddRange(b); }
                    break;
                default: throw new ArgumentException(value.GetType().Name);
            }
        }
        return Raw(entries, [.. data]);
    }

    public static byte[] Raw(IReadOnlyList<(int Tag, uint Type, int Offset, int Count)> entries, byte[] data)
    {
        var r = new byte[8 + 16 * entries.Count + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(r, entries.Count);
        BinaryPrimitives.WriteInt32BigEndian(r.AsSpan(4), data.Length);
        for (int i = 0; i < entries.Count; i++)
        {
            var e = r.AsSpan(8 + 16 * i);
            BinaryPrimitives.WriteInt32BigEndian(e, entries[i].Tag);
            BinaryPrimitives.WriteUInt32BigEndian(e[4..], entries[i].Type);
            BinaryPrimitives.WriteInt32BigEndian(e[8..], entries[i].Offset);
            BinaryPrimitives.WriteInt32BigEndian(e[12..], entries[i].Count);
        }
        data.CopyTo(r, 8 + 16 * entries.Count);
        return r;
    }
}
