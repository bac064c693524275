using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

/// <summary>
/// Per-worker request/reply memory description. Readable segments hold the request (in header, arguments, WRITE data),
/// writable segments receive the reply (out header, body, READ data). Reused across requests: no allocation once the
/// segment arrays have grown to the transport's chain length.
/// </summary>
public sealed unsafe class FuseRequestBuffers : IDisposable
{
    /// <summary>Largest argument block copied out of the request (setxattr: 16 + name 256 + value 64 KiB).</summary>
    internal const int ArgsCapacity = 72 * 1024;
    /// <summary>Scratch for replies built contiguously (readlink, xattr values and lists: at most 64 KiB).</summary>
    internal const int ReplyScratchCapacity = 64 * 1024 + 16;

    private IoSegment[] _readable;
    private IoSegment[] _writable;
    private IoSegment[] _dataSegments;
    private int _readableCount;
    private int _writableCount;
    private long _readableLength;
    private long _writableLength;

    private readonly byte* _args;
    private readonly byte* _replyScratch;
    private bool _disposed;

    // Where the reader stands in the readable segments and the writer in the writable ones (SegmentCursor state).
    private SegmentPosition _read;
    private SegmentPosition _write;

    internal readonly DirectoryWriter DirWriter;

    public FuseRequestBuffers(int initialSegments = 16)
    {
        initialSegments = Math.Max(initialSegments, 2);
        _readable = new IoSegment[initialSegments];
        _writable = new IoSegment[initialSegments];
        _dataSegments = new IoSegment[initialSegments];
        _args = (byte*)NativeMemory.Alloc(ArgsCapacity);
        _replyScratch = (byte*)NativeMemory.Alloc(ReplyScratchCapacity);
        DirWriter = new DirectoryWriter(this);
    }

    /// <summary>The errno of the reply last written (0 for success), for the server's statistics.</summary>
    internal int ReplyErrno { get; set; }

    public ReadOnlySpan<IoSegment> Readable => _readable.AsSpan(0, _readableCount);
    public ReadOnlySpan<IoSegment> Writable => _writable.AsSpan(0, _writableCount);
    public long ReadableLength => _readableLength;
    public long WritableLength => _writableLength;

    public void AddReadable(byte* pointer, int length) => Add(ref _readable, ref _readableCount, ref _readableLength, pointer, length);
    public void AddWritable(byte* pointer, int length) => Add(ref _writable, ref _writableCount, ref _writableLength, pointer, length);

    public void Clear()
    {
        _readableCount = 0;
        _writableCount = 0;
        _readableLength = 0;
        _writableLength = 0;
    }

    private void Add(ref IoSegment[] array, ref int count, ref long total, byte* pointer, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0)
        {
            return;
        }
        if (count == array.Length)
        {
            Array.Resize(ref array, array.Length * 2);
            // A slice of either list never has more segments than the list itself.
            if (_dataSegments.Length < array.Length)
            {
                Array.Resize(ref _dataSegments, array.Length);
            }
        }
        array[count++] = new IoSegment(pointer, length);
        total += length;
    }

    // ---- reader -------------------------------------------------------------------------------------------------

    internal void ResetCursors()
    {
        _read = default;
        _write = default;
    }

    private SegmentCursor Reader => new(Readable, _read, _readableLength);

    private SegmentCursor Writer => new(Writable, _write, _writableLength);

    internal long ReadConsumed => _read.Consumed;

    /// <summary>Copies exactly dest.Length bytes from the request, crossing segment boundaries; false if too short.</summary>
    internal bool TryRead(Span<byte> dest)
    {
        SegmentCursor c = Reader;
        bool ok = c.TryRead(dest);
        _read = c.Position;
        return ok;
    }

    internal bool TryRead<T>(out T value) where T : unmanaged
    {
        SegmentCursor c = Reader;
        bool ok = c.TryRead(out value);
        _read = c.Position;
        return ok;
    }

    /// <summary>Copies <paramref name="length"/> argument bytes into the per-worker args buffer.</summary>
    internal bool TryReadArgs(int length, out Span<byte> args)
    {
        args = default;
        if (length < 0 || length > ArgsCapacity)
        {
            return false;
        }
        args = new Span<byte>(_args, length);
        return TryRead(args);
    }

    /// <summary>
    /// Describes the next <paramref name="length"/> request bytes as segments pointing into the request memory
    /// (WRITE payload: no copy). False if the request is shorter.
    /// </summary>
    internal bool TryTakeSegments(long length, out ReadOnlySpan<IoSegment> segments)
    {
        segments = default;
        SegmentCursor c = Reader;
        if (length < 0 || c.Remaining < length)
        {
            return false;
        }
        int count = c.Slice(length, _dataSegments);
        if (count < 0 || !c.TrySkip(length))
        {
            return false; // cannot happen: _dataSegments is as long as the longest list
        }
        _read = c.Position;
        segments = _dataSegments.AsSpan(0, count);
        return true;
    }

    // ---- writer -------------------------------------------------------------------------------------------------

    internal long WriteRemaining => _writableLength - _write.Consumed;
    internal long Written => _write.Consumed;

    /// <summary>Moves the writer to an absolute reply offset (0 to write the out header last).</summary>
    internal void SeekWriter(long offset)
    {
        _write = default;
        SkipWrite(offset);
    }

    internal bool SkipWrite(long n)
    {
        SegmentCursor c = Writer;
        bool ok = c.TrySkip(n);
        _write = c.Position;
        return ok;
    }

    internal bool TryWrite(ReadOnlySpan<byte> src)
    {
        SegmentCursor c = Writer;
        bool ok = c.TryWrite(src);
        _write = c.Position;
        return ok;
    }

    internal bool TryWrite<T>(in T value) where T : unmanaged
    {
        fixed (T* p = &value)
        {
            // SAFETY: p points at the caller's value, sizeof(T) bytes, pinned for this call.
            return TryWrite(new ReadOnlySpan<byte>(p, sizeof(T)));
        }
    }

    /// <summary>Describes up to <paramref name="length"/> writable bytes from the writer position (READ destination).</summary>
    internal ReadOnlySpan<IoSegment> PeekWritableSegments(long length)
    {
        int count = Writer.Slice(length, _dataSegments);
        return count < 0 ? default : _dataSegments.AsSpan(0, count);
    }

    internal Span<byte> ReplyScratch => new(_replyScratch, ReplyScratchCapacity);

    public void Dispose()
    {
        if (!_disposed)
        {
            _disposed = true;
            NativeMemory.Free(_args);
            NativeMemory.Free(_replyScratch);
        }
    }
}
