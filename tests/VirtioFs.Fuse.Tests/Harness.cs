using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;

namespace VirtioFs.Fuse.Tests;

/// <summary>Builds FUSE requests byte by byte, splits them into segments, and decodes replies.</summary>
internal sealed unsafe class Harness : IDisposable
{
    private readonly List<nint> _allocations = [];

    public Harness(IFileSystem fs, FuseServerOptions? options = null, Microsoft.Extensions.Logging.ILogger? logger = null)
    {
        Fs = fs;
        Server = new FuseServer(fs, options ?? new FuseServerOptions(), logger ?? NullLogger.Instance);
    }

    public IFileSystem Fs { get; }
    public FuseServer Server { get; }
    public FuseRequestBuffers Buffers { get; } = new();
    public byte[] Reply { get; private set; } = [];
    public List<nint> ReplySegments { get; } = [];

    public static byte[] Request(FuseOpcode op, ulong nodeId, ReadOnlySpan<byte> args, ulong unique = 7, uint? lenOverride = null,
        uint uid = 1000, uint gid = 1000)
    {
        var h = new FuseInHeader
        {
            len = lenOverride ?? (uint)(40 + args.Length), opcode = (uint)op, unique = unique, nodeid = nodeId, uid = uid, gid = gid, pid = 42,
        };
        byte[] r = new byte[40 + args.Length];
        MemoryMarshal.Write(r, in h);
        args.CopyTo(r.AsSpan(40));
        return r;
    }

    public static byte[] Bytes<T>(in T value) where T : unmanaged
    {
        byte[] b = new byte[Unsafe.SizeOf<T>()];
        MemoryMarshal.Write(b, in value);
        return b;
    }

    public static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    public static byte[] Name(string s) => [.. System.Text.Encoding.UTF8.GetBytes(s), 0];

    private byte* Alloc(int n)
    {
        nint p = (nint)NativeMemory.AllocZeroed((nuint)Math.Max(n, 1));
        _allocations.Add(p);
        return (byte*)p;
    }

    /// <summary>Sends a request cut at the given offsets; reply space split into segments of the given sizes.</summary>
    public FuseReply Send(byte[] request, int[]? cuts = null, int[]? replySegments = null)
    {
        Buffers.Clear();
        int start = 0;
        foreach (int end in (cuts ?? []).Append(request.Length))
        {
            byte* p = Alloc(end - start);
            request.AsSpan(start, end - start).CopyTo(new Span<byte>(p, end - start));
            Buffers.AddReadable(p, end - start);
            start = end;
        }
        var sizes = replySegments ?? [64 * 1024];
        ReplySegments.Clear();
        foreach (int s in sizes)
        {
            byte* p = Alloc(s);
            new Span<byte>(p, s).Fill(0xCC);
            ReplySegments.Add((nint)p);
            Buffers.AddWritable(p, s);
        }
        FuseReply reply = Server.Handle(Buffers);
        // Reassemble the reply from the writable segments.
        var bytes = new byte[reply.Length];
        int off = 0;
        for (int i = 0; i < sizes.Length && off < reply.Length; i++)
        {
            int n = Math.Min(sizes[i], reply.Length - off);
            new ReadOnlySpan<byte>((byte*)ReplySegments[i], n).CopyTo(bytes.AsSpan(off));
            off += n;
        }
        Reply = bytes;
        return reply;
    }

    public FuseOutHeader ReplyHeader => MemoryMarshal.Read<FuseOutHeader>(Reply);

    public T ReplyBody<T>(int offset = 16) where T : unmanaged => MemoryMarshal.Read<T>(Reply.AsSpan(offset));

    public FuseReply Init(uint minor = 38, uint flags = 0xFFFF_FFFF, uint flags2 = 0, uint major = 7)
    {
        var init = new FuseInitIn { major = major, minor = minor, max_readahead = 128 * 1024, flags = flags, flags2 = flags2 };
        return Send(Request(FuseOpcode.Init, 0, Bytes(init), unique: 1));
    }

    public void Dispose()
    {
        foreach (nint p in _allocations)
        {
            NativeMemory.Free((void*)p);
        }
        Buffers.Dispose();
    }
}

/// <summary>A scripted filesystem that records what the server passed it.</summary>
internal sealed class FakeFs : IFileSystem
{
    public List<string> Calls { get; } = [];
    public string? LastName;
    public string? LastName2;
    public FuseContext LastCtx;
    public List<(ulong Node, ulong N)> Forgets { get; } = [];
    public List<(nint Pointer, int Length)> WriteSegments { get; } = [];
    public ulong LastOffset;
    public int DirEntries = 100;
    public FuseInitFlags Negotiated;
    public int Destroys;

    public void Destroy() => Destroys++;

    public int Init(FuseInitFlags negotiated)
    {
        Negotiated = negotiated;
        return 0;
    }

    public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        LastCtx = ctx;
        LastName = System.Text.Encoding.UTF8.GetString(name);
        Calls.Add($"lookup {parent}");
        entry = new FuseEntry { NodeId = 77, Generation = 3, Attr = new FuseAttr { ino = 77, mode = 0x81A4, size = 5 }, EntryTimeout = TimeSpan.FromSeconds(1.5) };
        return name.SequenceEqual("missing"u8) ? Errno.ENOENT : 0;
    }

    public void Forget(in FuseContext ctx, ulong nodeId, ulong nlookup) => Forgets.Add((nodeId, nlookup));

    public int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
    {
        Calls.Add($"getattr {nodeId} {handle}");
        attr = new FuseAttr { ino = nodeId, mode = 0x41ED, nlink = 2 };
        timeout = TimeSpan.FromSeconds(2);
        return 0;
    }

    public int Rename(in FuseContext ctx, ulong oldParent, ReadOnlySpan<byte> oldName, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
    {
        LastName = System.Text.Encoding.UTF8.GetString(oldName);
        LastName2 = System.Text.Encoding.UTF8.GetString(newName);
        Calls.Add($"rename {oldParent} {newParent} {flags}");
        return 0;
    }

    public int Symlink(in FuseContext ctx, ReadOnlySpan<byte> target, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry)
    {
        LastName = System.Text.Encoding.UTF8.GetString(name);
        LastName2 = System.Text.Encoding.UTF8.GetString(target);
        entry = new FuseEntry { NodeId = 5 };
        return 0;
    }

    public int Read(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> destination, uint flags, out int bytesRead)
    {
        LastOffset = offset;
        // Fill with a pattern: byte i of the file = (offset + i) % 251.
        long pos = (long)offset;
        int total = 0;
        foreach (IoSegment seg in destination)
        {
            unsafe
            {
                for (int i = 0; i < seg.Length; i++)
                {
                    seg.Pointer[i] = (byte)(pos++ % 251);
                }
            }
            total += seg.Length;
        }
        bytesRead = total;
        return 0;
    }

    public int Write(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, ReadOnlySpan<IoSegment> source, uint writeFlags, uint flags, out int bytesWritten)
    {
        WriteSegments.Clear();
        int total = 0;
        foreach (IoSegment s in source)
        {
            unsafe
            {
                WriteSegments.Add(((nint)s.Pointer, s.Length));
            }
            total += s.Length;
        }
        bytesWritten = total;
        return 0;
    }

    public int ReadDir(in FuseContext ctx, ulong nodeId, ulong handle, ulong offset, DirectoryWriter writer)
    {
        for (int i = (int)offset; i < DirEntries; i++)
        {
            byte[] name = System.Text.Encoding.ASCII.GetBytes($"name{i}" + new string('x', i % 9));
            bool ok = writer.IsPlus
                ? writer.Fits(name.Length) && writer.TryAddPlus(new FuseEntry { NodeId = (ulong)(1000 + i), Attr = new FuseAttr { ino = (ulong)(1000 + i) } }, (ulong)(i + 1), 8, name)
                : writer.TryAdd((ulong)(1000 + i), (ulong)(i + 1), 8, name);
            if (!ok)
            {
                break;
            }
        }
        return 0;
    }

    public int GetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        ReadOnlySpan<byte> v = "the-value"u8;
        length = v.Length;
        if (value.IsEmpty) return 0;
        if (value.Length < v.Length) return Errno.ERANGE;
        v.CopyTo(value);
        return 0;
    }

    public int SetXattr(in FuseContext ctx, ulong nodeId, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags, uint setxattrFlags)
    {
        LastName = System.Text.Encoding.UTF8.GetString(name);
        LastName2 = System.Text.Encoding.UTF8.GetString(value);
        Calls.Add($"setxattr {flags} {setxattrFlags}");
        return 0;
    }

    public int StatFs(in FuseContext ctx, ulong nodeId, out FuseKstatfs stat)
    {
        stat = new FuseKstatfs { blocks = 10, bsize = 4096, namelen = 255 };
        return 0;
    }

    public int Open(in FuseContext ctx, ulong nodeId, uint flags, uint fuseOpenFlags, out FuseOpenResult result)
    {
        throw new InvalidOperationException("filesystem bug");
    }
}
