using System.Runtime.InteropServices;
using System.Text;
using VirtioFs.Fuse;
using VirtioFs.TestSupport;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>
/// A guest without a kernel: connects to a running out/vfsd's vhost-user socket as QEMU 7.2 does (the sequence of
/// VhostUserTestHarness.StartLikeQemu72, without the back-end request channel), shares memfd guest memory, and puts
/// raw FUSE requests on the request queue, so a test can send what a Linux driver never would (LOOKUP "..", a node id
/// whose directory the host moved away) against the real binary in its real sandbox. Disposing disconnects, and vfsd
/// then exits.
/// </summary>
internal sealed unsafe class RawFuseClient : IDisposable
{
    private const ushort QueueSize = 64;
    private readonly TestGuestMemory _memory = TestGuestMemory.Single(8 << 20);
    private readonly MockSplitQueue[] _queues;
    private readonly VhostUserFrontEnd _front;
    private readonly int _errFd = Tmds.Linux.LibC.eventfd(0, Tmds.Linux.LibC.EFD_CLOEXEC | Tmds.Linux.LibC.EFD_NONBLOCK);
    private ulong _unique = 1;

    private RawFuseClient(string socketPath)
    {
        _queues = [new MockSplitQueue(_memory, 0, QueueSize), new MockSplitQueue(_memory, 1, QueueSize)];
        _front = VhostUserFrontEnd.Connect(socketPath);
        _front.ReplyTimeout = TimeSpan.FromSeconds(60);
        ulong features = _front.GetFeatures();
        ulong protocol = _front.GetProtocolFeatures() & ~(1UL << VhostUserProtocolFeatureBits.BackendReq);
        _front.SetProtocolFeatures(protocol);
        _front.AlwaysNeedReply = (protocol & (1UL << VhostUserProtocolFeatureBits.ReplyAck)) != 0;
        _front.GetQueueNum();
        _front.SetOwner();
        foreach (MockSplitQueue q in _queues)
        {
            _front.SetVringCall(q.Index, q.CallFd);
            _front.SetVringErr(q.Index, _errFd);
        }
        _front.SetFeatures(features);
        _front.SetMemTable(_memory);
        foreach (MockSplitQueue q in _queues)
        {
            _front.StartQueueLikeQemu(q);
            _front.SetVringEnable(q.Index, true);
        }
    }

    /// <summary>Connects and sends FUSE INIT (7.38, as Linux 6.1); throws if the daemon refuses it.</summary>
    public static RawFuseClient Connect(string socketPath)
    {
        var client = new RawFuseClient(socketPath);
        var init = client.Send(FuseOpcode.Init, 0, Bytes(new FuseInitIn { major = 7, minor = 38, max_readahead = 1 << 17 }), 256);
        if (init.Error != 0)
        {
            client.Dispose();
            throw new InvalidOperationException($"FUSE INIT answered errno {-init.Error}");
        }
        return client;
    }

    public readonly record struct Reply(int Error, byte[] Body);

    /// <summary>One request on the request queue; waits up to a minute (TCG guests are not involved, but the machine
    /// is shared) for the reply.</summary>
    public Reply Send(FuseOpcode op, ulong nodeId, byte[] args, int replyBody = 4096, uint uid = 0, uint gid = 0)
    {
        MockSplitQueue q = _queues[1];
        var header = new FuseInHeader { len = (uint)(40 + args.Length), opcode = (uint)op, unique = _unique++, nodeid = nodeId, uid = uid, gid = gid };
        byte[] request = new byte[40 + args.Length];
        MemoryMarshal.Write(request, in header);
        args.CopyTo(request, 40);
        ChainBuffer reply = q.Writable((uint)(16 + replyBody));
        q.AddChain(q.Readable(request), reply);
        q.Kick();
        VringUsedElem used = q.WaitForUsed(TimeSpan.FromSeconds(60));
        if (used.len < 16 || used.len > reply.Length) throw new InvalidOperationException($"reply of {used.len} bytes");
        FuseOutHeader o = MemoryMarshal.Read<FuseOutHeader>(_memory.Span(reply.Addr, 16));
        if (o.unique != header.unique || o.len != used.len) throw new InvalidOperationException("reply does not match the request");
        return new Reply(o.error, _memory.Span(reply.Addr + 16, (int)used.len - 16).ToArray());
    }

    /// <summary>LOOKUP; returns 0 or a positive errno.</summary>
    public int Lookup(ulong parent, string name, out FuseEntryOut entry, uint uid = 0, uint gid = 0)
    {
        Reply r = Send(FuseOpcode.Lookup, parent, Name(name), uid: uid, gid: gid);
        entry = r.Error == 0 ? MemoryMarshal.Read<FuseEntryOut>(r.Body) : default;
        return -r.Error;
    }

    public int GetAttr(ulong nodeId, out FuseAttr attr)
    {
        Reply r = Send(FuseOpcode.GetAttr, nodeId, Bytes(new FuseGetattrIn()));
        attr = r.Error == 0 ? MemoryMarshal.Read<FuseAttrOut>(r.Body).attr : default;
        return -r.Error;
    }

    public int MkDir(ulong parent, string name, uint uid, uint gid, out FuseEntryOut entry)
    {
        Reply r = Send(FuseOpcode.MkDir, parent, [.. Bytes(new FuseMkdirIn { mode = 0x41ED }), .. Name(name)], uid: uid, gid: gid);
        entry = r.Error == 0 ? MemoryMarshal.Read<FuseEntryOut>(r.Body) : default;
        return -r.Error;
    }

    /// <summary>OPEN, READ of up to <paramref name="size"/> bytes from offset 0, RELEASE.</summary>
    public byte[] ReadFile(ulong nodeId, uint size = 4096)
    {
        Reply open = Send(FuseOpcode.Open, nodeId, Bytes(new FuseOpenIn()));
        if (open.Error != 0) throw new IOException($"OPEN errno {-open.Error}");
        ulong fh = MemoryMarshal.Read<FuseOpenOut>(open.Body).fh;
        Reply read = Send(FuseOpcode.Read, nodeId, Bytes(new FuseReadIn { fh = fh, offset = 0, size = size }), (int)size);
        Send(FuseOpcode.Release, nodeId, Bytes(new FuseReleaseIn { fh = fh }));
        return read.Error == 0 ? read.Body : throw new IOException($"READ errno {-read.Error}");
    }

    /// <summary>READDIR of a directory node: the names, "." and ".." included.</summary>
    public List<string> ReadDir(ulong nodeId)
    {
        Reply open = Send(FuseOpcode.OpenDir, nodeId, Bytes(new FuseOpenIn()));
        if (open.Error != 0) throw new IOException($"OPENDIR errno {-open.Error}");
        ulong fh = MemoryMarshal.Read<FuseOpenOut>(open.Body).fh;
        var names = new List<string>();
        ulong offset = 0;
        while (true)
        {
            Reply r = Send(FuseOpcode.ReadDir, nodeId, Bytes(new FuseReadIn { fh = fh, offset = offset, size = 4096 }));
            if (r.Error != 0) throw new IOException($"READDIR errno {-r.Error}");
            if (r.Body.Length == 0) break;
            // struct fuse_dirent: ino u64, off u64, namelen u32, type u32, name, padded to 8.
            for (int at = 0; at + 24 <= r.Body.Length;)
            {
                offset = BitConverter.ToUInt64(r.Body, at + 8);
                int len = (int)BitConverter.ToUInt32(r.Body, at + 16);
                names.Add(Encoding.UTF8.GetString(r.Body, at + 24, len));
                at += (24 + len + 7) & ~7;
            }
        }
        Send(FuseOpcode.ReleaseDir, nodeId, Bytes(new FuseReleaseIn { fh = fh }));
        return names;
    }

    public static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    public static byte[] Name(string s) => [.. Encoding.UTF8.GetBytes(s), 0];

    public void Dispose()
    {
        _front.Dispose();
        foreach (MockSplitQueue q in _queues) q.Dispose();
        _memory.Dispose();
        Tmds.Linux.LibC.close(_errFd);
    }
}
