using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Fuse;

/// <summary>Outcome of <see cref="FuseServer.Handle"/>: the reply length, or no reply at all.</summary>
public readonly struct FuseReply : IEquatable<FuseReply>
{
    public FuseReply(int length) => Length = length;

    /// <summary>FORGET, BATCH_FORGET, INTERRUPT, or a request too broken to answer.</summary>
    public static FuseReply None => default;

    /// <summary>Bytes written into the writable segments (out header included); 0 when there is no reply.</summary>
    public int Length { get; }
    public bool HasReply => Length > 0;

    public bool Equals(FuseReply other) => Length == other.Length;
    public override bool Equals(object? obj) => obj is FuseReply r && Equals(r);
    public override int GetHashCode() => Length;
    public static bool operator ==(FuseReply a, FuseReply b) => a.Equals(b);
    public static bool operator !=(FuseReply a, FuseReply b) => !a.Equals(b);
}

/// <summary>
/// Transport-independent FUSE request dispatcher. A transport (virtio-fs queue or /dev/fuse) describes one request and
/// its reply space as segments; <see cref="Handle"/> parses the request in place, calls <see cref="IFileSystem"/>, and
/// writes the reply in place. Thread-safe: one <see cref="FuseRequestBuffers"/> per worker.
/// </summary>
public sealed class FuseServer
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

    private FuseReply DoInit(FuseRequestBuffers b, in FuseInHeader h, long argLen)
    {
        // fuse_init_in grew from 16 bytes (major, minor, max_readahead, flags) to 64 in 7.36: read what is there.
        if (argLen < 8 || !b.TryReadArgs((int)Math.Min(argLen, 64), out Span<byte> args))
        {
            return Error(b, h.unique, Errno.EINVAL);
        }
        FuseInitIn init = default;
        args.CopyTo(MemoryMarshal.AsBytes(new Span<FuseInitIn>(ref init)));

        if (init.major < FuseConstants.KernelVersion)
        {
            FuseLog.InitRefused(_logger, init.major, init.minor);
            return Error(b, h.unique, Errno.EPROTO);
        }
        if (init.major > FuseConstants.KernelVersion)
        {
            // fs/fuse/inode.c process_init_reply: a newer kernel retries INIT with our major; answer only the version.
            var versionOnly = new FuseInitOut { major = FuseConstants.KernelVersion, minor = FuseConstants.KernelMinorVersion };
            return Ok(b, h.unique, versionOnly);
        }
        if (init.minor < FuseConstants.MinimumMinorVersion)
        {
            FuseLog.InitRefused(_logger, init.major, init.minor);
            return Error(b, h.unique, Errno.EPROTO);
        }

        var kernel = (FuseInitFlags)init.flags;
        if ((kernel & FuseInitFlags.InitExt) != 0)
        {
            kernel |= (FuseInitFlags)((ulong)init.flags2 << 32);
        }
        FuseInitFlags want = FuseInitFlags.AsyncRead | FuseInitFlags.ParallelDirops | FuseInitFlags.BigWrites
            | FuseInitFlags.AtomicOTrunc | FuseInitFlags.MaxPages | FuseInitFlags.AsyncDio | FuseInitFlags.InitExt;
        if (_options.ReadDirPlus) want |= FuseInitFlags.DoReaddirplus | FuseInitFlags.ReaddirplusAuto;
        if (_options.WritebackCache) want |= FuseInitFlags.WritebackCache;
        if (_options.PosixLocks) want |= FuseInitFlags.PosixLocks;
        if (_options.FlockLocks) want |= FuseInitFlags.FlockLocks;
        if (_options.AnnounceSubmounts) want |= FuseInitFlags.Submounts;
        if (_options.HandleKillPrivV2) want |= FuseInitFlags.HandleKillprivV2;
        if (_options.SetxattrExt) want |= FuseInitFlags.SetxattrExt;
        if (_options.ExportSupport) want |= FuseInitFlags.ExportSupport;
        if (_options.DirectIoAllowMmap) want |= FuseInitFlags.DirectIoAllowMmap;
        FuseInitFlags required = FuseInitFlags.None;
        if (_options.PosixAcl) required |= FuseInitFlags.PosixAcl | FuseInitFlags.DontMask | FuseInitFlags.SetxattrExt;
        if (_options.SecurityLabel) required |= FuseInitFlags.SecurityCtx;
        if ((kernel & required) != required)
        {
            // virtiofsd's init() refuses the session (EPROTO) rather than silently serve without ACLs or labels.
            FuseLog.InitMissingFlags(_logger, required & ~kernel);
            return Error(b, h.unique, Errno.EPROTO);
        }
        want |= required;
        FuseInitFlags negotiated = want & kernel;

        if (_initialized)
        {
            // A second INIT without DESTROY: the guest rebooted or its driver was reloaded. Like virtiofsd, drop
            // everything the old session held so its inodes and handles do not leak.
            _fs.Destroy();
            _initialized = false;
        }
        int err = _fs.Init(negotiated);
        if (err != 0)
        {
            return Error(b, h.unique, err);
        }

        uint maxWrite = Math.Clamp(_options.MaxWrite, 4096u, FuseConstants.MaxMaxPages * 4096u);
        var reply = new FuseInitOut
        {
            major = FuseConstants.KernelVersion,
            minor = FuseConstants.KernelMinorVersion,
            max_readahead = Math.Min(init.max_readahead, _options.MaxReadahead),
            flags = (uint)((ulong)negotiated & 0xFFFF_FFFF),
            flags2 = (uint)((ulong)negotiated >> 32),
            max_background = _options.MaxBackground,
            congestion_threshold = _options.CongestionThreshold,
            max_write = maxWrite,
            time_gran = _options.TimeGran,
            max_pages = (ushort)((maxWrite + 4095) / 4096),
        };
        _negotiated = negotiated;
        _initialized = true;
        FuseLog.InitDone(_logger, init.major, init.minor, FuseConstants.KernelMinorVersion, negotiated, maxWrite);
        return Ok(b, h.unique, reply);
    }

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
        int err = _fs.Read(ctx, h.nodeid, r.fh, r.offset, dest, r.flags, out int n);
        if (err != 0)
        {
            return Error(b, h.unique, err);
        }
        if ((uint)n > Math.Min(r.size, (ulong)b.WriteRemaining))
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

    private FuseReply XattrReply(FuseRequestBuffers b, ulong unique, int err, uint size, ReadOnlySpan<byte> buffer, int len)
    {
        if (err != 0) return Error(b, unique, err);
        if (len < 0) return Error(b, unique, Errno.EIO);
        if (size == 0) return Ok(b, unique, new FuseGetxattrOut { size = (uint)len });
        return len > buffer.Length ? Error(b, unique, Errno.ERANGE) : OkBytes(b, unique, buffer[..len]);
    }

    // ---- argument parsing -----------------------------------------------------------------------------------------

    /// <summary>Largest security context value taken from a request (an SELinux label is well under 4 KiB).</summary>
    private const int MaxSecurityContext = 4096;

    /// <summary>
    /// With FUSE_SECURITY_CTX the kernel sends the new inode's security context with a create: since 7.38 (Linux 6.2)
    /// as a request extension after the arguments (in_header.total_extlen; fuse.h struct fuse_ext_header, whose types
    /// 0..31 are a fuse_secctx_header with nr_secctx = type), before that appended to the arguments after the name.
    /// Each of the nr_secctx records is struct fuse_secctx {size, padding}, a NUL-terminated xattr name and size bytes
    /// of value. The kernel sends at most one (fs/fuse/dir.c get_security_context); more, or a record that overruns
    /// its header, is malformed. False only for a malformed request.
    /// </summary>
    private bool TrySecurityContext(in FuseContext ctx, ReadOnlySpan<byte> trailingArgs, ReadOnlySpan<byte> extensions, out FuseContext result)
    {
        result = ctx;
        if ((_negotiated & FuseInitFlags.SecurityCtx) == 0) return true;
        ReadOnlySpan<byte> block = default;
        if (extensions.Length > 0)
        {
            while (extensions.Length > 0)
            {
                if (!MemoryMarshal.TryRead(extensions, out FuseExtHeader eh) || eh.size < 8 || eh.size % 8 != 0 || eh.size > (uint)extensions.Length)
                    return false;
                if (eh.type <= 31)
                {
                    if (!block.IsEmpty) return false; // two security context headers
                    block = extensions[..(int)eh.size];
                }
                extensions = extensions[(int)eh.size..];
            }
        }
        else if (trailingArgs.Length >= 8)
        {
            if (!MemoryMarshal.TryRead(trailingArgs, out FuseExtHeader eh) || eh.size < 8 || eh.size > (uint)trailingArgs.Length) return false;
            block = trailingArgs[..(int)eh.size];
        }
        if (block.IsEmpty) return true;
        uint count = MemoryMarshal.Read<FuseExtHeader>(block).type;
        if (count == 0) return true;
        if (count > 1) return false;
        ReadOnlySpan<byte> rest = block[8..];
        if (!Take(ref rest, out FuseExtHeader sc) || !TakeName(ref rest, out ReadOnlySpan<byte> name)) return false;
        if (name.IsEmpty || name.Length > 255 || sc.size > MaxSecurityContext || sc.size > (uint)rest.Length) return false;
        result = new FuseContext(ctx.Uid, ctx.Gid, ctx.Pid, ctx.Unique)
        {
            SecurityContext = new FuseSecurityContext(name.ToArray(), rest[..(int)sc.size].ToArray()),
        };
        return true;
    }

    private static bool Take<T>(ref ReadOnlySpan<byte> args, out T value) where T : unmanaged
    {
        if (!MemoryMarshal.TryRead(args, out value))
        {
            return false;
        }
        args = args[System.Runtime.CompilerServices.Unsafe.SizeOf<T>()..];
        return true;
    }

    /// <summary>A NUL-terminated name; the NUL must be inside the arguments.</summary>
    private static bool TakeName(ref ReadOnlySpan<byte> args, out ReadOnlySpan<byte> name)
    {
        int nul = args.IndexOf((byte)0);
        if (nul < 0)
        {
            name = default;
            return false;
        }
        name = args[..nul];
        args = args[(nul + 1)..];
        return true;
    }

    // ---- replies ------------------------------------------------------------------------------------------------

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
