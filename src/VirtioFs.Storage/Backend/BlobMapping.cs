using System.IO.MemoryMappedFiles;
using Microsoft.Win32.SafeHandles;

namespace VirtioFs.Storage.Backend;

/// <summary>
/// A backend whose blobs are files on this host, which it can map: the cache then decompresses and verifies a chunk
/// straight out of the page cache instead of pread()ing it into a buffer first, which costs a copy of every stored
/// byte (the largest single item in a cold-read profile of the local backend).
/// </summary>
public interface IMappedBlobBackend : IBlobBackend
{
    /// <summary>
    /// Lends [offset, offset + length) of blob <paramref name="blobId"/> as mapped memory, until
    /// <see cref="BlobRange.Dispose"/>. False (use <see cref="IBlobBackend.ReadAt"/>) when the blob cannot be mapped,
    /// the range is not inside the blob as it was when mapped, or the backend is closing.
    /// </summary>
    bool TryMap(string blobId, ulong offset, int length, out BlobRange range);
}

/// <summary>Mapped bytes of a blob, valid until disposed (the mapping outlives every range lent from it).</summary>
public readonly ref struct BlobRange
{
    private readonly MappedBlob? _owner;

    internal BlobRange(MappedBlob owner, ReadOnlySpan<byte> data)
    {
        _owner = owner;
        Data = data;
    }

    public ReadOnlySpan<byte> Data { get; }

    public void Dispose() => _owner?.Release();
}

/// <summary>
/// One blob file mapped read-only, whole, as it was when first read. Lent ranges are counted: closing unmaps only when
/// the last one is returned, so a read in progress during an unmount never touches unmapped memory.
/// </summary>
/// <remarks>
/// A mapped file that shrinks under us would fault (SIGBUS) where pread would return a short read. Blob files are
/// content-addressed and written once, by the image tool or the snapshotter, before they are mounted; a blob that is
/// truncated while mounted is a broken host, not hostile input. The range check still keeps every access inside the
/// size the file had when it was mapped.
/// </remarks>
internal sealed class MappedBlob
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly unsafe byte* _base;
    private int _users;
    private int _closing;
    private int _released;

    public long Length { get; }

    private unsafe MappedBlob(MemoryMappedFile file, MemoryMappedViewAccessor view, byte* start, long length)
    {
        _file = file;
        _view = view;
        _base = start;
        Length = length;
    }

    /// <summary>Maps the whole file of <paramref name="handle"/>; null when it is empty or cannot be mapped.</summary>
    public static unsafe MappedBlob? TryOpen(SafeFileHandle handle)
    {
        MemoryMappedFile? file = null;
        try
        {
            long length = RandomAccess.GetLength(handle);
            if (length <= 0) return null;
            file = MemoryMappedFile.CreateFromFile(handle, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
            var view = file.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* start = null;
            // SAFETY: AcquirePointer pins the view's mapping until the ReleasePointer in Unmap; start is only read.
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
            // No fault-driven readahead: the backend asks for each lent range before it is touched (PageCacheAdvice).
            PageCacheAdvice.NoReadahead(start, (ulong)(length + view.PointerOffset));
            return new MappedBlob(file, view, start + view.PointerOffset, length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            file?.Dispose();
            return null;
        }
    }

    public unsafe bool TryLend(ulong offset, int length, out BlobRange range)
    {
        range = default;
        if (length < 0 || offset > (ulong)Length || (ulong)length > (ulong)Length - offset) return false;
        Interlocked.Increment(ref _users);
        if (Volatile.Read(ref _closing) != 0)
        {
            Release();
            return false;
        }
        // SAFETY: [offset, offset + length) lies inside the Length bytes mapped at _base (checked above), and the
        // mapping stays until the last lent range is released (_users), which Close waits for.
        range = new BlobRange(this, new ReadOnlySpan<byte>(_base + offset, length));
        return true;
    }

    public void Release()
    {
        if (Interlocked.Decrement(ref _users) == 0 && Volatile.Read(ref _closing) != 0) Unmap();
    }

    /// <summary>No more lending; unmaps now, or when the last lent range comes back.</summary>
    public void Close()
    {
        Interlocked.Exchange(ref _closing, 1); // a full fence: TryLend's increment and this read cannot both miss
        if (Volatile.Read(ref _users) == 0) Unmap();
    }

    private void Unmap()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0) return;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }
}
