using VirtioFs.VhostUser;

namespace VirtioFs.VhostUser.Tests;

/// <summary>Byte-level cases for the pure message validator.</summary>
public class VhostUserMessageTests
{
    [Theory]
    [InlineData(0x1u, true)]
    [InlineData(0x9u, true)]   // NEED_REPLY
    [InlineData(0x0u, false)]  // version 0
    [InlineData(0x2u, false)]  // version 2
    [InlineData(0x5u, false)]  // REPLY on a request
    [InlineData(0x11u, false)] // unknown bit 4
    public void Header_flags(uint flags, bool valid) => Assert.Equal(valid, VhostUserMessage.ValidateFlags(flags) is null);

    [Theory]
    // request, payload bytes, fds, valid
    [InlineData(VhostUserRequest.GetFeatures, "", 0, true)]
    [InlineData(VhostUserRequest.GetFeatures, "00000000", 0, false)]
    [InlineData(VhostUserRequest.SetFeatures, "0000000001000000", 0, true)]
    [InlineData(VhostUserRequest.SetFeatures, "00000000", 0, false)]
    [InlineData(VhostUserRequest.SetFeatures, "0000000001000000", 1, false)]
    [InlineData(VhostUserRequest.SetVringNum, "0100000000040000", 0, true)]
    [InlineData(VhostUserRequest.SetVringNum, "01000000", 0, false)]
    [InlineData(VhostUserRequest.SetVringKick, "0100000000000000", 1, true)]
    [InlineData(VhostUserRequest.SetVringKick, "0100000000000000", 0, false)]     // fd expected
    [InlineData(VhostUserRequest.SetVringKick, "0101000000000000", 0, true)]      // bit 8: no fd
    [InlineData(VhostUserRequest.SetVringKick, "0101000000000000", 1, false)]     // no-fd flag with an fd
    [InlineData(VhostUserRequest.SetVringCall, "0102000000000000", 0, false)]     // reserved bit 9
    [InlineData(VhostUserRequest.SetMemTable, "0100000000000000" + Region, 1, true)]
    [InlineData(VhostUserRequest.SetMemTable, "0100000000000000" + Region, 0, false)]
    [InlineData(VhostUserRequest.SetMemTable, "0200000000000000" + Region, 1, false)] // count says 2
    [InlineData(VhostUserRequest.SetMemTable, "0000000000000000", 0, false)]
    [InlineData(VhostUserRequest.SetMemTable, "0900000000000000", 9, false)]          // more than 8
    [InlineData(VhostUserRequest.AddMemReg, "0000000000000000" + Region, 1, true)]
    [InlineData(VhostUserRequest.AddMemReg, "0000000000000000" + Region, 0, false)]
    [InlineData(VhostUserRequest.RemMemReg, "0000000000000000" + Region, 0, true)]
    [InlineData(VhostUserRequest.GetConfig, "00000000" + "04000000" + "00000000" + "41424344", 0, true)]
    [InlineData(VhostUserRequest.GetConfig, "00000000" + "08000000" + "00000000" + "41424344", 0, false)] // size lies
    [InlineData(VhostUserRequest.GetConfig, "FE000000" + "04000000" + "00000000" + "41424344", 0, false)] // past 256
    [InlineData(VhostUserRequest.SetBackendReqFd, "", 1, true)]
    [InlineData(VhostUserRequest.SetBackendReqFd, "", 0, false)]
    [InlineData(VhostUserRequest.SetLogBase, "00100000000000000000000000000000", 1, true)]
    [InlineData((VhostUserRequest)99, "", 0, false)]
    public void Payload_shapes(VhostUserRequest request, string hex, int fds, bool valid) =>
        Assert.Equal(valid, VhostUserMessage.Validate(request, Convert.FromHexString(hex), fds) is null);

    private const string Region =
        "0000001000000000" + "0000100000000000" + "00000000007F0000" + "0000000000000000";
}
