using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.Virtio.Tests;

/// <summary>Random descriptor tables: the walk must terminate, and whatever it accepts must lie in guest memory.</summary>
public unsafe class ChainFuzzTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_descriptor_tables_never_escape_guest_memory(int seed)
    {
        var random = new Random(seed);
        using var q = new QueuePair(size: 16);
        TestRegion region = q.Guest.Regions[0];
        ulong lo = region.GuestPhysAddr, hi = region.GuestPhysAddr + region.Size;
        // The device maps the memfd at its own address.
        Assert.True(q.Memory.TryTranslate(lo, region.Size, out byte* deviceBase));
        // A spare area for indirect tables, filled with random descriptors too.
        ulong tables = q.Guest.Allocate(16 * 64, 16);
        var readable = new IoSegment[64];
        var writable = new IoSegment[64];
        int accepted = 0;
        for (int round = 0; round < 2000; round++)
        {
            for (ushort i = 0; i < 16; i++)
            {
                q.Driver.WriteDescriptor(i, RandomAddr(), RandomLen(), (ushort)random.Next(8), (ushort)random.Next(20));
            }
            for (int i = 0; i < 64; i++)
            {
                q.Guest.Write(tables + 16UL * (ulong)i, new VringDesc
                {
                    addr = RandomAddr(), len = RandomLen(), flags = (ushort)random.Next(8), next = (ushort)random.Next(70),
                });
            }
            // Point some descriptors at the random indirect tables.
            if (random.Next(3) == 0)
            {
                q.Driver.WriteDescriptor((ushort)random.Next(16), tables + 16UL * (ulong)random.Next(8),
                    (uint)(16 * random.Next(0, 40)), VirtqDescFlags.Indirect, 0);
            }
            q.Driver.Publish((ushort)random.Next(18));
            Assert.True(q.Device.TryPopChain(out DescriptorChain chain));
            ChainError error = chain.TryCollect(readable, writable, out int nr, out int nw);
            if (error == ChainError.None)
            {
                accepted++;
                foreach (IoSegment s in readable.AsSpan(0, nr).ToArray().Concat(writable.AsSpan(0, nw).ToArray()))
                {
                    Assert.True(s.Pointer >= deviceBase && s.Pointer + s.Length <= deviceBase + region.Size);
                }
            }
            q.Device.AddUsed(chain.Head, 0);
            q.Driver.TryGetUsed(out _);
        }
        Assert.InRange(accepted, 20, 1980); // the generator exercises both outcomes (about 10% accepted)

        ulong RandomAddr() => random.Next(4) switch
        {
            0 => (ulong)random.NextInt64(),
            1 => hi - (ulong)random.Next(0, 64),
            _ => lo + (ulong)random.NextInt64(0, (long)(hi - lo)),
        };

        uint RandomLen() => random.Next(4) switch
        {
            0 => (uint)random.NextInt64(0, uint.MaxValue),
            _ => (uint)random.Next(0, 256),
        };
    }
}
