using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using VirtioFs.VhostUser;
using static Tmds.Linux.LibC;

namespace VirtioFs.TestSupport;

/// <summary>
/// Runs <see cref="VhostUserServer.ServeConnection"/> for a backend on one end of a socketpair and gives the test the
/// front-end on the other, plus the negotiation sequences QEMU 7.2 and cloud-hypervisor send (REFERENCE.md orders).
/// Disposing disconnects and waits for the server to return.
/// </summary>
/// <example>
/// <code>
/// using var memory = TestGuestMemory.Single();                       // 4 MiB memfd guest RAM
/// var queues = new[] { new MockSplitQueue(memory, 0, 128), new MockSplitQueue(memory, 1, 128) };
/// using var harness = new VhostUserTestHarness(myBackend);
/// harness.StartLikeQemu72(memory, queues);                            // negotiate, map memory, start + enable rings
/// ChainBuffer reply = queues[1].Writable(4096);
/// queues[1].AddChain(queues[1].Readable(requestBytes), reply);        // or AddIndirectChain(...)
/// queues[1].Kick();
/// VringUsedElem used = queues[1].WaitForUsed();                       // id = head, len = bytes written
/// Span&lt;byte&gt; answer = memory.Span(reply.Addr, (int)used.len);
/// </code>
/// </example>
public sealed unsafe class VhostUserTestHarness : IDisposable
{
    private readonly Socket _backEnd;
    private int _backendReqPeer = -1;

    public VhostUserTestHarness(IVhostUserBackend backend, ILogger? logger = null)
    {
        Backend = backend;
        (FrontEnd, _backEnd) = VhostUserFrontEnd.CreatePair();
        Server = Task.Factory.StartNew(() => VhostUserServer.ServeConnection(_backEnd, backend, logger),
            TaskCreationOptions.LongRunning);
    }

    public IVhostUserBackend Backend { get; }

    /// <summary>The error eventfd handed to every ring (QEMU passes one per ring).</summary>
    public int ErrFd { get; } = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    public VhostUserFrontEnd FrontEnd { get; }

    /// <summary>Completes when the server returned (faulted if it threw).</summary>
    public Task Server { get; }

    /// <summary>Virtio features the drivers of these sequences acknowledge (transport bits + the device's).</summary>
    public static ulong DriverFeatures(ulong offered) => offered;

    /// <summary>
    /// QEMU 7.2 as recorded against this back-end with a Linux 6.1 guest mounting virtio-fs: GET_FEATURES,
    /// GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_BACKEND_REQ_FD (NEED_REPLY), SET_OWNER,
    /// GET_FEATURES, per queue SET_VRING_CALL + SET_VRING_ERR; on start SET_FEATURES, ADD_MEM_REG per region
    /// (NEED_REPLY), per queue NUM/BASE/ADDR/KICK, SET_VRING_ENABLE 1 per queue, then SET_VRING_CALL per queue.
    /// Returns the negotiated virtio features.
    /// </summary>
    public ulong StartLikeQemu72(TestGuestMemory memory, IReadOnlyList<MockSplitQueue> queues, ulong clearFeatures = 0)
    {
        VhostUserFrontEnd f = FrontEnd;
        ulong features = f.GetFeatures();
        ulong protocol = f.GetProtocolFeatures();
        f.SetProtocolFeatures(protocol);
        bool replyAck = (protocol & (1UL << VhostUserProtocolFeatureBits.ReplyAck)) != 0;
        f.GetQueueNum();
        if ((protocol & (1UL << VhostUserProtocolFeatureBits.ConfigureMemSlots)) != 0)
        {
            f.GetMaxMemSlots();
        }
        if ((protocol & (1UL << VhostUserProtocolFeatureBits.BackendReq)) != 0)
        {
            f.SetBackendReqFd(NewBackendReqSocket(), replyAck);
        }
        f.SetOwner();
        f.GetFeatures();
        foreach (MockSplitQueue q in queues)
        {
            f.SetVringCall(q.Index, q.CallFd);
            f.SetVringErr(q.Index, ErrFd);
        }
        ulong acked = features & ~clearFeatures;
        f.SetFeatures(acked);
        foreach (TestRegion region in memory.Regions)
        {
            f.Set(VhostUserRequest.AddMemReg, AddMemRegPayload(region), [region.Fd], needReply: replyAck);
        }
        foreach (MockSplitQueue q in queues)
        {
            f.SetVringNum(q.Index, q.Size);
            f.SetVringBase(q.Index, 0);
            f.SetVringAddr(q);
            f.SetVringKick(q.Index, q.KickFd);
        }
        foreach (MockSplitQueue q in queues)
        {
            f.SetVringEnable(q.Index, true);
        }
        foreach (MockSplitQueue q in queues)
        {
            f.SetVringCall(q.Index, q.CallFd);
        }
        return acked;
    }

    /// <summary>QEMU 7.2 stop: SET_VRING_ENABLE 0 then GET_VRING_BASE per queue. Returns the bases.</summary>
    public uint[] StopLikeQemu72(IReadOnlyList<MockSplitQueue> queues)
    {
        foreach (MockSplitQueue q in queues)
        {
            FrontEnd.SetVringEnable(q.Index, false);
        }
        return queues.Select(q => FrontEnd.GetVringBase(q.Index)).ToArray();
    }

    /// <summary>
    /// cloud-hypervisor: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM; from then on NEED_REPLY on
    /// every message (REPLY_ACK); on activate SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM x n, per queue ADDR, BASE,
    /// CALL, KICK, then SET_VRING_ENABLE 1 x n. Returns the negotiated virtio features.
    /// </summary>
    public ulong StartLikeCloudHypervisor(TestGuestMemory memory, IReadOnlyList<MockSplitQueue> queues)
    {
        VhostUserFrontEnd f = FrontEnd;
        f.SetOwner();
        ulong features = f.GetFeatures();
        ulong protocol = f.GetProtocolFeatures();
        ulong wanted = protocol & ((1UL << VhostUserProtocolFeatureBits.Mq) | (1UL << VhostUserProtocolFeatureBits.ReplyAck)
            | (1UL << VhostUserProtocolFeatureBits.ConfigureMemSlots) | (1UL << VhostUserProtocolFeatureBits.BackendReq));
        f.SetProtocolFeatures(wanted);
        f.AlwaysNeedReply = (wanted & (1UL << VhostUserProtocolFeatureBits.ReplyAck)) != 0;
        f.GetQueueNum();
        f.SetFeatures(features);
        f.SetMemTable(memory);
        foreach (MockSplitQueue q in queues)
        {
            f.SetVringNum(q.Index, q.Size);
        }
        foreach (MockSplitQueue q in queues)
        {
            f.StartQueueLikeCloudHypervisor(q);
        }
        foreach (MockSplitQueue q in queues)
        {
            f.SetVringEnable(q.Index, true);
        }
        return features;
    }

    private static byte[] AddMemRegPayload(TestRegion r)
    {
        byte[] payload = new byte[40];
        BitConverter.TryWriteBytes(payload.AsSpan(8), r.GuestPhysAddr);
        BitConverter.TryWriteBytes(payload.AsSpan(16), r.Size);
        BitConverter.TryWriteBytes(payload.AsSpan(24), r.UserspaceAddr);
        BitConverter.TryWriteBytes(payload.AsSpan(32), r.MmapOffset);
        return payload;
    }

    /// <summary>A socketpair whose one end goes to the back-end as its request channel; the harness keeps the other.</summary>
    private int NewBackendReqSocket()
    {
        int* sv = stackalloc int[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        {
            throw new IOException("socketpair failed");
        }
        if (_backendReqPeer >= 0)
        {
            close(_backendReqPeer);
        }
        _backendReqPeer = sv[0];
        // The fd is duplicated into the back-end by SCM_RIGHTS; our copy of the sent end can go after sending, but
        // keeping it open until Dispose is simpler and harmless.
        _sentBackendReqFds.Add(sv[1]);
        return sv[1];
    }

    private readonly List<int> _sentBackendReqFds = [];

    /// <summary>Waits for the server to return (after a disconnect).</summary>
    public bool WaitForServerExit(TimeSpan timeout) => Server.Wait(timeout);

    public void Dispose()
    {
        FrontEnd.Dispose();
        Server.Wait(TimeSpan.FromSeconds(10));
        _backEnd.Dispose();
        if (_backendReqPeer >= 0)
        {
            close(_backendReqPeer);
        }
        foreach (int fd in _sentBackendReqFds)
        {
            close(fd);
        }
        close(ErrFd);
    }
}
