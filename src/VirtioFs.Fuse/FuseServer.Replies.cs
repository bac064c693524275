namespace VirtioFs.Fuse;

public sealed partial class FuseServer
{
    // ---- replies ------------------------------------------------------------------------------------------------

    private FuseReply XattrReply(FuseRequestBuffers b, ulong unique, int err, uint size, ReadOnlySpan<byte> buffer, int len)
    {
        if (err != 0) return Error(b, unique, err);
        if (len < 0) return Error(b, unique, Errno.EIO);
        if (size == 0) return Ok(b, unique, new FuseGetxattrOut { size = (uint)len });
        return len > buffer.Length ? Error(b, unique, Errno.ERANGE) : OkBytes(b, unique, buffer[..len]);
    }

    internal static FuseEntryOut ToEntryOut(in FuseEntry e)
    {
        (ulong es, uint ens) = Split(e.EntryTimeout);
        (ulong @as, uint ans) = Split(e.AttrTimeout);
        return new FuseEntryOut
        {
            nodeid = e.NodeId,
            generation = e.Generation,
            entry_valid = es,
            entry_valid_nsec = ens,
            attr_valid = @as,
            attr_valid_nsec = ans,
            attr = e.Attr,
        };
    }

    private static FuseAttrOut ToAttrOut(in FuseAttr attr, TimeSpan timeout)
    {
        (ulong s, uint ns) = Split(timeout);
        return new FuseAttrOut { attr_valid = s, attr_valid_nsec = ns, attr = attr };
    }

    private static (ulong Seconds, uint Nanoseconds) Split(TimeSpan t)
    {
        if (t <= TimeSpan.Zero) return (0, 0);
        long ticks = t.Ticks;
        return ((ulong)(ticks / TimeSpan.TicksPerSecond), (uint)(ticks % TimeSpan.TicksPerSecond * 100));
    }

    private FuseReply Malformed(FuseRequestBuffers b, FuseOpcode op, in FuseInHeader h, string what)
    {
        FuseLog.Malformed(_logger, (uint)op, h.unique, what);
        return Error(b, h.unique, Errno.EINVAL);
    }

    private static FuseReply Status(FuseRequestBuffers b, ulong unique, int err) =>
        err != 0 ? Error(b, unique, err) : Finish(b, unique, OutHeaderSize);

    private static FuseReply Error(FuseRequestBuffers b, ulong unique, int errno)
    {
        // The kernel rejects error values outside (-4096, 0]: fs/fuse/dev.c fuse_dev_do_write.
        if (errno <= 0 || errno >= 4096)
        {
            errno = Errno.EIO;
        }
        // An error reply carries no data: whatever a READ referenced is not sent.
        b.ReleaseReferences();
        b.SeekWriter(0);
        if (b.WriteRemaining < OutHeaderSize)
        {
            return FuseReply.None;
        }
        b.ReplyErrno = errno;
        b.TryWrite(new FuseOutHeader { len = OutHeaderSize, error = -errno, unique = unique });
        return new FuseReply(OutHeaderSize);
    }

    private static FuseReply Ok<T>(FuseRequestBuffers b, ulong unique, in T body) where T : unmanaged
    {
        b.SeekWriter(0);
        if (!b.SkipWrite(OutHeaderSize) || !b.TryWrite(body))
        {
            return Error(b, unique, Errno.ERANGE);
        }
        return Finish(b, unique, b.Written);
    }

    private static FuseReply OkBytes(FuseRequestBuffers b, ulong unique, ReadOnlySpan<byte> body)
    {
        b.SeekWriter(0);
        if (!b.SkipWrite(OutHeaderSize) || !b.TryWrite(body))
        {
            return Error(b, unique, Errno.ERANGE);
        }
        return Finish(b, unique, b.Written);
    }

    private static FuseReply Finish(FuseRequestBuffers b, ulong unique, long length)
    {
        b.SeekWriter(0);
        b.ReplyErrno = 0;
        // A guest that gave less reply space than an out header gets no reply, as in Error: claiming the 16 bytes
        // anyway would report more written than its buffers hold (found by the fuse fuzz target, RELEASE).
        if (!b.TryWrite(new FuseOutHeader { len = (uint)length, error = 0, unique = unique }))
        {
            return FuseReply.None;
        }
        return new FuseReply((int)length);
    }
}
