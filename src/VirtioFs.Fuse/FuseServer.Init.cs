using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

// INIT: version and flag negotiation, and the limits (max_write, max_pages, max_readahead) the kernel will use.
public sealed partial class FuseServer
{
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
}
