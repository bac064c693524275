using System.Buffers.Binary;

namespace VirtioFs.ImageTool.Bom.Sqlite;

/// <summary>
/// The committed pages of an SQLite write-ahead log (https://www.sqlite.org/fileformat2.html §4): a 32-byte header
/// (magic 0x377f0682/3, format 3007000, page size, checkpoint sequence, two salts, a checksum of the first 24 bytes),
/// then frames of a 24-byte header (page number, database size in pages for a commit frame else 0, the two salts, a
/// cumulative checksum) and one page. §4.2/§4.4: a frame counts only if its salts equal the header's and its
/// checksum (continuing from the previous frame's) matches; only frames up to the last valid commit frame are part of
/// the database, and the last such frame of a page holds its content. A WAL whose header is invalid holds nothing,
/// as SQLite treats it. This is what SQLite does on recovery, without the -shm index (which is rebuilt from the WAL).
/// </summary>
public sealed class SqliteWal
{
    private const uint MagicLittleEndian = 0x377f0682, MagicBigEndian = 0x377f0683;
    private const int HeaderSize = 32, FrameHeaderSize = 24;

    private readonly Dictionary<uint, long> _frameOfPage = new();
    private readonly ReadAt _read;

    /// <summary>The database's size in pages after the last committed transaction, or null when the WAL commits nothing.</summary>
    public uint? DatabasePages { get; }
    public int CommittedFrames { get; }

    /// <param name="walSize">The WAL's size; every frame header and page is read (and checksummed), so the caller caps it.</param>
    public SqliteWal(string name, long walSize, ReadAt read, int pageSize)
    {
        _read = read;
        if (walSize < HeaderSize) return;
        var h = read(0, HeaderSize);
        if (h.Length < HeaderSize) return;
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(h);
        if (magic is not (MagicLittleEndian or MagicBigEndian)) return;
        bool bigEndian = magic == MagicBigEndian;
        if (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(4)) != 3007000) return;
        uint walPageSize = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8));
        uint s0 = 0, s1 = 0;
        Checksum(h.AsSpan(0, 24), bigEndian, ref s0, ref s1);
        if (s0 != BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(24)) || s1 != BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(28))) return;
        // A valid header with another page size than the database's is not a WAL of this database.
        if (walPageSize != (uint)pageSize) throw new InvalidDataException($"{name}: WAL page size {walPageSize} differs from the database's {pageSize}");
        uint salt1 = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16)), salt2 = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(20));

        var pending = new Dictionary<uint, long>();
        long frameSize = FrameHeaderSize + (long)pageSize;
        int frames = 0;
        for (long at = HeaderSize; at + frameSize <= walSize; at += frameSize)
        {
            var f = read(at, (int)frameSize);
            if (f.Length != frameSize) break;
            uint page = BinaryPrimitives.ReadUInt32BigEndian(f);
            uint commitSize = BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(4));
            if (page == 0 || BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(8)) != salt1 || BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(12)) != salt2) break;
            uint c0 = s0, c1 = s1;
            Checksum(f.AsSpan(0, 8), bigEndian, ref c0, ref c1);
            Checksum(f.AsSpan(FrameHeaderSize), bigEndian, ref c0, ref c1);
            if (c0 != BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(16)) || c1 != BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(20))) break;
            (s0, s1) = (c0, c1);
            frames++;
            pending[page] = at + FrameHeaderSize;
            if (commitSize != 0)
            {
                foreach (var (p, off) in pending) _frameOfPage[p] = off;
                pending.Clear();
                DatabasePages = commitSize;
                CommittedFrames = frames;
            }
        }
    }

    /// <summary>The page's content from the WAL, or null when the WAL does not hold it (read it from the database).</summary>
    public byte[]? Page(uint n, int pageSize) => _frameOfPage.TryGetValue(n, out var off) ? _read(off, pageSize) : null;

    /// <summary>§4.2: over 32-bit words x(i), x(i+1): s0 += x(i) + s1; s1 += x(i+1) + s0, words in the byte order the
    /// magic names.</summary>
    private static void Checksum(ReadOnlySpan<byte> data, bool bigEndian, ref uint s0, ref uint s1)
    {
        for (int i = 0; i + 8 <= data.Length; i += 8)
        {
            uint x0 = bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(data[i..]) : BinaryPrimitives.ReadUInt32LittleEndian(data[i..]);
            uint x1 = bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(data[(i + 4)..]) : BinaryPrimitives.ReadUInt32LittleEndian(data[(i + 4)..]);
            unchecked
            {
                s0 += x0 + s1;
                s1 += x1 + s0;
            }
        }
    }
}
