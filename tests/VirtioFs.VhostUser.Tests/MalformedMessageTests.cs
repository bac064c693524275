using System.Runtime.InteropServices;
using VirtioFs.TestSupport;
using VirtioFs.VhostUser;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser.Tests;

/// <summary>Hostile or broken front-end messages are refused while the connection keeps serving.</summary>
[Collection(FdCountCollection.Name)]
public class MalformedMessageTests
{
    private static void EnableReplyAck(VhostUserFrontEnd f) => f.SetProtocolFeatures(1UL << 3);

    private static ulong Ack(VhostUserFrontEnd f, VhostUserRequest request)
    {
        VhostUserReply reply = f.ReadReply();
        Assert.Equal(request, reply.Request);
        return reply.U64;
    }

    [Fact]
    public void Wrong_payload_size_is_refused_with_a_failed_ack()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.Send(VhostUserRequest.SetVringNum, new byte[4], flags: VhostUserFlags.Version | VhostUserFlags.NeedReply);
        Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetVringNum));
        d.FrontEnd.Send(VhostUserRequest.SetVringAddr, new byte[20], flags: VhostUserFlags.Version | VhostUserFlags.NeedReply);
        Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetVringAddr));
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Unknown_request_gets_an_error_reply_and_the_connection_stays_up()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.Send((VhostUserRequest)99, new byte[8], flags: VhostUserFlags.Version | VhostUserFlags.NeedReply);
        Assert.NotEqual(0UL, Ack(d.FrontEnd, (VhostUserRequest)99));
        // Without NEED_REPLY nothing comes back.
        d.FrontEnd.Send((VhostUserRequest)77, ReadOnlySpan<byte>.Empty);
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void A_throwing_backend_fails_the_request_but_not_the_connection()
    {
        var backend = new RecordingBackend { OnAcknowledgeFeatures = _ => throw new InvalidOperationException("no") };
        using var d = new Device(backend);
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.AlwaysNeedReply = true;
        Assert.Throws<VhostUserException>(() => d.FrontEnd.SetFeatures(1UL << 32));
        Assert.Contains(d.Logger.Entries, e => e.Id.Id == 1012);
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Bad_version_and_reply_flag_are_refused()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.Send(VhostUserRequest.SetOwner, ReadOnlySpan<byte>.Empty, flags: 2 | VhostUserFlags.NeedReply);
        Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetOwner));
        d.FrontEnd.Send(VhostUserRequest.SetOwner, ReadOnlySpan<byte>.Empty,
            flags: VhostUserFlags.Version | VhostUserFlags.Reply | VhostUserFlags.NeedReply);
        Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetOwner));
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Oversized_payload_is_drained_and_refused()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.Send(VhostUserRequest.SetMemTable, new byte[0x2000], flags: VhostUserFlags.Version | VhostUserFlags.NeedReply);
        Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetMemTable));
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Get_request_with_a_bad_payload_gets_an_empty_reply_not_silence()
    {
        using var d = new Device();
        d.FrontEnd.Send(VhostUserRequest.GetVringBase, new VhostVringState { index = 200 });
        Assert.Empty(d.FrontEnd.ReadReply().Body);
        d.FrontEnd.Send(VhostUserRequest.GetFeatures, new byte[3]);
        Assert.Empty(d.FrontEnd.ReadReply().Body);
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Ring_index_out_of_range_is_refused()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.AlwaysNeedReply = true;
        Assert.Throws<VhostUserException>(() => d.FrontEnd.SetVringNum(2, 16));
        Assert.Throws<VhostUserException>(() => d.FrontEnd.SetVringCall(7, -1));
        d.FrontEnd.SetVringNum(1, 16);
    }

    [Fact]
    public void Memory_table_with_mismatched_fds_or_bad_regions_is_refused()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.AlwaysNeedReply = true;
        TestRegion r = d.Memory.Regions[0];
        byte[] payload = new byte[8 + 32];
        MemoryMarshal.Write(payload, new VhostUserMemory { nregions = 1 });
        MemoryMarshal.Write(payload.AsSpan(8), new VhostUserMemoryRegion
        {
            guest_phys_addr = r.GuestPhysAddr, memory_size = r.Size, userspace_addr = r.UserspaceAddr,
        });
        Assert.Throws<VhostUserException>(() => d.FrontEnd.Set(VhostUserRequest.SetMemTable, payload)); // no fd
        // A region bigger than its memfd (would SIGBUS on access).
        MemoryMarshal.Write(payload.AsSpan(8), new VhostUserMemoryRegion
        {
            guest_phys_addr = r.GuestPhysAddr, memory_size = r.Size * 2, userspace_addr = r.UserspaceAddr,
        });
        Assert.Throws<VhostUserException>(() => d.FrontEnd.Set(VhostUserRequest.SetMemTable, payload, [r.Fd]));
        d.FrontEnd.SetMemTable(d.Memory);
    }

    [Fact]
    public void Fds_of_refused_messages_are_closed()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.GetQueueNum(); // the connection (and its eventfds) exists before we count
        int before = SettledFdCount();
        for (int i = 0; i < 20; i++)
        {
            int e1 = eventfd(0, EFD_CLOEXEC);
            int e2 = eventfd(0, EFD_CLOEXEC);
            // SET_OWNER takes no fds; UNKNOWN neither.
            d.FrontEnd.Send(VhostUserRequest.SetOwner, ReadOnlySpan<byte>.Empty, [e1, e2], VhostUserFlags.Version | VhostUserFlags.NeedReply);
            Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetOwner));
            d.FrontEnd.Send((VhostUserRequest)99, ReadOnlySpan<byte>.Empty, [e1], VhostUserFlags.Version | VhostUserFlags.NeedReply);
            Assert.NotEqual(0UL, Ack(d.FrontEnd, (VhostUserRequest)99));
            close(e1);
            close(e2);
        }
        // 20 rounds would leak 60 fds; a little slack absorbs fds the runtime opens lazily meanwhile.
        AssertNoFdLeak(before);
    }

    [Fact]
    public void Too_many_fds_are_refused_and_closed()
    {
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.GetQueueNum(); // the connection (and its eventfds) exists before we count
        int before = SettledFdCount();
        int e = eventfd(0, EFD_CLOEXEC);
        int[] fds = Enumerable.Repeat(e, 40).ToArray();
        for (int i = 0; i < 3; i++)
        {
            // 40 fds: the back-end takes 32, the kernel drops the rest and flags MSG_CTRUNC.
            d.FrontEnd.Send(VhostUserRequest.SetOwner, ReadOnlySpan<byte>.Empty, fds, VhostUserFlags.Version | VhostUserFlags.NeedReply);
            Assert.NotEqual(0UL, Ack(d.FrontEnd, VhostUserRequest.SetOwner));
        }
        close(e);
        AssertNoFdLeak(before);
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
    }

    [Fact]
    public void Stream_cut_in_the_middle_of_a_payload_ends_the_session_cleanly()
    {
        var backend = new RecordingBackend();
        var d = new Device(backend);
        try
        {
            // Header claims 8 bytes; only 4 arrive before the front-end goes away.
            d.FrontEnd.Send(VhostUserRequest.SetFeatures, new byte[4], sizeOverride: 8);
            d.FrontEnd.Dispose();
            Assert.True(d.Harness.WaitForServerExit(Device.Timeout));
            Assert.True(d.Harness.Server.IsCompletedSuccessfully);
            Assert.Equal(1, backend.ResetCount);
        }
        finally
        {
            d.Dispose();
        }
    }

    [Fact]
    public void Ring_fds_that_are_not_eventfds_are_refused_and_closed()
    {
        // A buggy front-end passing a regular file (always "readable") as a kick fd would make the ring worker spin;
        // a pipe or a regular file is refused at SET_VRING_KICK/CALL/ERR and the fd closed, the ring stays unstarted.
        using var d = new Device();
        EnableReplyAck(d.FrontEnd);
        d.FrontEnd.GetQueueNum();
        string file = Path.GetTempFileName();
        try
        {
            int before = SettledFdCount();
            for (int i = 0; i < 5; i++)
            {
                using var regular = File.OpenHandle(file, FileMode.Open, FileAccess.ReadWrite);
                int fd = (int)regular.DangerousGetHandle();
                foreach (VhostUserRequest request in new[] { VhostUserRequest.SetVringKick, VhostUserRequest.SetVringCall, VhostUserRequest.SetVringErr })
                {
                    d.FrontEnd.Send(request, (ulong)1, [fd], VhostUserFlags.Version | VhostUserFlags.NeedReply);
                    Assert.NotEqual(0UL, Ack(d.FrontEnd, request));
                }
            }
            AssertNoFdLeak(before);
            Assert.Contains(d.Logger.Entries, e => e.Message.Contains("not an eventfd", StringComparison.Ordinal));
            Assert.Equal(0, d.Backend.HandleQueueCalls);
        }
        finally
        {
            File.Delete(file);
        }
        // The same rings then start normally on real eventfds.
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        Assert.Equal("after", d.RoundTrip(1, "after"));
    }

    private static int OpenFdCount() => Directory.GetFiles("/proc/self/fd").Length;

    /// <summary>The fd count once earlier tests' teardown has finished: their finalizers run and their server threads
    /// close what they held (seen in CI: the count fell by up to 22 during a measurement), read until it holds still.</summary>
    private static int SettledFdCount()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        int count = OpenFdCount();
        for (int i = 0; i < 100; i++)
        {
            Thread.Sleep(20);
            int again = OpenFdCount();
            if (again == count) return count;
            count = again;
        }
        return count;
    }

    /// <summary>A leak can only raise the count; a lower count is other tests' fds closing late, not ours.</summary>
    private static void AssertNoFdLeak(int before)
    {
        int after = SettledFdCount();
        Assert.True(after <= before + 2, $"{after - before} more fds open than before (leaked)");
    }
}

/// <summary>Tests that count this process's open fds must not run beside tests that open fds.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FdCountCollection
{
    public const string Name = "fd-count";
}
