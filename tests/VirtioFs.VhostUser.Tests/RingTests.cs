using VirtioFs.TestSupport;
using VirtioFs.VhostUser;
using VirtioFs.Virtio;

namespace VirtioFs.VhostUser.Tests;

public class RingTests
{
    [Fact]
    public void Kick_before_enable_is_not_lost()
    {
        using var d = new Device();
        VhostUserFrontEnd f = d.FrontEnd;
        f.SetProtocolFeatures(f.GetProtocolFeatures());
        f.SetFeatures(f.GetFeatures());
        f.SetMemTable(d.Memory);
        MockSplitQueue q = d.Queues[1];
        f.StartQueueLikeQemu(q);
        q.AddChain(q.Readable("early"u8), q.Writable(8));
        q.Kick();
        Thread.Sleep(150);
        Assert.False(q.TryGetUsed(out _)); // disabled: not processed yet
        f.SetVringEnable(1, true);
        Assert.Equal(5u, q.WaitForUsed(Device.Timeout).len);
    }

    [Fact]
    public void Indirect_chain_round_trips()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        ChainBuffer w1 = q.Writable(3);
        ChainBuffer w2 = q.Writable(16);
        q.AddIndirectChain(q.Readable("abc"u8), q.Readable("defg"u8), w1, w2);
        q.Kick();
        Assert.Equal(7u, q.WaitForUsed(Device.Timeout).len);
        Assert.Equal("abc"u8.ToArray(), d.Memory.Span(w1.Addr, 3).ToArray());
        Assert.Equal("defg"u8.ToArray(), d.Memory.Span(w2.Addr, 4).ToArray());
    }

    [Fact]
    public void Event_idx_suppresses_calls_until_used_event_is_passed()
    {
        using var d = new Device();
        ulong acked = d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        Assert.NotEqual(0UL, acked & (1UL << 29));
        MockSplitQueue q = d.Queues[1];

        Assert.Equal("1", d.RoundTrip(1, "1"));
        Assert.True(q.WaitForCall(Device.Timeout)); // first completion always signals

        q.UsedEvent = 3; // interrupt me when used idx moves past 3
        Assert.Equal("2", d.RoundTrip(1, "2")); // used idx 2
        Assert.Equal("3", d.RoundTrip(1, "3")); // used idx 3
        Assert.False(q.WaitForCall(TimeSpan.FromMilliseconds(200)));
        Assert.Equal("4", d.RoundTrip(1, "4")); // used idx 4 passes 3
        Assert.True(q.WaitForCall(Device.Timeout));
    }

    [Fact]
    public void Without_event_idx_every_batch_signals()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues, clearFeatures: 1UL << 29);
        MockSplitQueue q = d.Queues[1];
        Assert.Equal("a", d.RoundTrip(1, "a"));
        Assert.True(q.WaitForCall(Device.Timeout));
        Assert.Equal("b", d.RoundTrip(1, "b"));
        Assert.True(q.WaitForCall(Device.Timeout));
    }

    public static TheoryData<string> BadChains => new() { "loop", "out-of-range-address", "oversized-length", "nested-indirect", "next-out-of-range" };

    [Theory]
    [MemberData(nameof(BadChains))]
    public void Malformed_chain_is_returned_with_length_zero_and_the_queue_keeps_working(string kind)
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        ChainBuffer r = q.Readable("x"u8);
        ushort head = q.TakeDescriptors(2);
        ushort second = (ushort)(head + 1);
        switch (kind)
        {
            case "loop":
                q.WriteDescriptor(head, r.Addr, 1, VirtqDescFlags.Next, second);
                q.WriteDescriptor(second, r.Addr, 1, VirtqDescFlags.Next, head);
                break;
            case "out-of-range-address":
                q.WriteDescriptor(head, 0xffff_0000_0000, 16, 0, 0);
                break;
            case "oversized-length":
                q.WriteDescriptor(head, r.Addr, uint.MaxValue, VirtqDescFlags.Write, 0);
                break;
            case "nested-indirect":
            {
                ulong inner = q.WriteIndirectTable(r);
                ulong outer = d.Memory.Allocate(16);
                d.Memory.Write(outer, new VringDesc { addr = inner, len = 16, flags = VirtqDescFlags.Indirect });
                q.WriteDescriptor(head, outer, 16, VirtqDescFlags.Indirect, 0);
                break;
            }
            default:
                q.WriteDescriptor(head, r.Addr, 1, VirtqDescFlags.Next, 999);
                break;
        }
        q.Publish(head);
        q.Kick();
        VringUsedElem used = q.WaitForUsed(Device.Timeout);
        Assert.Equal(head, (ushort)used.id);
        Assert.Equal(0u, used.len);
        Assert.Contains(d.Backend.Chains, c => c.Head == head && c.Error != ChainError.None);
        Assert.Equal("still alive", d.RoundTrip(1, "still alive"));
    }

    [Fact]
    public void Get_vring_base_stops_the_ring_and_returns_the_next_avail_index()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        for (int i = 0; i < 3; i++)
        {
            d.RoundTrip(1, $"m{i}");
        }
        Assert.Equal(3u, d.FrontEnd.GetVringBase(1));
        // Stopped: nothing is consumed any more.
        q.AddChain(q.Readable("late"u8), q.Writable(8));
        q.Kick();
        Thread.Sleep(150);
        Assert.False(q.TryGetUsed(out _));
        // Restart from base 3 (as after migration): the pending chain is served.
        d.FrontEnd.SetVringBase(1, 3);
        d.FrontEnd.SetVringKick(1, q.KickFd);
        Assert.Equal(4u, q.WaitForUsed(Device.Timeout).len);
    }

    [Fact]
    public void Guest_reboot_restarts_rings_from_zero()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        d.RoundTrip(1, "before");
        d.RoundTrip(1, "reboot");
        d.Harness.StopLikeQemu72(d.Queues);
        foreach (MockSplitQueue q in d.Queues)
        {
            q.ResetRings();
            d.FrontEnd.StartQueueLikeQemu(q);
            d.FrontEnd.SetVringEnable(q.Index, true);
        }
        Assert.Equal("after", d.RoundTrip(1, "after"));
        Assert.Equal(1, d.Queues[1].UsedIdx);
    }

    [Fact]
    public void Chains_can_be_completed_later_from_another_thread()
    {
        using var d = new Device();
        d.Backend.OnChain = (int queue, Vring vring, ref DescriptorChain chain) =>
        {
            ushort head = chain.Head;
            Task.Run(() =>
            {
                Thread.Sleep(20);
                vring.Complete(head, 42);
            });
            return Vring.Deferred;
        };
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        ushort h1 = q.AddChain(q.Writable(64));
        ushort h2 = q.AddChain(q.Writable(64));
        q.Kick();
        var seen = new HashSet<uint> { q.WaitForUsed(Device.Timeout).id, q.WaitForUsed(Device.Timeout).id };
        Assert.Equal(new HashSet<uint> { h1, h2 }, seen);
        Assert.True(q.WaitForCall(Device.Timeout));
    }

    [Fact]
    public void Concurrent_completions_from_a_thread_pool_all_reach_the_used_ring()
    {
        using var d = new Device(queueSize: 16);
        d.Backend.OnChain = (int queue, Vring vring, ref DescriptorChain chain) =>
        {
            ushort head = chain.Head;
            ThreadPool.UnsafeQueueUserWorkItem(_ => vring.Complete(head, head + 1u), null);
            return Vring.Deferred;
        };
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        int total = 0;
        for (int round = 0; round < 50; round++)
        {
            var heads = new HashSet<uint>();
            for (int i = 0; i < 8; i++)
            {
                heads.Add(q.AddChain(q.Writable(4)));
            }
            q.Kick();
            for (int i = 0; i < 8; i++)
            {
                VringUsedElem used = q.WaitForUsed(Device.Timeout);
                Assert.True(heads.Remove(used.id));
                Assert.Equal(used.id + 1, used.len);
                total++;
            }
        }
        Assert.Equal(400, total);
        Assert.Equal((ushort)400, q.UsedIdx);
    }

    [Fact]
    public void Handler_exception_completes_the_chain_with_zero()
    {
        using var d = new Device();
        int calls = 0;
        d.Backend.OnChain = (int queue, Vring vring, ref DescriptorChain chain) =>
            Interlocked.Increment(ref calls) == 1 ? throw new InvalidOperationException("boom") : 7u;
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        q.AddChain(q.Writable(8));
        q.Kick();
        Assert.Equal(0u, q.WaitForUsed(Device.Timeout).len);
        q.AddChain(q.Writable(8));
        q.Kick();
        Assert.Equal(7u, q.WaitForUsed(Device.Timeout).len);
    }
}
