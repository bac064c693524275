namespace VirtioFs.Fuse;

/// <summary>Keeps memory a reply refers to unchanged until the transport has sent that reply.</summary>
public interface IReplyPin
{
    /// <summary>The transport has sent (or dropped) the reply: the memory pinned as <paramref name="token"/> may change.</summary>
    void Unpin(int token);
}

/// <summary>
/// READ data a filesystem leaves where it already is instead of copying it into the reply buffer. A transport that
/// writes its replies with writev (/dev/fuse) sends the referenced memory from there: the kernel copies it once, into
/// the reader's page cache, where a copy into the reply buffer first would make it twice. The virtio transport has no
/// such step (the reply buffers are the guest's memory, so the one copy is the filesystem's), and offers none of this.
/// </summary>
public interface IReplyReferences
{
    /// <summary>
    /// Makes READ data bytes [<paramref name="dataOffset"/>, + <paramref name="data"/>.Length) come from
    /// <paramref name="data"/> rather than from the destination segments, which the caller then skips without writing.
    /// References are taken in increasing, non-overlapping order. True: <paramref name="pin"/>.Unpin(<paramref name="token"/>)
    /// follows exactly once, after the reply has been sent or dropped. False: nothing was taken; copy the bytes instead.
    /// </summary>
    bool TryAdd(long dataOffset, IoSegment data, IReplyPin pin, int token);
}
