using System.Text;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.VhostUser.Tests;

public class NegotiationTests
{
    private const ulong TransportFeatures = (1UL << 32) | (1UL << 28) | (1UL << 29) | (1UL << 30);

    [Fact]
    public void Offers_transport_and_device_features_and_the_documented_protocol_features()
    {
        using var d = new Device(new RecordingBackend(deviceFeatures: 1UL << 5));
        Assert.Equal(TransportFeatures | (1UL << 5), d.FrontEnd.GetFeatures());
        ulong protocol = d.FrontEnd.GetProtocolFeatures();
        // MQ | LOG_SHMFD | REPLY_ACK | BACKEND_REQ | RESET_DEVICE | CONFIGURE_MEM_SLOTS; no CONFIG without config space.
        Assert.Equal((1UL << 0) | (1UL << 1) | (1UL << 3) | (1UL << 5) | (1UL << 13) | (1UL << 15), protocol);
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
        Assert.Equal(509UL, d.FrontEnd.GetMaxMemSlots());
    }

    [Fact]
    public void Qemu_7_2_sequence_brings_the_device_up_and_down()
    {
        using var d = new Device();
        ulong acked = d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        Assert.Equal(acked, d.Backend.AcknowledgedFeatures);
        Assert.Equal("ping", d.RoundTrip(1, "ping"));
        Assert.Equal("hiprio", d.RoundTrip(0, "hiprio"));
        Assert.Equal("again", d.RoundTrip(1, "again"));
        uint[] bases = d.Harness.StopLikeQemu72(d.Queues);
        Assert.Equal([1u, 2u], bases);
    }

    [Fact]
    public void Cloud_hypervisor_sequence_gets_an_ack_for_every_message()
    {
        using var d = new Device();
        // Every Set() in this sequence carries NEED_REPLY and throws unless the ack is 0.
        d.Harness.StartLikeCloudHypervisor(d.Memory, d.Queues);
        Assert.True(d.FrontEnd.AlwaysNeedReply);
        Assert.Equal("chv", d.RoundTrip(1, "chv"));
        d.FrontEnd.SetVringEnable(1, false);
        Assert.Equal(1u, d.FrontEnd.GetVringBase(1));
    }

    [Fact]
    public void Reply_ack_reports_failure_with_a_non_zero_status()
    {
        using var d = new Device();
        d.FrontEnd.SetProtocolFeatures(d.FrontEnd.GetProtocolFeatures());
        d.FrontEnd.AlwaysNeedReply = true;
        // Queue size 3 is not a power of two.
        var ex = Assert.Throws<VhostUserException>(() => d.FrontEnd.SetVringNum(0, 3));
        Assert.Contains("refused", ex.Message);
        d.FrontEnd.SetVringNum(0, 16);
        // Above the backend's MaxQueueSize (1024).
        Assert.Throws<VhostUserException>(() => d.FrontEnd.SetVringNum(0, 2048));
    }

    [Fact]
    public void Features_that_were_not_offered_are_refused()
    {
        using var d = new Device();
        d.FrontEnd.SetProtocolFeatures(1UL << 3);
        d.FrontEnd.AlwaysNeedReply = true;
        Assert.Throws<VhostUserException>(() => d.FrontEnd.SetFeatures(1UL << 40));
        Assert.Throws<VhostUserException>(() => d.FrontEnd.SetProtocolFeatures(1UL << 16));
        d.FrontEnd.SetFeatures(1UL << 32);
    }

    [Fact]
    public void Config_space_is_read_through_the_backend_and_bounds_checked()
    {
        byte[] config = new byte[40];
        Encoding.ASCII.GetBytes("myfs").CopyTo(config, 0);
        config[36] = 1; // num_request_queues
        using var d = new Device(new RecordingBackend(config: config));
        ulong protocol = d.FrontEnd.GetProtocolFeatures();
        Assert.NotEqual(0UL, protocol & (1UL << 9));
        d.FrontEnd.SetProtocolFeatures(protocol);
        Assert.Equal(config, d.FrontEnd.GetConfig(0, 40));
        Assert.Equal(config.AsSpan(36, 4).ToArray(), d.FrontEnd.GetConfig(36, 4));
        // Past VHOST_USER_MAX_CONFIG_SIZE: refused with an empty reply, and the connection stays up.
        Assert.Empty(d.FrontEnd.GetConfig(250, 10));
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Status_round_trips()
    {
        using var d = new Device();
        d.FrontEnd.SetStatus(0x0f);
        Assert.Equal(0x0fUL, d.FrontEnd.GetStatus());
    }

    [Fact]
    public void Reset_device_resets_the_backend_and_stops_the_rings()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        Assert.Equal("x", d.RoundTrip(1, "x"));
        d.FrontEnd.AlwaysNeedReply = true;
        d.FrontEnd.ResetDevice();
        Assert.Equal(1, d.Backend.ResetCount);
        // Stopped: a new chain is not consumed.
        d.Queues[1].AddChain(d.Queues[1].Readable("y"u8), d.Queues[1].Writable(4));
        d.Queues[1].Kick();
        Thread.Sleep(100);
        Assert.False(d.Queues[1].TryGetUsed(out _));
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Without_protocol_features_rings_are_enabled_at_start()
    {
        using var d = new Device();
        d.FrontEnd.SetOwner();
        d.FrontEnd.SetFeatures(1UL << 32); // no PROTOCOL_FEATURES
        d.FrontEnd.SetMemTable(d.Memory);
        d.FrontEnd.StartQueueLikeQemu(d.Queues[1]);
        Assert.Equal("legacy", d.RoundTrip(1, "legacy"));
    }

    [Fact]
    public void Kick_fd_with_no_fd_flag_makes_the_ring_poll()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        d.FrontEnd.SetVringKick(1, -1);
        Assert.Equal("polled", d.RoundTrip(1, "polled", kick: false));
    }

    [Fact]
    public void In_band_vring_kick_wakes_the_ring()
    {
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        MockSplitQueue q = d.Queues[1];
        q.AddChain(q.Readable("inband"u8), q.Writable(8));
        d.FrontEnd.VringKick(1);
        Assert.Equal(6u, q.WaitForUsed(Device.Timeout).len);
    }
}
