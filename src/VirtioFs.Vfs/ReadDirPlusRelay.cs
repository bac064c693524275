using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

/// <summary>
/// READDIRPLUS for a mounted filesystem. Its entries carry node ids that must be namespaced before the kernel sees
/// them, but <see cref="DirectoryWriter"/> writes straight into the reply and offers no hook, so the inner filesystem
/// fills a private reply instead: a private <see cref="FuseServer"/> runs a synthetic READDIRPLUS against it into
/// scratch memory, and the Vfs re-emits each direntplus record with its node id translated. The scratch is one chunk
/// (smaller than most kernel requests), and the Vfs asks again while the real reply has room, so an inner
/// filesystem never looks up many more entries than the guest takes (those it does are forgotten again).
/// </summary>
internal sealed unsafe class ReadDirPlusRelay : IDisposable
{
    internal const int Chunk = 4096;
    private const int InHeaderSize = 40;
    private const int OutHeaderSize = 16;
    private const int MaxPooled = 16;

    private readonly ILogger _logger;
    private readonly ConcurrentBag<Scratch> _pool = new();
    private volatile bool _disposed;

    public ReadDirPlusRelay(ILogger logger) => _logger = logger;

    /// <summary>Forwards the one request the private server dispatches to the filesystem being relayed.</summary>
    private sealed class Forwarder : IFileSystem
    {
        public IFileSystem? Target;

        public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer) =>
            Target is null ? Errno.EIO : Target.ReadDir(ctx, nodeId, handle, offset, writer);
    }

    internal sealed class Scratch : IDisposable
    {
        private readonly Forwarder _forwarder = new();
        private readonly FuseServer _server;
        private readonly FuseRequestBuffers _buffers = new(2);
        private readonly byte* _request;
        private readonly byte* _reply;
        private const int RequestSize = InHeaderSize + 64;
        private const int ReplySize = OutHeaderSize + Chunk;

        public Scratch(ILogger logger)
        {
            _request = (byte*)NativeMemory.AllocZeroed(RequestSize);
            _reply = (byte*)NativeMemory.AllocZeroed(ReplySize);
            _server = new FuseServer(_forwarder, new FuseServerOptions(), logger);
            // The private server answers nothing before INIT: negotiate once, with no optional flags.
            var h = new FuseInHeader { len = InHeaderSize + 64, opcode = (uint)FuseOpcode.Init, unique = 1 };
            var init = new FuseInitIn { major = FuseConstants.KernelVersion, minor = FuseConstants.KernelMinorVersion };
            // SAFETY: _request holds RequestSize (104) bytes: a 40-byte header and a 64-byte fuse_init_in.
            *(FuseInHeader*)_request = h;
            *(FuseInitIn*)(_request + InHeaderSize) = init;
            Run(RequestSize);
        }

        private int Run(int requestLength)
        {
            _buffers.Clear();
            _buffers.AddReadable(_request, requestLength);
            _buffers.AddWritable(_reply, ReplySize);
            FuseReply r = _server.Handle(_buffers);
            if (!r.HasReply) return -Errno.EIO;
            // SAFETY: a reply always starts with the 16-byte out header inside _reply.
            var oh = *(FuseOutHeader*)_reply;
            if (oh.error != 0) return oh.error;
            return (int)Math.Min(oh.len, (uint)ReplySize);
        }

        /// <summary>
        /// Runs READDIRPLUS on <paramref name="fs"/> from <paramref name="offset"/>; on success <paramref name="records"/>
        /// is the reply body (direntplus records), valid until the next call on this scratch.
        /// </summary>
        public int Fill(in FuseContext ctx, IFileSystem fs, ulong nodeId, ulong handle, ulong offset, out ReadOnlySpan<byte> records)
        {
            records = default;
            var h = new FuseInHeader
            {
                len = InHeaderSize + 40, opcode = (uint)FuseOpcode.ReadDirPlus, unique = ctx.Unique == 0 ? 1 : ctx.Unique,
                nodeid = nodeId, uid = ctx.Uid, gid = ctx.Gid, pid = ctx.Pid,
            };
            var ri = new FuseReadIn { fh = handle, offset = offset, size = Chunk };
            // SAFETY: _request holds 104 bytes, enough for the 40-byte header and the 40-byte fuse_read_in.
            *(FuseInHeader*)_request = h;
            *(FuseReadIn*)(_request + InHeaderSize) = ri;
            _forwarder.Target = fs;
            try
            {
                int n = Run(InHeaderSize + 40);
                if (n < 0) return -n;
                if (n < OutHeaderSize) return Errno.EIO;
                // SAFETY: n <= ReplySize, the size of _reply.
                records = new ReadOnlySpan<byte>(_reply + OutHeaderSize, n - OutHeaderSize);
                return 0;
            }
            finally
            {
                _forwarder.Target = null;
            }
        }

        public void Dispose()
        {
            _buffers.Dispose();
            NativeMemory.Free(_request);
            NativeMemory.Free(_reply);
        }
    }

    public Scratch Rent() => _pool.TryTake(out Scratch? s) ? s : new Scratch(_logger);

    public void Return(Scratch s)
    {
        if (_disposed || _pool.Count >= MaxPooled)
        {
            s.Dispose();
            return;
        }
        _pool.Add(s);
    }

    /// <summary>Reads one direntplus record at the start of <paramref name="records"/>; false when malformed.</summary>
    public static bool TryParse(ReadOnlySpan<byte> records, out FuseDirentplus d, out ReadOnlySpan<byte> name, out int size)
    {
        const int Header = 152;
        name = default;
        size = 0;
        if (!MemoryMarshal.TryRead(records, out d)) return false;
        uint len = d.dirent.namelen;
        if (len is 0 or > 255) return false;
        size = (Header + (int)len + 7) & ~7;
        if (size > records.Length) return false;
        name = records.Slice(Header, (int)len);
        return true;
    }

    public static FuseEntry ToEntry(in FuseEntryOut o) => new()
    {
        NodeId = o.nodeid,
        Generation = o.generation,
        Attr = o.attr,
        EntryTimeout = ToTimeSpan(o.entry_valid, o.entry_valid_nsec),
        AttrTimeout = ToTimeSpan(o.attr_valid, o.attr_valid_nsec),
    };

    private static TimeSpan ToTimeSpan(ulong seconds, uint nanoseconds)
    {
        const ulong MaxSeconds = (ulong)(long.MaxValue / TimeSpan.TicksPerSecond) - 1;
        if (seconds >= MaxSeconds) return TimeSpan.FromTicks((long)MaxSeconds * TimeSpan.TicksPerSecond);
        return TimeSpan.FromTicks((long)seconds * TimeSpan.TicksPerSecond + Math.Min(nanoseconds, 999_999_999u) / 100);
    }

    public void Dispose()
    {
        _disposed = true;
        while (_pool.TryTake(out Scratch? s)) s.Dispose();
    }
}
