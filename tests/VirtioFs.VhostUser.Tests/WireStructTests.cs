using System.Runtime.CompilerServices;
using VirtioFs.VhostUser;

namespace VirtioFs.VhostUser.Tests;

public class WireStructTests
{
    // Sizes from qemu vhost-user.rst and linux/vhost_types.h.
    [Fact]
    public void Message_structs_have_their_wire_sizes()
    {
        Assert.Equal(12, Unsafe.SizeOf<VhostUserMsgHeader>());
        Assert.Equal(8, Unsafe.SizeOf<VhostVringState>());
        Assert.Equal(40, Unsafe.SizeOf<VhostVringAddr>());
        Assert.Equal(8, Unsafe.SizeOf<VhostUserMemory>());
        Assert.Equal(32, Unsafe.SizeOf<VhostUserMemoryRegion>());
        Assert.Equal(40, Unsafe.SizeOf<VhostUserSingleMemoryRegion>());
        Assert.Equal(16, Unsafe.SizeOf<VhostUserLog>());
        Assert.Equal(12, Unsafe.SizeOf<VhostUserConfig>());
    }
}
