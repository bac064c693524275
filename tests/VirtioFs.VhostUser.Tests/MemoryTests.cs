using System.Text;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.VhostUser.Tests;

public class MemoryTests
{
    [Fact]
    public void Regions_added_and_removed_at_runtime_are_honoured()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        d.FrontEnd.AlwaysNeedReply = true; // QEMU waits for the ack of memory changes too
        TestRegion extra = d.Memory.AddRegion(0x8000_0000, 1 << 20);
        d.FrontEnd.AddMemReg(extra);

        MockSplitQueue q = d.Queues[1];
        ulong inExtra = d.Memory.Allocate(16, 8, extra);
        Encoding.ASCII.GetBytes("hot").CopyTo(d.Memory.Span(inExtra, 3));
        ChainBuffer reply = q.Writable(8);
        q.AddChain(new ChainBuffer(inExtra, 3, false), reply);
        q.Kick();
        Assert.Equal(3u, q.WaitForUsed(Device.Timeout).len);

        d.FrontEnd.RemMemReg(extra);
        q.AddChain(new ChainBuffer(inExtra, 3, false), q.Writable(8));
        q.Kick();
        VringUsedElem refused = q.WaitForUsed(Device.Timeout);
        Assert.Equal(0u, refused.len);
        Assert.Equal("ok", d.RoundTrip(1, "ok"));
    }

    [Fact]
    public void Buffer_ending_on_the_last_byte_of_guest_memory_is_served()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        TestRegion r = d.Memory.Regions[0];
        ulong last16 = r.GuestPhysAddr + r.Size - 16;
        MockSplitQueue q = d.Queues[1];
        q.AddChain(q.Readable("edge"u8), new ChainBuffer(last16, 16, true));
        q.Kick();
        Assert.Equal(4u, q.WaitForUsed(Device.Timeout).len);
        Assert.Equal("edge"u8.ToArray(), d.Memory.Span(last16, 4).ToArray());

        // One byte further crosses out of the region.
        q.AddChain(q.Readable("edge"u8), new ChainBuffer(last16 + 1, 16, true));
        q.Kick();
        Assert.Equal(0u, q.WaitForUsed(Device.Timeout).len);
    }

    [Fact]
    public void Set_mem_table_replacement_keeps_rings_working()
    {
        using var d = new Device();
        d.Harness.StartLikeCloudHypervisor(d.Memory, d.Queues);
        Assert.Equal("one", d.RoundTrip(1, "one"));
        d.FrontEnd.SetMemTable(d.Memory);
        Assert.Equal("two", d.RoundTrip(1, "two"));
    }

    [Fact]
    public void Rings_and_buffers_in_a_second_region_with_mmap_offset_work()
    {
        var memory = new TestGuestMemory(mmapOffset: 0x1000, (0x1000_0000, 1 << 20), (0x2_0000_0000, 4 << 20));
        using var d = new Device(memory: memory);
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        ulong far = memory.Allocate(16, 8, memory.Regions[1]);
        q.AddChain(q.Readable("far"u8), new ChainBuffer(far, 16, true));
        q.Kick();
        Assert.Equal(3u, q.WaitForUsed(Device.Timeout).len);
        Assert.Equal("far"u8.ToArray(), memory.Span(far, 3).ToArray());
    }
}
