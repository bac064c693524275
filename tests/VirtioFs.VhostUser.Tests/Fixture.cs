using System.Text;
using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.VhostUser.Tests;

/// <summary>A backend served over a socketpair, 4 MiB of guest RAM and one mock queue per backend queue.</summary>
internal sealed class Device : IDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    public Device(RecordingBackend? backend = null, ushort queueSize = 16, TestGuestMemory? memory = null)
    {
        Backend = backend ?? new RecordingBackend();
        Memory = memory ?? TestGuestMemory.Single();
        Queues = Enumerable.Range(0, Backend.NumQueues).Select(i => new MockSplitQueue(Memory, i, queueSize)).ToArray();
        Logger = new ListLogger { Echo = Environment.GetEnvironmentVariable("VFS_TEST_LOG") == "1" };
        Harness = new VhostUserTestHarness(Backend, Logger);
    }

    public RecordingBackend Backend { get; }
    public ListLogger Logger { get; }
    public TestGuestMemory Memory { get; }
    public MockSplitQueue[] Queues { get; }
    public VhostUserTestHarness Harness { get; }
    public VhostUserFrontEnd FrontEnd => Harness.FrontEnd;

    /// <summary>Sends "text" on a queue with a writable buffer and returns the echoed reply.</summary>
    public string RoundTrip(int queue, string text, bool kick = true)
    {
        MockSplitQueue q = Queues[queue];
        ChainBuffer reply = q.Writable(64);
        ushort head = q.AddChain(q.Readable(Encoding.ASCII.GetBytes(text)), reply);
        if (kick)
        {
            q.Kick();
        }
        VringUsedElem used = q.WaitForUsed(Timeout);
        Assert.Equal(head, (ushort)used.id);
        return Encoding.ASCII.GetString(Memory.Span(reply.Addr, (int)used.len));
    }

    public void Dispose()
    {
        Harness.Dispose();
        foreach (MockSplitQueue q in Queues)
        {
            q.Dispose();
        }
        Memory.Dispose();
    }
}
