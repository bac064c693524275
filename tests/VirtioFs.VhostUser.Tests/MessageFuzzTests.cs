using VirtioFs.TestSupport;
using VirtioFs.VhostUser;

namespace VirtioFs.VhostUser.Tests;

/// <summary>Random requests with random payloads: the back-end refuses or applies them and keeps serving.</summary>
public class MessageFuzzTests
{
    private static readonly VhostUserRequest[] Replying =
    [
        VhostUserRequest.GetFeatures, VhostUserRequest.GetProtocolFeatures, VhostUserRequest.GetVringBase,
        VhostUserRequest.GetQueueNum, VhostUserRequest.GetConfig, VhostUserRequest.GetMaxMemSlots,
        VhostUserRequest.GetStatus, VhostUserRequest.SetLogBase,
    ];

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    public void Random_messages_do_not_break_the_connection(int seed)
    {
        var random = new Random(seed);
        using var d = new Device();
        d.Harness.StartLikeQemu72(d.Memory, d.Queues);
        for (int i = 0; i < 500; i++)
        {
            var request = (VhostUserRequest)random.Next(0, 45);
            if (Array.IndexOf(Replying, request) >= 0)
            {
                continue; // these answer; the test reads no replies
            }
            byte[] payload = new byte[random.Next(4) == 0 ? random.Next(0, 300) : random.Next(0, 48)];
            random.NextBytes(payload);
            if (payload.Length >= 8 && random.Next(2) == 0)
            {
                payload[0] = (byte)random.Next(3); // plausible ring index
                payload[1] = payload[2] = payload[3] = 0;
            }
            d.FrontEnd.Send(request, payload, flags: VhostUserFlags.Version);
        }
        Assert.Equal(2UL, d.FrontEnd.GetQueueNum());
        Assert.False(d.Harness.Server.IsCompleted);
    }
}
