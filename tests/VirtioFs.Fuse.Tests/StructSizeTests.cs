using System.Runtime.CompilerServices;

namespace VirtioFs.Fuse.Tests;

/// <summary>Wire struct sizes pinned to include/uapi/linux/fuse.h (7.38).</summary>
public class StructSizeTests
{
    [Fact]
    public void Sizes_match_the_kernel_header()
    {
        Assert.Equal(40, Unsafe.SizeOf<FuseInHeader>());
        Assert.Equal(16, Unsafe.SizeOf<FuseOutHeader>());
        Assert.Equal(64, Unsafe.SizeOf<FuseInitIn>());
        Assert.Equal(64, Unsafe.SizeOf<FuseInitOut>());
        Assert.Equal(88, Unsafe.SizeOf<FuseAttr>());
        Assert.Equal(128, Unsafe.SizeOf<FuseEntryOut>());
        Assert.Equal(104, Unsafe.SizeOf<FuseAttrOut>());
        Assert.Equal(80, Unsafe.SizeOf<FuseKstatfs>());
        Assert.Equal(80, Unsafe.SizeOf<FuseStatfsOut>());
        Assert.Equal(24, Unsafe.SizeOf<FuseFileLock>());
        Assert.Equal(88, Unsafe.SizeOf<FuseSetattrIn>());
        Assert.Equal(40, Unsafe.SizeOf<FuseReadIn>());
        Assert.Equal(40, Unsafe.SizeOf<FuseWriteIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseWriteOut>());
        Assert.Equal(16, Unsafe.SizeOf<FuseOpenOut>());
        Assert.Equal(8, Unsafe.SizeOf<FuseOpenIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseCreateIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseReleaseIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseFlushIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseGetattrIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseMknodIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseMkdirIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseRename2In>());
        Assert.Equal(16, Unsafe.SizeOf<FuseSetxattrIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseGetxattrIn>());
        Assert.Equal(48, Unsafe.SizeOf<FuseLkIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseLkOut>());
        Assert.Equal(16, Unsafe.SizeOf<FuseForgetOne>());
        Assert.Equal(8, Unsafe.SizeOf<FuseBatchForgetIn>());
        Assert.Equal(32, Unsafe.SizeOf<FuseFallocateIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseLseekIn>());
        Assert.Equal(56, Unsafe.SizeOf<FuseCopyFileRangeIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseDirent>());
        Assert.Equal(152, Unsafe.SizeOf<FuseDirentplus>());
        Assert.Equal(16, Unsafe.SizeOf<IoSegment>());
    }

    [Fact]
    public unsafe void IoSegment_has_iovec_layout()
    {
        byte b = 0;
        var seg = new IoSegment(&b, 0x1234);
        ulong* raw = (ulong*)&seg;
        Assert.Equal((ulong)&b, raw[0]);
        Assert.Equal(0x1234UL, raw[1]); // the upper half of iov_len is zero
    }
}
