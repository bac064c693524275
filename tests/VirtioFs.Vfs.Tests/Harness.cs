using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;

namespace VirtioFs.Vfs.Tests;

/// <summary>Drives a FuseServer over a Vfs with hand-built requests and decodes the replies.</summary>
internal sealed unsafe class Harness : IDisposable
{
    private readonly byte* _request;
    private readonly byte* _reply;
    private const int Capacity = 256 * 1024;
    private ulong _unique = 10;

    public Harness(Vfs vfs)
    {
        Vfs = vfs;
        Server = new FuseServer(vfs, new FuseServerOptions(), NullLogger.Instance);
        _request = (byte*)NativeMemory.AllocZeroed(Capacity);
        _reply = (byte*)NativeMemory.AllocZeroed(Capacity);
    }

    public Vfs Vfs { get; }
    public FuseServer Server { get; }
    public FuseRequestBuffers Buffers { get; } = new();

    public static byte[] Bytes<T>(in T value) where T : unmanaged
    {
        byte[] b = new byte[Unsafe.SizeOf<T>()];
        MemoryMarshal.Write(b, in value);
        return b;
    }

    public static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    /// <summary>Sends one request; returns (error, body).</summary>
    public (int Error, byte[] Body) Send(FuseOpcode op, ulong node, byte[] args, int replySize = 64 * 1024)
    {
        var h = new FuseInHeader { len = (uint)(40 + args.Length), opcode = (uint)op, unique = _unique++, nodeid = node, uid = 0, gid = 0, pid = 1 };
        new Span<byte>(_request, Capacity).Clear();
        MemoryMarshal.Write(new Span<byte>(_request, 40), in h);
        args.CopyTo(new Span<byte>(_request + 40, args.Length));
        Buffers.Clear();
        Buffers.AddReadable(_request, 40 + args.Length);
        Buffers.AddWritable(_reply, replySize);
        FuseReply r = Server.Handle(Buffers);
        if (!r.HasReply) return (0, []);
        var oh = MemoryMarshal.Read<FuseOutHeader>(new ReadOnlySpan<byte>(_reply, 16));
        return (-oh.error, new ReadOnlySpan<byte>(_reply + 16, r.Length - 16).ToArray());
    }

    public void Init(uint flags = 0xFFFF_FFFF)
    {
        var init = new FuseInitIn { major = 7, minor = 38, max_readahead = 128 * 1024, flags = flags };
        Assert.Equal(0, Send(FuseOpcode.Init, 0, Bytes(init)).Error);
    }

    public int Lookup(ulong parent, string name, out FuseEntryOut e)
    {
        var (err, body) = Send(FuseOpcode.Lookup, parent, Name(name));
        e = err == 0 ? MemoryMarshal.Read<FuseEntryOut>(body) : default;
        return err;
    }

    public ulong LookupOk(ulong parent, string name)
    {
        Assert.Equal(0, Lookup(parent, name, out FuseEntryOut e));
        return e.nodeid;
    }

    public int GetAttr(ulong node, out FuseAttr attr)
    {
        var (err, body) = Send(FuseOpcode.GetAttr, node, Bytes(new FuseGetattrIn()));
        attr = err == 0 ? MemoryMarshal.Read<FuseAttrOut>(body).attr : default;
        return err;
    }

    public int Open(ulong node, out ulong fh, bool dir = false)
    {
        var (err, body) = Send(dir ? FuseOpcode.OpenDir : FuseOpcode.Open, node, Bytes(new FuseOpenIn()));
        fh = err == 0 ? MemoryMarshal.Read<FuseOpenOut>(body).fh : 0;
        return err;
    }

    public int Read(ulong node, ulong fh, out byte[] data, uint size = 4096)
    {
        var (err, body) = Send(FuseOpcode.Read, node, Bytes(new FuseReadIn { fh = fh, size = size }));
        data = body;
        return err;
    }

    public void Forget(ulong node, ulong n) => Send(FuseOpcode.Forget, node, Bytes(new FuseForgetIn { nlookup = n }));

    public readonly record struct Dirent(string Name, ulong Ino, ulong Off, uint Type, ulong NodeId);

    /// <summary>One READDIR(PLUS) call.</summary>
    public int ReadDir(ulong node, ulong fh, ulong offset, bool plus, uint size, out List<Dirent> entries)
    {
        entries = [];
        var (err, body) = Send(plus ? FuseOpcode.ReadDirPlus : FuseOpcode.ReadDir, node, Bytes(new FuseReadIn { fh = fh, offset = offset, size = size }));
        if (err != 0) return err;
        int pos = 0;
        while (pos < body.Length)
        {
            ulong nodeId = 0;
            int header = 24;
            if (plus)
            {
                nodeId = MemoryMarshal.Read<FuseEntryOut>(body.AsSpan(pos)).nodeid;
                pos += 128;
            }
            var d = MemoryMarshal.Read<FuseDirent>(body.AsSpan(pos));
            string name = Encoding.UTF8.GetString(body, pos + header, (int)d.namelen);
            entries.Add(new Dirent(name, d.ino, d.off, d.type, nodeId));
            pos += (header + (int)d.namelen + 7) & ~7;
        }
        return 0;
    }

    /// <summary>The whole directory, in calls of <paramref name="size"/> bytes.</summary>
    public List<Dirent> ReadDirAll(ulong node, bool plus, uint size = 4096)
    {
        Assert.Equal(0, Open(node, out ulong fh, dir: true));
        var all = new List<Dirent>();
        ulong off = 0;
        for (int i = 0; i < 10_000; i++)
        {
            Assert.Equal(0, ReadDir(node, fh, off, plus, size, out var batch));
            if (batch.Count == 0) break;
            all.AddRange(batch);
            off = batch[^1].Off;
        }
        Send(FuseOpcode.ReleaseDir, node, Bytes(new FuseReleaseIn { fh = fh }));
        return all;
    }

    public void Dispose()
    {
        Buffers.Dispose();
        NativeMemory.Free(_request);
        NativeMemory.Free(_reply);
    }
}
