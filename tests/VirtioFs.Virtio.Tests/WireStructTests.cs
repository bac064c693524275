using System.Runtime.CompilerServices;
using VirtioFs.Virtio;

namespace VirtioFs.Virtio.Tests;

public class WireStructTests
{
    // Sizes from linux/virtio_ring.h.
    [Fact]
    public void Ring_structs_match_the_kernel_layout()
    {
        Assert.Equal(16, Unsafe.SizeOf<VringDesc>());
        Assert.Equal(4, Unsafe.SizeOf<VringAvail>());
        Assert.Equal(8, Unsafe.SizeOf<VringUsedElem>());
        Assert.Equal(4, Unsafe.SizeOf<VringUsed>());
    }
}
