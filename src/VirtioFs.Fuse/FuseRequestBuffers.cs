using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

/// <summary>
/// Per-worker request/reply memory description. Readable segments hold the request (in header, arguments, WRITE data),
/// writable segments receive the reply (out header, body, READ data). Reused across requests: no allocation once the
/// segment arrays have grown to the transport's chain length.
/// </summary>
public sealed class FuseRequestBuffers : IReplyReferences, IDisposable
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

    // Native (unmoving) memory owned by this object, freed by Dispose: the args copy and the contiguous-reply scratch.
    private readonly unsafe byte* _args;
    private readonly unsafe byte* _replyScratch;
    private bool _disposed;

    // Where the reader stands in the readable segments and the writer in the writable ones (SegmentCursor state).
    private SegmentPosition _read;
    private SegmentPosition _write;

    internal readonly DirectoryWriter DirWriter;

    /// <summary>Most READ data references one reply carries (a 1 MiB READ spans two chunks; more are copied).</summary>
    public const int MaxReferences = 8;

    /// <summary>Most segments <see cref="GatherReply"/> produces: each reference, and the buffer pieces around them.</summary>
    public const int MaxGatherSegments = 2 * MaxReferences + 1;

    private readonly ReplyReference[] _references = new ReplyReference[MaxReferences];
    private int _referenceCount;
    private long _referenceBase = -1;

    private struct ReplyReference
    {
        public long Offset;
        public IoSegment Data;
        public IReplyPin Pin;
        public int Token;
    }

    public unsafe FuseRequestBuffers(int initialSegments = 16)
    {
        // SAFETY: both blocks are allocated here with the capacities every later Span over them uses, and freed once
        // in Dispose.
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

    /// <summary>SAFETY (caller): the memory stays valid and unmoved until <see cref="Clear"/> or the next request.</summary>
    public unsafe void AddReadable(byte* pointer, int length) => Add(ref _readable, ref _readableCount, ref _readableLength, pointer, length);
    /// <summary>SAFETY (caller): as <see cref="AddReadable"/>.</summary>
    public unsafe void AddWritable(byte* pointer, int length) => Add(ref _writable, ref _writableCount, ref _writableLength, pointer, length);

    public void Clear()
    {
        ReleaseReferences();
        _readableCount = 0;
        _writableCount = 0;
        _readableLength = 0;
        _writableLength = 0;
    }

    private unsafe void Add(ref IoSegment[] array, ref int count, ref long total, byte* pointer, int length)
    {
        // SAFETY: only records the pointer; it is dereferenced by the cursors within [pointer, pointer + length).
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
        ReleaseReferences();
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
    internal unsafe bool TryReadArgs(int length, out Span<byte> args)
    {
        // SAFETY: the span covers at most ArgsCapacity bytes of _args (checked below), which lives until Dispose.
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

    internal unsafe bool TryWrite<T>(in T value) where T : unmanaged
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

    // ---- READ data by reference (IReplyReferences) ---------------------------------------------------------------

    /// <summary>
    /// Set by a transport that sends replies with <see cref="GatherReply"/> (/dev/fuse): READ then offers the filesystem
    /// <see cref="IReplyReferences"/>. Off for virtio, whose reply buffers are the guest's memory.
    /// </summary>
    public bool ReplyByReference { get; set; }

    /// <summary>The reply refers to memory outside the writable segments: send it with <see cref="GatherReply"/>.</summary>
    public bool HasReferences => _referenceCount > 0;

    /// <summary>Reply offset just past the last reference (0 without any).</summary>
    internal long ReferencesEnd => _referenceCount == 0 ? 0 : _references[_referenceCount - 1].Offset + _references[_referenceCount - 1].Data.Length;

    /// <summary>READ data starts at reply offset <paramref name="replyOffset"/> (after the out header): references are
    /// taken from here until the next request.</summary>
    internal IReplyReferences BeginReferences(long replyOffset)
    {
        ReleaseReferences();
        _referenceBase = replyOffset;
        return this;
    }

    bool IReplyReferences.TryAdd(long dataOffset, IoSegment data, IReplyPin pin, int token)
    {
        ArgumentNullException.ThrowIfNull(pin);
        if (_referenceBase < 0 || _referenceCount == MaxReferences || data.Length <= 0 || dataOffset < 0)
        {
            return false;
        }
        long offset = _referenceBase + dataOffset;
        long previousEnd = _referenceCount == 0 ? _referenceBase : _references[_referenceCount - 1].Offset + _references[_referenceCount - 1].Data.Length;
        // In order, not overlapping, and inside the reply space: the bytes they replace are skipped, never sent twice.
        if (offset < previousEnd || offset + data.Length > _writableLength)
        {
            return false;
        }
        _references[_referenceCount++] = new ReplyReference { Offset = offset, Data = data, Pin = pin, Token = token };
        return true;
    }

    /// <summary>
    /// Describes the first <paramref name="length"/> reply bytes as segments for writev: the writable segments, with
    /// the referenced ranges taken from where they lie. Returns the segment count, or -1 when <paramref name="into"/>
    /// is too short or a reference lies beyond <paramref name="length"/> (the reply is then not to be sent as it is).
    /// </summary>
    public int GatherReply(long length, Span<IoSegment> into)
    {
        var writer = new SegmentCursor(Writable, default, _writableLength);
        int count = 0;
        long at = 0;
        for (int i = 0; i <= _referenceCount; i++)
        {
            long end = i < _referenceCount ? _references[i].Offset : length;
            if (end < at || end > length)
            {
                return -1;
            }
            int n = end > at ? writer.Slice(end - at, into[count..]) : 0;
            if (n < 0 || !writer.TrySkip(end - at))
            {
                return -1;
            }
            count += n;
            at = end;
            if (i < _referenceCount)
            {
                ReplyReference r = _references[i];
                if (count == into.Length || at + r.Data.Length > length || !writer.TrySkip(r.Data.Length))
                {
                    return -1;
                }
                into[count++] = r.Data;
                at += r.Data.Length;
            }
        }
        return count;
    }

    /// <summary>Unpins every reference (the reply has been sent, or is dropped or replaced): called by transports after
    /// sending, and before anything else touches these buffers.</summary>
    public void ReleaseReferences()
    {
        _referenceBase = -1;
        int n = _referenceCount;
        _referenceCount = 0;
        for (int i = 0; i < n; i++)
        {
            ref ReplyReference r = ref _references[i];
            IReplyPin pin = r.Pin;
            int token = r.Token;
            r = default;
            pin.Unpin(token);
        }
    }

    // SAFETY: _replyScratch holds ReplyScratchCapacity bytes until Dispose.
    internal unsafe Span<byte> ReplyScratch => new(_replyScratch, ReplyScratchCapacity);

    public unsafe void Dispose()
    {
        ReleaseReferences();
        // SAFETY: frees the two blocks the constructor allocated, once (_disposed).
        if (!_disposed)
        {
            _disposed = true;
            NativeMemory.Free(_args);
            NativeMemory.Free(_replyScratch);
        }
    }
}
