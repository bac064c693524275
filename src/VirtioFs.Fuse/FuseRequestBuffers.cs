using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

/// <summary>
/// One contiguous piece of request or reply memory (a virtqueue descriptor's mapping, or a /dev/fuse buffer).
/// Laid out exactly like <c>struct iovec</c> on 64-bit Linux (pointer, then a size_t whose upper half is kept zero),
/// so a span of segments can be handed to preadv/pwritev without translation.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
public unsafe struct IoSegment
{
    [FieldOffset(0)] public byte* Pointer;
    [FieldOffset(8)] public int Length;
    // Upper 32 bits of iovec.iov_len: always zero because Length is never negative.
    [FieldOffset(12)] private readonly int _zero;

    public IoSegment(byte* pointer, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Pointer = pointer;
        Length = length;
        _zero = 0;
    }
}

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

    // Reader cursor over the readable segments.
    private int _rIndex;
    private int _rOffset;
    private long _rConsumed;
    // Writer cursor over the writable segments.
    private int _wIndex;
    private int _wOffset;
    private long _wWritten;

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

    private static void Add(ref IoSegment[] array, ref int count, ref long total, byte* pointer, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0)
        {
            return;
        }
        if (count == array.Length)
        {
            Array.Resize(ref array, array.Length * 2);
        }
        array[count++] = new IoSegment(pointer, length);
        total += length;
    }

    // ---- reader -------------------------------------------------------------------------------------------------

    internal void ResetCursors()
    {
        _rIndex = 0;
        _rOffset = 0;
        _rConsumed = 0;
        _wIndex = 0;
        _wOffset = 0;
        _wWritten = 0;
    }

    internal long ReadConsumed => _rConsumed;

    /// <summary>Copies exactly dest.Length bytes from the request, crossing segment boundaries; false if too short.</summary>
    internal bool TryRead(Span<byte> dest)
    {
        if (_readableLength - _rConsumed < dest.Length)
        {
            return false;
        }
        while (dest.Length > 0)
        {
            ref IoSegment seg = ref _readable[_rIndex];
            int n = Math.Min(seg.Length - _rOffset, dest.Length);
            new ReadOnlySpan<byte>(seg.Pointer + _rOffset, n).CopyTo(dest);
            dest = dest[n..];
            Advance(n);
        }
        return true;
    }

    private void Advance(int n)
    {
        _rOffset += n;
        _rConsumed += n;
        while (_rIndex < _readableCount && _rOffset == _readable[_rIndex].Length)
        {
            _rIndex++;
            _rOffset = 0;
        }
    }

    internal bool TryRead<T>(out T value) where T : unmanaged
    {
        Unsafe.SkipInit(out value);
        return TryRead(new Span<byte>(Unsafe.AsPointer(ref value), sizeof(T)));
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
        if (length < 0 || _readableLength - _rConsumed < length)
        {
            return false;
        }
        int count = 0;
        while (length > 0)
        {
            ref IoSegment seg = ref _readable[_rIndex];
            int n = (int)Math.Min(seg.Length - _rOffset, length);
            AppendData(ref count, seg.Pointer + _rOffset, n);
            length -= n;
            Advance(n);
        }
        segments = _dataSegments.AsSpan(0, count);
        return true;
    }

    private void AppendData(ref int count, byte* p, int n)
    {
        if (count == _dataSegments.Length)
        {
            Array.Resize(ref _dataSegments, _dataSegments.Length * 2);
        }
        _dataSegments[count++] = new IoSegment(p, n);
    }

    // ---- writer -------------------------------------------------------------------------------------------------

    internal long WriteRemaining => _writableLength - _wWritten;
    internal long Written => _wWritten;

    /// <summary>Moves the writer to an absolute reply offset (0 to write the out header last).</summary>
    internal void SeekWriter(long offset)
    {
        _wIndex = 0;
        _wOffset = 0;
        _wWritten = 0;
        SkipWrite(offset);
    }

    internal bool SkipWrite(long n)
    {
        if (n > WriteRemaining)
        {
            return false;
        }
        while (n > 0)
        {
            int step = (int)Math.Min(_writable[_wIndex].Length - _wOffset, n);
            AdvanceWrite(step);
            n -= step;
        }
        return true;
    }

    private void AdvanceWrite(int n)
    {
        _wOffset += n;
        _wWritten += n;
        while (_wIndex < _writableCount && _wOffset == _writable[_wIndex].Length)
        {
            _wIndex++;
            _wOffset = 0;
        }
    }

    internal bool TryWrite(ReadOnlySpan<byte> src)
    {
        if (src.Length > WriteRemaining)
        {
            return false;
        }
        while (src.Length > 0)
        {
            ref IoSegment seg = ref _writable[_wIndex];
            int n = Math.Min(seg.Length - _wOffset, src.Length);
            src[..n].CopyTo(new Span<byte>(seg.Pointer + _wOffset, n));
            src = src[n..];
            AdvanceWrite(n);
        }
        return true;
    }

    internal bool TryWrite<T>(in T value) where T : unmanaged
    {
        fixed (T* p = &value)
        {
            return TryWrite(new ReadOnlySpan<byte>(p, sizeof(T)));
        }
    }

    /// <summary>Describes up to <paramref name="length"/> writable bytes from the writer position (READ destination).</summary>
    internal ReadOnlySpan<IoSegment> PeekWritableSegments(long length)
    {
        int count = 0;
        int index = _wIndex;
        int offset = _wOffset;
        length = Math.Min(length, WriteRemaining);
        while (length > 0 && index < _writableCount)
        {
            ref IoSegment seg = ref _writable[index];
            int n = (int)Math.Min(seg.Length - offset, length);
            AppendData(ref count, seg.Pointer + offset, n);
            length -= n;
            index++;
            offset = 0;
        }
        return _dataSegments.AsSpan(0, count);
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
