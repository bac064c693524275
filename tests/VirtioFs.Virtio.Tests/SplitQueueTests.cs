using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.Virtio.Tests;

/// <summary>A guest (TestGuestMemory + MockSplitQueue) and the device side (GuestMemory + SplitQueue) on the same memfd.</summary>
internal sealed class QueuePair : IDisposable
{
    public QueuePair(ushort size = 8, bool eventIdx = false)
    {
        Guest = TestGuestMemory.Single();
        Driver = new MockSplitQueue(Guest, 0, size);
        Memory = Guest.CreateBackendView();
        Device = new SplitQueue(Memory) { EventIdx = eventIdx };
        Assert.True(Device.TrySetSize(size));
        Device.SetAddresses(Driver.DescUserAddr, Driver.AvailUserAddr, Driver.UsedUserAddr);
        Assert.True(Device.TryActivate(out string? error), error);
    }

    public TestGuestMemory Guest { get; }
    public MockSplitQueue Driver { get; }
    public GuestMemory Memory { get; }
    public SplitQueue Device { get; }

    public DescriptorChain Pop()
    {
        Assert.True(Device.TryPopChain(out DescriptorChain chain));
        return chain;
    }

    public ChainError Collect(DescriptorChain chain, out IoSegment[] readable, out IoSegment[] writable, int capacity = 16)
    {
        var r = new IoSegment[capacity];
        var w = new IoSegment[capacity];
        ChainError error = chain.TryCollect(r, w, out int nr, out int nw);
        readable = r[..nr];
        writable = w[..nw];
        return error;
    }

    public void Dispose()
    {
        Memory.Dispose();
        Driver.Dispose();
        Guest.Dispose();
    }
}

public unsafe class SplitQueueTests
{
    [Fact]
    public void Direct_chain_yields_readable_then_writable_segments_over_guest_bytes()
    {
        using var q = new QueuePair();
        ChainBuffer request = q.Driver.Readable("hello"u8);
        ChainBuffer reply = q.Driver.Writable(32);
        ushort head = q.Driver.AddChain(request, q.Driver.Readable(" world"u8), reply);

        DescriptorChain chain = q.Pop();
        Assert.Equal(head, chain.Head);
        Assert.Equal(ChainError.None, q.Collect(chain, out IoSegment[] r, out IoSegment[] w));
        Assert.Equal(2, r.Length);
        Assert.Single(w);
        Assert.Equal("hello"u8.ToArray(), r[0].AsSpan().ToArray());
        Assert.Equal(" world"u8.ToArray(), r[1].AsSpan().ToArray());
        Assert.Equal(32, w[0].Length);
        w[0].AsSpan()[0] = 0x5A;
        Assert.Equal(0x5A, q.Guest.Span(reply.Addr, 1)[0]);
        Assert.False(q.Device.TryPopChain(out _));
    }

    [Fact]
    public void Indirect_chain_is_walked_through_its_table()
    {
        using var q = new QueuePair();
        q.Driver.AddIndirectChain(q.Driver.Readable("abc"u8), q.Driver.Readable("de"u8), q.Driver.Writable(8), q.Driver.Writable(4));
        Assert.Equal(ChainError.None, q.Collect(q.Pop(), out IoSegment[] r, out IoSegment[] w));
        Assert.Equal([3, 2], r.Select(s => s.Length));
        Assert.Equal([8, 4], w.Select(s => s.Length));
    }

    [Fact]
    public void Indirect_table_may_hold_more_descriptors_than_the_queue()
    {
        using var q = new QueuePair(size: 2);
        ChainBuffer[] many = Enumerable.Range(0, 10).Select(_ => q.Driver.Readable("x"u8)).ToArray();
        q.Driver.AddIndirectChain(many);
        Assert.Equal(ChainError.None, q.Collect(q.Pop(), out IoSegment[] r, out _));
        Assert.Equal(10, r.Length);
    }

    [Fact]
    public void Descriptor_loop_is_stopped_by_the_time_to_live()
    {
        using var q = new QueuePair();
        ChainBuffer b = q.Driver.Readable("x"u8);
        q.Driver.WriteDescriptor(0, b.Addr, 1, VirtqDescFlags.Next, 1);
        q.Driver.WriteDescriptor(1, b.Addr, 1, VirtqDescFlags.Next, 0);
        q.Driver.Publish(0);
        Assert.Equal(ChainError.ChainTooLong, q.Collect(q.Pop(), out _, out _));
    }

    [Fact]
    public void Indirect_loop_is_stopped_by_the_table_length()
    {
        using var q = new QueuePair();
        ChainBuffer b = q.Driver.Readable("x"u8);
        ulong table = q.Driver.WriteIndirectTable(b, b);
        // Make entry 1 point back to entry 0.
        q.Guest.Write(table + 16, new VringDesc { addr = b.Addr, len = 1, flags = VirtqDescFlags.Next, next = 0 });
        q.Driver.WriteDescriptor(0, table, 32, VirtqDescFlags.Indirect, 0);
        q.Driver.Publish(0);
        Assert.Equal(ChainError.ChainTooLong, q.Collect(q.Pop(), out _, out _));
    }

    public static TheoryData<string> MalformedCases => new()
    {
        "next-out-of-range", "address-out-of-range", "length-past-region", "length-over-int", "nested-indirect",
        "indirect-with-next", "indirect-bad-length", "indirect-table-out-of-range", "readable-after-writable",
    };

    [Theory]
    [MemberData(nameof(MalformedCases))]
    public void Malformed_chain_is_refused_and_the_queue_keeps_working(string kind)
    {
        using var q = new QueuePair();
        ChainBuffer r = q.Driver.Readable("x"u8);
        ChainBuffer w = q.Driver.Writable(4);
        ChainError expected;
        switch (kind)
        {
            case "next-out-of-range":
                q.Driver.WriteDescriptor(0, r.Addr, 1, VirtqDescFlags.Next, 8);
                expected = ChainError.NextOutOfRange;
                break;
            case "address-out-of-range":
                q.Driver.WriteDescriptor(0, 0x10, 1, 0, 0);
                expected = ChainError.AddressOutOfRange;
                break;
            case "length-past-region":
                q.Driver.WriteDescriptor(0, r.Addr, 64 << 20, 0, 0);
                expected = ChainError.AddressOutOfRange;
                break;
            case "length-over-int":
                q.Driver.WriteDescriptor(0, r.Addr, 0x8000_0000, 0, 0);
                expected = ChainError.TooLarge;
                break;
            case "nested-indirect":
            {
                ulong inner = q.Driver.WriteIndirectTable(r);
                ulong outer = q.Guest.Allocate(16);
                q.Guest.Write(outer, new VringDesc { addr = inner, len = 16, flags = VirtqDescFlags.Indirect });
                q.Driver.WriteDescriptor(0, outer, 16, VirtqDescFlags.Indirect, 0);
                expected = ChainError.NestedIndirect;
                break;
            }
            case "indirect-with-next":
                q.Driver.WriteDescriptor(0, q.Driver.WriteIndirectTable(r), 16, VirtqDescFlags.Indirect | VirtqDescFlags.Next, 1);
                expected = ChainError.IndirectWithNext;
                break;
            case "indirect-bad-length":
                q.Driver.WriteDescriptor(0, q.Driver.WriteIndirectTable(r), 17, VirtqDescFlags.Indirect, 0);
                expected = ChainError.BadIndirectLength;
                break;
            case "indirect-table-out-of-range":
                q.Driver.WriteDescriptor(0, 0xdead_0000_0000, 16, VirtqDescFlags.Indirect, 0);
                expected = ChainError.AddressOutOfRange;
                break;
            default: // readable-after-writable
                q.Driver.WriteDescriptor(0, w.Addr, 4, VirtqDescFlags.Write | VirtqDescFlags.Next, 1);
                q.Driver.WriteDescriptor(1, r.Addr, 1, 0, 0);
                expected = ChainError.ReadableAfterWritable;
                break;
        }
        q.Driver.Publish(0);
        DescriptorChain bad = q.Pop();
        Assert.Equal(expected, q.Collect(bad, out _, out _));
        q.Device.AddUsed(bad.Head, 0);
        Assert.True(q.Driver.TryGetUsed(out VringUsedElem used));
        Assert.Equal(0u, used.id);
        Assert.Equal(0u, used.len);

        // The next good chain goes through.
        q.Driver.TakeDescriptors(2);
        q.Driver.AddChain(q.Driver.Readable("ok"u8), q.Driver.Writable(2));
        Assert.Equal(ChainError.None, q.Collect(q.Pop(), out IoSegment[] rr, out _));
        Assert.Equal("ok"u8.ToArray(), rr[0].AsSpan().ToArray());
    }

    [Fact]
    public void Head_out_of_range_is_still_completable()
    {
        using var q = new QueuePair();
        q.Driver.Publish(100);
        DescriptorChain chain = q.Pop();
        Assert.Equal(ChainError.HeadOutOfRange, q.Collect(chain, out _, out _));
        q.Device.AddUsed(chain.Head, 0);
        Assert.True(q.Driver.TryGetUsed(out VringUsedElem used));
        Assert.Equal(100u, used.id);
    }

    [Fact]
    public void Too_many_segments_for_the_callers_span_is_reported()
    {
        using var q = new QueuePair();
        q.Driver.AddChain(q.Driver.Readable("a"u8), q.Driver.Readable("b"u8), q.Driver.Readable("c"u8));
        Assert.Equal(ChainError.TooManySegments, q.Collect(q.Pop(), out _, out _, capacity: 2));
    }

    [Fact]
    public void Impossible_avail_index_marks_the_queue_broken()
    {
        using var q = new QueuePair(size: 8);
        q.Driver.SetAvailIdx(9);
        Assert.False(q.Device.TryPopChain(out _));
        Assert.True(q.Device.IsBroken);
        q.Device.SetBase(0);
        Assert.False(q.Device.IsBroken);
    }

    [Fact]
    public void Used_element_is_published_with_the_index()
    {
        using var q = new QueuePair();
        ushort head = q.Driver.AddChain(q.Driver.Writable(16));
        DescriptorChain chain = q.Pop();
        q.Device.AddUsed(chain.Head, 12);
        Assert.Equal(1, q.Driver.UsedIdx);
        Assert.True(q.Driver.TryGetUsed(out VringUsedElem used));
        Assert.Equal(head, (ushort)used.id);
        Assert.Equal(12u, used.len);
    }

    [Fact]
    public void Event_idx_notifies_only_when_used_idx_passes_used_event()
    {
        using var q = new QueuePair(eventIdx: true);
        for (int i = 0; i < 6; i++)
        {
            q.Driver.AddChain(q.Driver.Writable(1));
        }
        // First completion: nothing signalled yet, so notify.
        q.Device.AddUsed(q.Pop().Head, 0);
        Assert.True(q.Device.NeedsNotification());
        // The driver wants an interrupt only once entry 3 is used (used idx moves past 3, i.e. to 4).
        q.Driver.UsedEvent = 3;
        q.Device.AddUsed(q.Pop().Head, 0); // used idx 2
        Assert.False(q.Device.NeedsNotification());
        q.Device.AddUsed(q.Pop().Head, 0); // 3
        Assert.False(q.Device.NeedsNotification());
        q.Device.AddUsed(q.Pop().Head, 0); // 4: passes used_event 3
        Assert.True(q.Device.NeedsNotification());
        // Nothing new since the last check.
        Assert.False(q.Device.NeedsNotification());
    }

    [Fact]
    public void Without_event_idx_the_no_interrupt_flag_is_honoured()
    {
        using var q = new QueuePair();
        q.Driver.AddChain(q.Driver.Writable(1));
        q.Device.AddUsed(q.Pop().Head, 0);
        q.Driver.AvailFlags = VringFlags.AvailNoInterrupt;
        Assert.False(q.Device.NeedsNotification());
        q.Driver.AvailFlags = 0;
        Assert.True(q.Device.NeedsNotification());
    }

    [Fact]
    public void Enable_notification_writes_avail_event_and_reports_new_work()
    {
        using var q = new QueuePair(eventIdx: true);
        q.Driver.AddChain(q.Driver.Writable(1));
        q.Pop();
        Assert.False(q.Device.EnableNotification());
        Assert.Equal(1, q.Driver.AvailEvent);
        q.Driver.AddChain(q.Driver.Writable(1));
        Assert.True(q.Device.EnableNotification());
    }

    [Fact]
    public void Disable_notification_without_event_idx_sets_no_notify()
    {
        using var q = new QueuePair();
        q.Device.DisableNotification();
        Assert.Equal(VringFlags.UsedNoNotify, q.Driver.UsedFlags);
        Assert.False(q.Device.EnableNotification());
        Assert.Equal(0, q.Driver.UsedFlags);
    }

    [Fact]
    public void Set_base_rereads_the_used_index_from_guest_memory()
    {
        using var q = new QueuePair();
        for (int i = 0; i < 3; i++)
        {
            q.Driver.AddChain(q.Driver.Writable(1));
            q.Device.AddUsed(q.Pop().Head, 0);
        }
        Assert.Equal(3, q.Device.NextAvail);
        // Guest reboot (rust-vmm/vhost #183): the new driver zeroes the rings and the front-end sets base 0.
        q.Driver.ResetRings();
        q.Device.SetBase(0);
        Assert.Equal(0, q.Device.NextUsed);
        q.Driver.AddChain(q.Driver.Writable(1));
        q.Device.AddUsed(q.Pop().Head, 0);
        Assert.Equal(1, q.Driver.UsedIdx);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(3u)]
    [InlineData(65536u)]
    [InlineData(1024u)] // above the max passed below
    public void Invalid_queue_sizes_are_refused(uint size)
    {
        using var memory = new GuestMemory();
        var queue = new SplitQueue(memory);
        Assert.False(queue.TrySetSize(size, max: 512));
        Assert.True(queue.TrySetSize(256, max: 512));
    }

    [Fact]
    public void Rings_outside_memory_or_misaligned_do_not_activate()
    {
        using var q = new QueuePair();
        q.Device.SetAddresses(q.Driver.DescUserAddr + 8, q.Driver.AvailUserAddr, q.Driver.UsedUserAddr);
        Assert.False(q.Device.TryActivate(out _));
        q.Device.SetAddresses(q.Driver.DescAddr, q.Driver.AvailAddr, q.Driver.UsedAddr); // guest, not user, addresses
        Assert.False(q.Device.TryActivate(out _));
        Assert.False(q.Device.TryPopChain(out _));
    }
}
