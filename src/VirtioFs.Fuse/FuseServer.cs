using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Fuse;

/// <summary>
/// Transport-independent FUSE request dispatcher. A transport (virtio-fs queue or /dev/fuse) describes one request and
/// its reply space as segments; <see cref="Handle"/> parses the request in place, calls <see cref="IFileSystem"/>, and
/// writes the reply in place. Thread-safe: one <see cref="FuseRequestBuffers"/> per worker.
/// This file holds the request path (header checks, dispatch, READ, WRITE, BATCH_FORGET); INIT, argument parsing and
/// reply building are in FuseServer.Init.cs, FuseServer.Arguments.cs and FuseServer.Replies.cs.
/// </summary>
public sealed partial class FuseServer
{
    private const int InHeaderSize = 40;
    private const int OutHeaderSize = 16;
    private const int MaxLinkTarget = 4096;
    private const int ForgetChunk = 64;

    private readonly IFileSystem _fs;
    private readonly FuseServerOptions _options;
    private readonly ILogger _logger;
    private volatile bool _initialized;
    private FuseInitFlags _negotiated;

    public FuseServer(IFileSystem fs, FuseServerOptions options, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(fs);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        _fs = fs;
        _options = options;
        _logger = logger;
    }

    /// <summary>Flags agreed at INIT (None before).</summary>
    public FuseInitFlags NegotiatedFlags => _negotiated;
    public bool IsInitialized => _initialized;

    /// <summary>
    /// Takes over a session another daemon initialised (failover, hot upgrade): the kernel sends INIT once per
    /// connection, so the successor adopts the flags its predecessor agreed instead of waiting for one. Returns the
    /// filesystem's errno from <see cref="IFileSystem.Init"/> (0 = resumed).
    /// </summary>
    public int Resume(FuseInitFlags negotiated)
    {
        if (_initialized) return Errno.EINVAL;
        int err = _fs.Init(negotiated);
        if (err != 0) return err;
        _negotiated = negotiated;
        _initialized = true;
        return 0;
    }

    /// <summary>
    /// Handles one request. Never throws for bad input: a request whose header cannot be read gets no reply; a truncated or
    /// inconsistent one gets EINVAL; filesystem exceptions become EIO.
    /// </summary>
    public FuseReply Handle(FuseRequestBuffers request)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.ResetCursors();
        if (!request.TryRead(out FuseInHeader h))
        {
            FuseLog.Malformed(_logger, 0, 0, "request shorter than fuse_in_header");
            return FuseReply.None;
        }
        var op = (FuseOpcode)h.opcode;
        long argLen = (long)h.len - InHeaderSize - h.total_extlen * 8L;
        if (h.len < InHeaderSize || h.len > request.ReadableLength || argLen < 0)
        {
            FuseLog.Malformed(_logger, h.opcode, h.unique, "length field inconsistent with the request");
            return IsNoReply(op) ? FuseReply.None : Error(request, h.unique, Errno.EINVAL);
        }

        if (op == FuseOpcode.Init)
        {
            return DoInit(request, h, argLen);
        }
        if (!_initialized)
        {
            FuseLog.BeforeInit(_logger, h.opcode);
            return IsNoReply(op) ? FuseReply.None : Error(request, h.unique, Errno.EIO);
        }

        var ctx = new FuseContext(h.uid, h.gid, h.pid, h.unique);
        if (_options.Stats is { } stats)
        {
            // nydusd's /api/v1/metrics and /api/v1/metrics/inflight: counted here so every transport and every
            // filesystem (one image, or the Vfs of an API daemon) reports alike.
            request.ReplyErrno = 0;
            InflightToken token = stats.Begin(op, h.unique, h.nodeid);
            FuseReply reply = DispatchGuarded(request, op, h, ctx, argLen);
            long bytes = op == FuseOpcode.Read && request.ReplyErrno == 0 ? Math.Max(0, reply.Length - OutHeaderSize) : 0;
            stats.End(op, token, request.ReplyErrno, bytes);
            return reply;
        }
        return DispatchGuarded(request, op, h, ctx, argLen);
    }

    private FuseReply DispatchGuarded(FuseRequestBuffers request, FuseOpcode op, in FuseInHeader h, in FuseContext ctx, long argLen)
    {
        try
        {
            return Dispatch(request, op, h, ctx, argLen);
        }
#pragma warning disable CA1031 // A filesystem bug must not kill the worker or leave the guest waiting forever.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            FuseLog.FileSystemThrew(_logger, ex, op);
            return IsNoReply(op) ? FuseReply.None : Error(request, h.unique, Errno.EIO);
        }
    }

    private static bool IsNoReply(FuseOpcode op) =>
        op is FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt or FuseOpcode.NotifyReply;


    private FuseReply Dispatch(FuseRequestBuffers b, FuseOpcode op, in FuseInHeader h, in FuseContext ctx, long argLen)
    {
        ulong unique = h.unique;
        ulong node = h.nodeid;
        switch (op)
        {
            case FuseOpcode.Read:
                return DoRead(b, h, ctx, argLen);
            case FuseOpcode.Write:
                return DoWrite(b, h, ctx, argLen);
            case FuseOpcode.BatchForget:
                DoBatchForget(b, ctx, argLen);
                return FuseReply.None;
            case FuseOpcode.Interrupt:
            case FuseOpcode.NotifyReply:
                // Requests run to completion synchronously; there is nothing to interrupt.
                return FuseReply.None;
            case FuseOpcode.Bmap:
            case FuseOpcode.Ioctl:
            case FuseOpcode.Poll:
            case FuseOpcode.SetupMapping:
            case FuseOpcode.RemoveMapping:
                FuseLog.Unsupported(_logger, h.opcode);
                return Error(b, unique, Errno.ENOSYS);
        }

        // Request extensions (fuse.h struct fuse_ext_header, total_extlen 8-byte units) follow the arguments.
        long extLen = h.total_extlen * 8L;
        if (!b.TryReadArgs((int)Math.Min(argLen + extLen, int.MaxValue), out Span<byte> argSpan))
        {
            return Malformed(b, op, h, "arguments too large or truncated");
        }
        ReadOnlySpan<byte> args = argSpan[..(int)argLen];
        ReadOnlySpan<byte> extensions = argSpan[(int)argLen..];
        int err;
        switch (op)
        {
            case FuseOpcode.Lookup:
            {
                if (!TakeName(ref args, out var name)) return Malformed(b, op, h, "name");
                err = _fs.Lookup(ctx, node, name, out FuseEntry e);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToEntryOut(e));
            }
            case FuseOpcode.Forget:
            {
                if (Take(ref args, out FuseForgetIn f)) _fs.Forget(ctx, node, f.nlookup);
                return FuseReply.None;
            }
            case FuseOpcode.GetAttr:
            {
                if (!Take(ref args, out FuseGetattrIn g)) return Malformed(b, op, h, "getattr_in");
                ulong? fh = (g.getattr_flags & FuseConstants.FUSE_GETATTR_FH) != 0 ? g.fh : null;
                err = _fs.GetAttr(ctx, node, fh, out FuseAttr attr, out TimeSpan t);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToAttrOut(attr, t));
            }
            case FuseOpcode.SetAttr:
            {
                if (!Take(ref args, out FuseSetattrIn s)) return Malformed(b, op, h, "setattr_in");
                err = _fs.SetAttr(ctx, node, s, out FuseAttr attr, out TimeSpan t);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToAttrOut(attr, t));
            }
            case FuseOpcode.ReadLink:
            {
                Span<byte> target = b.ReplyScratch[..MaxLinkTarget];
                err = _fs.ReadLink(ctx, node, target, out int len);
                if (err != 0) return Error(b, unique, err);
                if ((uint)len > MaxLinkTarget) return Error(b, unique, Errno.EIO);
                return OkBytes(b, unique, target[..len]);
            }
            case FuseOpcode.Symlink:
            {
                if (!TakeName(ref args, out var name) || !TakeName(ref args, out var target)) return Malformed(b, op, h, "names");
                if (!TrySecurityContext(ctx, args, extensions, out FuseContext cctx)) return Malformed(b, op, h, "security context");
                err = _fs.Symlink(cctx, target, node, name, out FuseEntry e);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToEntryOut(e));
            }
            case FuseOpcode.MkNod:
            {
                if (!Take(ref args, out FuseMknodIn m) || !TakeName(ref args, out var name)) return Malformed(b, op, h, "mknod_in");
                if (!TrySecurityContext(ctx, args, extensions, out FuseContext cctx)) return Malformed(b, op, h, "security context");
                err = _fs.MkNod(cctx, node, name, m.mode, m.rdev, m.umask, out FuseEntry e);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToEntryOut(e));
            }
            case FuseOpcode.MkDir:
            {
                if (!Take(ref args, out FuseMkdirIn m) || !TakeName(ref args, out var name)) return Malformed(b, op, h, "mkdir_in");
                if (!TrySecurityContext(ctx, args, extensions, out FuseContext cctx)) return Malformed(b, op, h, "security context");
                err = _fs.MkDir(cctx, node, name, m.mode, m.umask, out FuseEntry e);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToEntryOut(e));
            }
            case FuseOpcode.Unlink:
            case FuseOpcode.RmDir:
            {
                if (!TakeName(ref args, out var name)) return Malformed(b, op, h, "name");
                err = op == FuseOpcode.Unlink ? _fs.Unlink(ctx, node, name) : _fs.RmDir(ctx, node, name);
                return Status(b, unique, err);
            }
            case FuseOpcode.Rename:
            {
                if (!Take(ref args, out FuseRenameIn r) || !TakeName(ref args, out var oldName) || !TakeName(ref args, out var newName))
                    return Malformed(b, op, h, "rename_in");
                return Status(b, unique, _fs.Rename(ctx, node, oldName, r.newdir, newName, 0));
            }
            case FuseOpcode.Rename2:
            {
                if (!Take(ref args, out FuseRename2In r) || !TakeName(ref args, out var oldName) || !TakeName(ref args, out var newName))
                    return Malformed(b, op, h, "rename2_in");
                return Status(b, unique, _fs.Rename(ctx, node, oldName, r.newdir, newName, r.flags));
            }
            case FuseOpcode.Link:
            {
                if (!Take(ref args, out FuseLinkIn l) || !TakeName(ref args, out var name)) return Malformed(b, op, h, "link_in");
                err = _fs.Link(ctx, l.oldnodeid, node, name, out FuseEntry e);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, ToEntryOut(e));
            }
            case FuseOpcode.Open:
            case FuseOpcode.OpenDir:
            {
                if (!Take(ref args, out FuseOpenIn o)) return Malformed(b, op, h, "open_in");
                FuseOpenResult r;
                err = op == FuseOpcode.Open ? _fs.Open(ctx, node, o.flags, o.open_flags, out r) : _fs.OpenDir(ctx, node, o.flags, out r);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, new FuseOpenOut { fh = r.Handle, open_flags = r.OpenFlags });
            }
            case FuseOpcode.StatFs:
            {
                err = _fs.StatFs(ctx, node, out FuseKstatfs st);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, new FuseStatfsOut { st = st });
            }
            case FuseOpcode.Release:
            case FuseOpcode.ReleaseDir:
            {
                if (!Take(ref args, out FuseReleaseIn r)) return Malformed(b, op, h, "release_in");
                err = op == FuseOpcode.Release
                    ? _fs.Release(ctx, node, r.fh, r.flags, r.release_flags, r.lock_owner)
                    : _fs.ReleaseDir(ctx, node, r.fh, r.flags);
                return Status(b, unique, err);
            }
            case FuseOpcode.Fsync:
            case FuseOpcode.FsyncDir:
            {
                if (!Take(ref args, out FuseFsyncIn f)) return Malformed(b, op, h, "fsync_in");
                bool data = (f.fsync_flags & FuseConstants.FUSE_FSYNC_FDATASYNC) != 0;
                err = op == FuseOpcode.Fsync ? _fs.Fsync(ctx, node, f.fh, data) : _fs.FsyncDir(ctx, node, f.fh, data);
                return Status(b, unique, err);
            }
            case FuseOpcode.Flush:
            {
                if (!Take(ref args, out FuseFlushIn f)) return Malformed(b, op, h, "flush_in");
                return Status(b, unique, _fs.Flush(ctx, node, f.fh, f.lock_owner));
            }
            case FuseOpcode.SetXattr:
            {
                // Without FUSE_SETXATTR_EXT the kernel sends the 8-byte compat struct (fuse.h FUSE_COMPAT_SETXATTR_IN_SIZE).
                FuseSetxattrIn s = default;
                if ((_negotiated & FuseInitFlags.SetxattrExt) != 0)
                {
                    if (!Take(ref args, out s)) return Malformed(b, op, h, "setxattr_in");
                }
                else
                {
                    if (!Take(ref args, out FuseGetxattrIn compat)) return Malformed(b, op, h, "setxattr_in");
                    s.size = compat.size;
                    s.flags = compat.padding;
                }
                if (!TakeName(ref args, out var name) || s.size > (uint)args.Length) return Malformed(b, op, h, "xattr value");
                return Status(b, unique, _fs.SetXattr(ctx, node, name, args[..(int)s.size], s.flags, s.setxattr_flags));
            }
            case FuseOpcode.GetXattr:
            {
                if (!Take(ref args, out FuseGetxattrIn g) || !TakeName(ref args, out var name)) return Malformed(b, op, h, "getxattr_in");
                Span<byte> value = g.size == 0 ? Span<byte>.Empty : b.ReplyScratch[..(int)Math.Min(g.size, 65536u)];
                err = _fs.GetXattr(ctx, node, name, value, out int len);
                return XattrReply(b, unique, err, g.size, value, len);
            }
            case FuseOpcode.ListXattr:
            {
                if (!Take(ref args, out FuseGetxattrIn g)) return Malformed(b, op, h, "getxattr_in");
                Span<byte> list = g.size == 0 ? Span<byte>.Empty : b.ReplyScratch[..(int)Math.Min(g.size, 65536u)];
                err = _fs.ListXattr(ctx, node, list, out int len);
                return XattrReply(b, unique, err, g.size, list, len);
            }
            case FuseOpcode.RemoveXattr:
            {
                if (!TakeName(ref args, out var name)) return Malformed(b, op, h, "name");
                return Status(b, unique, _fs.RemoveXattr(ctx, node, name));
            }
            case FuseOpcode.ReadDir:
            case FuseOpcode.ReadDirPlus:
            {
                if (!Take(ref args, out FuseReadIn r)) return Malformed(b, op, h, "read_in");
                if (!b.SkipWrite(OutHeaderSize)) return FuseReply.None;
                long limit = Math.Min(r.size, b.WriteRemaining);
                DirectoryWriter w = b.DirWriter;
                w.Reset(op == FuseOpcode.ReadDirPlus, limit);
                err = _fs.ReadDir(ctx, node, r.fh, r.offset, w);
                // Entries already emitted are still valid: report them and let the error surface on the next call.
                if (err != 0 && w.BytesWritten == 0) return Error(b, unique, err);
                return Finish(b, unique, OutHeaderSize + w.BytesWritten);
            }
            case FuseOpcode.GetLk:
            {
                if (!Take(ref args, out FuseLkIn l)) return Malformed(b, op, h, "lk_in");
                err = _fs.GetLk(ctx, node, l.fh, l.owner, l.lk, l.lk_flags, out FuseFileLock res);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, new FuseLkOut { lk = res });
            }
            case FuseOpcode.SetLk:
            case FuseOpcode.SetLkW:
            {
                if (!Take(ref args, out FuseLkIn l)) return Malformed(b, op, h, "lk_in");
                return Status(b, unique, _fs.SetLk(ctx, node, l.fh, l.owner, l.lk, l.lk_flags, op == FuseOpcode.SetLkW));
            }
            case FuseOpcode.Access:
            {
                if (!Take(ref args, out FuseAccessIn a)) return Malformed(b, op, h, "access_in");
                return Status(b, unique, _fs.Access(ctx, node, a.mask));
            }
            case FuseOpcode.Create:
            case FuseOpcode.TmpFile:
            {
                if (!Take(ref args, out FuseCreateIn c)) return Malformed(b, op, h, "create_in");
                FuseEntry e;
                FuseOpenResult r;
                if (op == FuseOpcode.Create)
                {
                    if (!TakeName(ref args, out var name)) return Malformed(b, op, h, "name");
                    if (!TrySecurityContext(ctx, args, extensions, out FuseContext cctx)) return Malformed(b, op, h, "security context");
                    err = _fs.Create(cctx, node, name, c.mode, c.flags, c.umask, c.open_flags, out e, out r);
                }
                else
                {
                    // TMPFILE (Linux 6.7+) always sends its security context as an extension.
                    if (!TrySecurityContext(ctx, default, extensions, out FuseContext cctx)) return Malformed(b, op, h, "security context");
                    err = _fs.TmpFile(cctx, node, c.mode, c.flags, c.umask, c.open_flags, out e, out r);
                }
                if (err != 0) return Error(b, unique, err);
                if (!b.SkipWrite(OutHeaderSize) || !b.TryWrite(ToEntryOut(e))
                    || !b.TryWrite(new FuseOpenOut { fh = r.Handle, open_flags = r.OpenFlags }))
                {
                    return Error(b, unique, Errno.EIO);
                }
                return Finish(b, unique, b.Written);
            }
            case FuseOpcode.Destroy:
                FuseLog.Destroyed(_logger);
                _fs.Destroy();
                _initialized = false;
                return Status(b, unique, 0);
            case FuseOpcode.Fallocate:
            {
                if (!Take(ref args, out FuseFallocateIn f)) return Malformed(b, op, h, "fallocate_in");
                return Status(b, unique, _fs.Fallocate(ctx, node, f.fh, f.offset, f.length, f.mode));
            }
            case FuseOpcode.Lseek:
            {
                if (!Take(ref args, out FuseLseekIn l)) return Malformed(b, op, h, "lseek_in");
                err = _fs.Lseek(ctx, node, l.fh, l.offset, l.whence, out ulong pos);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, new FuseLseekOut { offset = pos });
            }
            case FuseOpcode.CopyFileRange:
            {
                if (!Take(ref args, out FuseCopyFileRangeIn c)) return Malformed(b, op, h, "copy_file_range_in");
                err = _fs.CopyFileRange(ctx, node, c.fh_in, c.off_in, c.nodeid_out, c.fh_out, c.off_out, c.len, c.flags, out ulong copied);
                return err != 0 ? Error(b, unique, err) : Ok(b, unique, new FuseWriteOut { size = (uint)Math.Min(copied, uint.MaxValue) });
            }
            case FuseOpcode.SyncFs:
                return Status(b, unique, _fs.SyncFs(ctx, node));
            default:
                FuseLog.Unsupported(_logger, h.opcode);
                return Error(b, unique, Errno.ENOSYS);
        }
    }

    private FuseReply DoRead(FuseRequestBuffers b, in FuseInHeader h, in FuseContext ctx, long argLen)
    {
        if (argLen < 40 || !b.TryRead(out FuseReadIn r))
        {
            return Malformed(b, FuseOpcode.Read, h, "read_in");
        }
        if (!b.SkipWrite(OutHeaderSize))
        {
            return FuseReply.None;
        }
        ReadOnlySpan<IoSegment> dest = b.PeekWritableSegments(r.size);
        // Over /dev/fuse the filesystem may leave data where it lies (a decoded chunk) and the reply is written with
        // writev from there: the kernel's copy into the reader's page cache is then the only one.
        int err = b.ReplyByReference
            ? _fs.ReadOrReference(ctx, h.nodeid, r.fh, r.offset, dest, b.BeginReferences(OutHeaderSize), r.flags, out int n)
            : _fs.Read(ctx, h.nodeid, r.fh, r.offset, dest, r.flags, out n);
        if (err != 0)
        {
            return Error(b, h.unique, err);
        }
        if ((uint)n > Math.Min(r.size, (ulong)b.WriteRemaining) || b.ReferencesEnd > OutHeaderSize + (long)n)
        {
            return Error(b, h.unique, Errno.EIO);
        }
        return Finish(b, h.unique, OutHeaderSize + n);
    }

    private FuseReply DoWrite(FuseRequestBuffers b, in FuseInHeader h, in FuseContext ctx, long argLen)
    {
        // The payload stays where it is (guest memory): only the 40-byte fuse_write_in is copied.
        if (argLen < 40 || !b.TryRead(out FuseWriteIn w) || w.size > argLen - 40 || w.size > _options.MaxWrite + 4096L
            || !b.TryTakeSegments(w.size, out ReadOnlySpan<IoSegment> src))
        {
            return Malformed(b, FuseOpcode.Write, h, "write_in or payload");
        }
        int err = _fs.Write(ctx, h.nodeid, w.fh, w.offset, src, w.write_flags, w.flags, out int n);
        if (err != 0)
        {
            return Error(b, h.unique, err);
        }
        return (uint)n > w.size ? Error(b, h.unique, Errno.EIO) : Ok(b, h.unique, new FuseWriteOut { size = (uint)n });
    }

    private void DoBatchForget(FuseRequestBuffers b, in FuseContext ctx, long argLen)
    {
        if (argLen < 8 || !b.TryRead(out FuseBatchForgetIn bf))
        {
            return;
        }
        // Never trust count: forget only the entries actually present.
        long count = Math.Min(bf.count, (argLen - 8) / 16);
        Span<FuseForgetOne> chunk = stackalloc FuseForgetOne[ForgetChunk];
        while (count > 0)
        {
            int n = (int)Math.Min(count, ForgetChunk);
            if (!b.TryRead(MemoryMarshal.AsBytes(chunk[..n])))
            {
                return;
            }
            _fs.BatchForget(ctx, chunk[..n]);
            count -= n;
        }
    }
}
