using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

/// <summary>
/// Fills a READDIR / READDIRPLUS reply directly in the reply memory. Records are fuse_dirent (24 bytes) or
/// fuse_direntplus (entry_out 128 + dirent 24) followed by the name, padded to 8 bytes (fuse.h FUSE_DIRENT_ALIGN).
/// A record that would exceed the size the kernel asked for is refused whole, so the reply never overflows.
/// </summary>
public sealed class DirectoryWriter
{
    private const int DirentSize = 24;
    private const int DirentPlusSize = 152;
    /// <summary>NAME_MAX: longer names are refused (a filesystem bug, never sent to the kernel).</summary>
    private const int MaxName = 255;

    private readonly FuseRequestBuffers _buffers;
    private long _limit;
    private long _used;

    internal DirectoryWriter(FuseRequestBuffers buffers) => _buffers = buffers;

    /// <summary>True for READDIRPLUS: use <see cref="TryAddPlus"/> and look each entry up.</summary>
    public bool IsPlus { get; private set; }

    /// <summary>Bytes emitted so far.</summary>
    public long BytesWritten => _used;

    internal void Reset(bool plus, long limit)
    {
        IsPlus = plus;
        _limit = limit;
        _used = 0;
    }

    private static int RecordSize(int header, int nameLength) => (header + nameLength + 7) & ~7;

    /// <summary>Whether a record with this name length still fits (check before a READDIRPLUS lookup).</summary>
    public bool Fits(int nameLength) =>
        nameLength is > 0 and <= MaxName && _used + RecordSize(IsPlus ? DirentPlusSize : DirentSize, nameLength) <= _limit;

    /// <summary>Adds a plain dirent; <paramref name="nextOffset"/> is where the following READDIR resumes.</summary>
    public bool TryAdd(ulong ino, ulong nextOffset, uint type, ReadOnlySpan<byte> name)
    {
        if (IsPlus)
        {
            // A plain entry in a READDIRPLUS reply: nodeid 0 tells the kernel not to instantiate a dentry.
            FuseEntry none = default;
            none.Attr.ino = ino;
            none.Attr.mode = type << 12;
            return TryAddPlus(none, nextOffset, type, name);
        }
        if (!Fits(name.Length))
        {
            return false;
        }
        Span<byte> record = stackalloc byte[RecordSize(DirentSize, MaxName)];
        int size = RecordSize(DirentSize, name.Length);
        record = record[..size];
        record.Clear();
        var d = new FuseDirent { ino = ino, off = nextOffset, namelen = (uint)name.Length, type = type };
        MemoryMarshal.Write(record, in d);
        name.CopyTo(record[DirentSize..]);
        return Emit(record);
    }

    /// <summary>Adds a direntplus record; the entry's NodeId (if non-zero) counts as one lookup.</summary>
    public bool TryAddPlus(in FuseEntry entry, ulong nextOffset, uint type, ReadOnlySpan<byte> name)
    {
        if (!IsPlus || !Fits(name.Length))
        {
            return false;
        }
        Span<byte> record = stackalloc byte[RecordSize(DirentPlusSize, MaxName)];
        int size = RecordSize(DirentPlusSize, name.Length);
        record = record[..size];
        record.Clear();
        var d = new FuseDirentplus
        {
            entry_out = FuseServer.ToEntryOut(entry),
            dirent = new FuseDirent { ino = entry.Attr.ino, off = nextOffset, namelen = (uint)name.Length, type = type },
        };
        MemoryMarshal.Write(record, in d);
        name.CopyTo(record[DirentPlusSize..]);
        return Emit(record);
    }

    private bool Emit(ReadOnlySpan<byte> record)
    {
        if (!_buffers.TryWrite(record))
        {
            return false;
        }
        _used += record.Length;
        return true;
    }
}
