using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;
using Xunit;

namespace VirtioFs.Device.Tests;

/// <summary>
/// The whole daemon stack without QEMU: a vhost-user front-end written for the tests negotiates like QEMU 7.2 or
/// cloud-hypervisor, lays FUSE requests into memfd guest memory as descriptor chains and reads the replies the
/// virtio-fs device wrote there. Malformed chains and requests must be answered and must not stop the queue.
/// </summary>
[Collection("passthrough umask")]
public sealed unsafe class VirtioFsDeviceTests : IDisposable
{
    private const ushort QueueSize = 64;
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-device-").FullName;
    private readonly byte[] _content = new byte[300_000];
    private ulong _unique = 1;

    public VirtioFsDeviceTests()
    {
        new Random(3).NextBytes(_content);
        File.WriteAllBytes(Path.Combine(_dir, "data.bin"), _content);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Config_space_holds_tag_and_request_queue_count()
    {
        using var stack = Stack.Create(_dir, tag: "myfs", requestQueues: 2, pool: 0);
        Span<byte> config = stackalloc byte[40];
        Assert.True(stack.Device.HasConfig);
        stack.Device.ReadConfig(0, config);
        Assert.Equal("myfs", Encoding.UTF8.GetString(config[..36]).TrimEnd('\0'));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(config[36..]));
        Assert.Equal(3, stack.Device.NumQueues);
        // Reads past the end come back as zeros rather than failing.
        Span<byte> tail = stackalloc byte[8];
        tail.Fill(0xff);
        stack.Device.ReadConfig(38, tail);
        Assert.Equal([0, 0, 0, 0, 0, 0, 0, 0], tail.ToArray());
        using var untagged = Stack.Create(_dir, tag: null, requestQueues: 1, pool: 0);
        Assert.False(untagged.Device.HasConfig);
    }

    [Theory]
    [InlineData(false, 0)]
    [InlineData(true, 0)]
    [InlineData(false, 2)]
    public void Reads_a_file_through_negotiated_queues(bool cloudHypervisor, int pool)
    {
        using var stack = Stack.Create(_dir, tag: "vfs", requestQueues: 1, pool);
        using var memory = TestGuestMemory.Single(8 << 20);
        var queues = new[] { new MockSplitQueue(memory, 0, QueueSize), new MockSplitQueue(memory, 1, QueueSize) };
        using var harness = new VhostUserTestHarness(stack.Device);
        if (cloudHypervisor)
        {
            harness.StartLikeCloudHypervisor(memory, queues);
        }
        else
        {
            harness.StartLikeQemu72(memory, queues);
        }
        MockSplitQueue q = queues[1];

        Init(q);
        ulong nodeId = LookupFile(q, "data.bin");
        ulong fh = Open(q, nodeId);

        // READ 200,000 bytes at 50,000 into three writable buffers of odd sizes, through an indirect table.
        var header = q.Writable(16);
        var parts = new[] { q.Writable(70_001), q.Writable(3), q.Writable(129_996) };
        byte[] request = Request(FuseOpcode.Read, nodeId, new FuseReadIn { fh = fh, offset = 50_000, size = 200_000 });
        q.AddIndirectChain(q.Readable(request), header, parts[0], parts[1], parts[2]);
        q.Kick();
        VringUsedElem used = q.WaitForUsed();
        Assert.Equal(16u + 200_000u, used.len);
        Assert.Equal(0, OutError(memory, header));
        var read = new List<byte>();
        foreach (ChainBuffer part in parts)
        {
            read.AddRange(memory.Span(part.Addr, (int)part.Length).ToArray());
        }
        Assert.Equal(_content.AsSpan(50_000, 200_000).ToArray(), read.ToArray());

        foreach (var queue in queues)
        {
            queue.Dispose();
        }
    }

    [Theory]
    [InlineData(0, 1, false)]
    [InlineData(1, 1, false)] // one thread behind one queue: the same serialisation, served without a hand-off
    [InlineData(1, 2, true)]  // one thread shared by two queues: keep the pool so the queues stay serialised
    [InlineData(2, 1, true)]
    public void Only_a_pool_that_adds_concurrency_or_serialisation_is_kept(int pool, int requestQueues, bool usesPool)
    {
        using var stack = Stack.Create(_dir, tag: null, requestQueues, pool);
        Assert.Equal(usesPool, stack.Device.UsesPool);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(4)]
    public void A_burst_of_requests_is_completed_and_the_driver_is_interrupted_after_the_last(int pool)
    {
        using var stack = Stack.Create(_dir, tag: null, requestQueues: 1, pool);
        using var memory = TestGuestMemory.Single(8 << 20);
        var queues = new[] { new MockSplitQueue(memory, 0, QueueSize), new MockSplitQueue(memory, 1, QueueSize) };
        using var harness = new VhostUserTestHarness(stack.Device);
        harness.StartLikeQemu72(memory, queues);
        MockSplitQueue q = queues[1];
        Init(q);
        while (q.TryConsumeCall())
        {
        }

        // EVENT_IDX (virtio spec 1.2, 2.7.10): the driver asks to be interrupted only once the last of the burst is
        // used. Completions are batched per worker, so a lost final notification would leave the guest waiting.
        const int Burst = 24; // two descriptors each: the burst fits the 64-entry table
        q.UsedEvent = (ushort)(q.UsedIdx + Burst - 1);
        var replies = new ChainBuffer[Burst];
        var heads = new HashSet<ushort>();
        for (int i = 0; i < Burst; i++)
        {
            replies[i] = q.Writable(16 + 128);
            heads.Add(q.AddChain(q.Readable(Request(FuseOpcode.Lookup, 1, Encoding.UTF8.GetBytes("data.bin\0"))), replies[i]));
        }
        q.Kick();
        for (int i = 0; i < Burst; i++)
        {
            VringUsedElem used = q.WaitForUsed();
            Assert.True(heads.Remove((ushort)used.id));
            Assert.Equal(144u, used.len);
        }
        Assert.True(q.WaitForCall(TimeSpan.FromSeconds(5)), "no interrupt after the last used buffer");
        foreach (ChainBuffer reply in replies)
        {
            Assert.Equal(0, OutError(memory, reply));
        }

        foreach (var queue in queues)
        {
            queue.Dispose();
        }
    }

    [Fact]
    public void Malformed_chains_and_requests_are_answered_and_the_queue_keeps_serving()
    {
        using var stack = Stack.Create(_dir, tag: null, requestQueues: 1, pool: 0);
        using var memory = TestGuestMemory.Single(4 << 20);
        var queues = new[] { new MockSplitQueue(memory, 0, QueueSize), new MockSplitQueue(memory, 1, QueueSize) };
        using var harness = new VhostUserTestHarness(stack.Device);
        harness.StartLikeQemu72(memory, queues);
        MockSplitQueue q = queues[1];
        Init(q);

        // A buffer outside guest memory: the chain is returned with length 0.
        ushort bad = q.AddChain(new ChainBuffer(1UL << 40, 64, false), q.Writable(64));
        q.Kick();
        VringUsedElem used = q.WaitForUsed();
        Assert.Equal(bad, (ushort)used.id);
        Assert.Equal(0u, used.len);

        // A descriptor loop: next points back at itself.
        ushort head = q.TakeDescriptors(1);
        q.WriteDescriptor(head, memory.Allocate(64, 8), 64, VirtqDescFlags.Next, head);
        q.Publish(head);
        q.Kick();
        used = q.WaitForUsed();
        Assert.Equal(head, (ushort)used.id);
        Assert.Equal(0u, used.len);

        // A well-formed LOOKUP whose chain puts a readable buffer after the writable reply (virtio spec 1.2 2.7.4.2):
        // the chain is refused as a whole, so the request is not served and its reply buffer stays untouched.
        var lookupReply = q.Writable(16 + 128);
        ushort misordered = q.AddChain(q.Readable(Request(FuseOpcode.Lookup, 1, Encoding.UTF8.GetBytes("data.bin\0"))),
            lookupReply, q.Readable(new byte[8]));
        q.Kick();
        used = q.WaitForUsed();
        Assert.Equal(misordered, (ushort)used.id);
        Assert.Equal(0u, used.len);
        Assert.True(memory.Span(lookupReply.Addr, 16 + 128).IndexOfAnyExcept((byte)0) < 0);

        // A FUSE header cut short: no reply can be formed, the chain still comes back.
        q.AddChain(q.Readable(new byte[10]), q.Writable(64));
        q.Kick();
        Assert.Equal(0u, q.WaitForUsed().len);

        // An unknown opcode is ENOSYS.
        var reply = q.Writable(64);
        q.AddChain(q.Readable(Request((FuseOpcode)9999, 1, 0UL)), reply);
        q.Kick();
        Assert.Equal(16u, q.WaitForUsed().len);
        Assert.Equal(-38, OutError(memory, reply));

        // After all that, a normal request still works.
        Assert.NotEqual(0UL, LookupFile(q, "data.bin"));

        // FORGET on the hiprio queue has no reply but still goes back to the used ring.
        MockSplitQueue hiprio = queues[0];
        hiprio.AddChain(hiprio.Readable(Request(FuseOpcode.Forget, 2, new FuseForgetIn { nlookup = 1 })));
        hiprio.Kick();
        Assert.Equal(0u, hiprio.WaitForUsed().len);

        foreach (var queue in queues)
        {
            queue.Dispose();
        }
    }

    private void Init(MockSplitQueue q)
    {
        var reply = q.Writable(16 + 64);
        q.AddChain(q.Readable(Request(FuseOpcode.Init, 0, new FuseInitIn { major = 7, minor = 37, max_readahead = 1 << 17 })), reply);
        q.Kick();
        Assert.Equal(80u, q.WaitForUsed().len);
        Assert.Equal(0, OutError(q.Memory, reply));
    }

    private ulong LookupFile(MockSplitQueue q, string name)
    {
        var reply = q.Writable(16 + 128);
        q.AddChain(q.Readable(Request(FuseOpcode.Lookup, 1, Encoding.UTF8.GetBytes(name + "\0"))), reply);
        q.Kick();
        Assert.Equal(144u, q.WaitForUsed().len);
        Assert.Equal(0, OutError(q.Memory, reply));
        var entry = MemoryMarshal.Read<FuseEntryOut>(q.Memory.Span(reply.Addr + 16, 128));
        Assert.Equal((ulong)_content.Length, entry.attr.size);
        return entry.nodeid;
    }

    private ulong Open(MockSplitQueue q, ulong nodeId)
    {
        var reply = q.Writable(16 + 16);
        q.AddChain(q.Readable(Request(FuseOpcode.Open, nodeId, new FuseOpenIn { flags = 0 })), reply);
        q.Kick();
        Assert.Equal(32u, q.WaitForUsed().len);
        Assert.Equal(0, OutError(q.Memory, reply));
        return MemoryMarshal.Read<FuseOpenOut>(q.Memory.Span(reply.Addr + 16, 16)).fh;
    }

    private static int OutError(TestGuestMemory memory, ChainBuffer reply) =>
        MemoryMarshal.Read<FuseOutHeader>(memory.Span(reply.Addr, 16)).error;

    private byte[] Request<T>(FuseOpcode opcode, ulong nodeId, T args) where T : unmanaged =>
        Request(opcode, nodeId, MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in args)).ToArray());

    private byte[] Request(FuseOpcode opcode, ulong nodeId, byte[] args)
    {
        var bytes = new byte[40 + args.Length];
        var header = new FuseInHeader { len = (uint)bytes.Length, opcode = (uint)opcode, unique = _unique++, nodeid = nodeId };
        MemoryMarshal.Write(bytes, in header);
        args.CopyTo(bytes, 40);
        return bytes;
    }

    private sealed class Stack : IDisposable
    {
        private readonly PassthroughFileSystem _fs;

        private Stack(PassthroughFileSystem fs, VirtioFsDevice device)
        {
            _fs = fs;
            Device = device;
        }

        public VirtioFsDevice Device { get; }

        public static Stack Create(string dir, string? tag, int requestQueues, int pool)
        {
            var fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = dir }, NullLogger.Instance);
            var server = new FuseServer(fs, new FuseServerOptions(), NullLogger.Instance);
            return new Stack(fs, new VirtioFsDevice(server, tag, requestQueues, pool, NullLogger.Instance));
        }

        public void Dispose()
        {
            Device.Dispose();
            _fs.Dispose();
        }
    }
}

[CollectionDefinition("passthrough umask", DisableParallelization = true)]
public sealed class PassthroughUmaskCollection;
