using VirtioFs.TestSupport;
using VirtioFs.Virtio;

namespace VirtioFs.Virtio.Tests;

public unsafe class GuestMemoryTests
{
    private const ulong Base = 0x1000_0000;
    private const ulong Size = 0x10_0000;

    [Fact]
    public void Buffer_ending_on_the_last_byte_of_a_region_is_valid()
    {
        using var test = new TestGuestMemory((Base, Size));
        using GuestMemory memory = test.CreateBackendView();
        Assert.True(memory.TryTranslate(Base + Size - 16, 16, out byte* p));
        Assert.True(p != null);
        Assert.True(memory.TryTranslate(Base, Size, out _));
    }

    [Theory]
    [InlineData(Base + Size - 16, 17UL)]   // crosses the end by one byte
    [InlineData(Base + Size, 1UL)]          // starts just past the end
    [InlineData(Base - 1, 2UL)]             // starts before the region
    [InlineData(ulong.MaxValue - 3, 8UL)]   // wraps around
    [InlineData(Base, ulong.MaxValue)]      // absurd length
    public void Buffer_leaving_a_region_is_rejected(ulong addr, ulong length)
    {
        using var test = new TestGuestMemory((Base, Size));
        using GuestMemory memory = test.CreateBackendView();
        Assert.False(memory.TryTranslate(addr, length, out _));
    }

    [Fact]
    public void Buffer_spanning_two_adjacent_regions_is_rejected_but_each_part_is_valid()
    {
        using var test = new TestGuestMemory((Base, Size), (Base + Size, Size));
        using GuestMemory memory = test.CreateBackendView();
        Assert.False(memory.TryTranslate(Base + Size - 8, 16, out _));
        Assert.True(memory.TryTranslate(Base + Size - 8, 8, out _));
        Assert.True(memory.TryTranslate(Base + Size, 8, out _));
    }

    [Fact]
    public void Guest_and_user_addresses_reach_the_same_bytes_honouring_mmap_offset()
    {
        using var test = new TestGuestMemory(mmapOffset: 0x3000, (Base, Size), (0x4000_0000, Size));
        using GuestMemory memory = test.CreateBackendView();
        ulong gpa = 0x4000_0000 + 0x123;
        test.Span(gpa, 4).Fill(0xAB);
        Assert.True(memory.TryTranslate(gpa, 4, out byte* byGuest));
        Assert.True(memory.TryTranslateUser(test.ToUser(gpa), 4, out byte* byUser));
        Assert.True(byGuest == byUser);
        Assert.Equal(0xAB, byGuest[3]);
        // A guest address is not a user address.
        Assert.False(memory.TryTranslateUser(gpa, 4, out _));
    }

    [Fact]
    public void Region_larger_than_its_file_is_refused()
    {
        using var test = new TestGuestMemory((Base, 0x1000));
        using var memory = new GuestMemory();
        var tooBig = new MemoryRegionInfo(Base, 0x2000, test.Regions[0].UserspaceAddr, 0);
        Assert.False(memory.TryReplaceRegions([tooBig], [test.Regions[0].Fd], out string? error));
        Assert.Contains("holds only", error);
        Assert.Equal(0, memory.RegionCount);
    }

    [Fact]
    public void Overlapping_and_malformed_regions_are_refused()
    {
        using var test = new TestGuestMemory((Base, Size));
        using GuestMemory memory = test.CreateBackendView();
        int fd = test.Regions[0].Fd;
        Assert.False(memory.TryAddRegion(new MemoryRegionInfo(Base + Size - 1, 0x1000, 0x9000_0000_0000, 0), fd, out _));
        Assert.False(memory.TryAddRegion(new MemoryRegionInfo(0x9000_0000, 0, 0x9000_0000_0000, 0), fd, out _));
        Assert.False(memory.TryAddRegion(new MemoryRegionInfo(ulong.MaxValue - 10, 0x1000, 0x9000_0000_0000, 0), fd, out _));
        Assert.Equal(1, memory.RegionCount);
    }

    [Fact]
    public void Two_guest_ranges_may_alias_one_user_range()
    {
        using var test = new TestGuestMemory((Base, Size));
        using GuestMemory memory = test.CreateBackendView();
        TestRegion r = test.Regions[0];
        var alias = new MemoryRegionInfo(0x9000_0000, Size, r.UserspaceAddr, 0);
        Assert.True(memory.TryAddRegion(alias, r.Fd, out string? error), error);
        test.Span(Base + 8, 1)[0] = 99;
        Assert.True(memory.TryTranslate(0x9000_0000 + 8, 1, out byte* p));
        Assert.Equal(99, *p);
    }

    [Fact]
    public void Regions_can_be_added_and_removed_one_by_one()
    {
        using var test = new TestGuestMemory((Base, Size));
        using GuestMemory memory = test.CreateBackendView();
        TestRegion second = test.AddRegion(0x8000_0000, Size);
        Assert.False(memory.TryTranslate(0x8000_0000, 8, out _));
        Assert.True(memory.TryAddRegion(second.Info, second.Fd, out _));
        Assert.True(memory.TryTranslate(0x8000_0000, 8, out _));
        Assert.True(memory.TryRemoveRegion(second.Info, out _));
        Assert.False(memory.TryTranslate(0x8000_0000, 8, out _));
        Assert.True(memory.TryTranslate(Base, 8, out _));
        Assert.False(memory.TryRemoveRegion(second.Info, out _));
    }

    [Fact]
    public void Removed_region_stays_mapped_while_a_user_holds_pointers()
    {
        using var test = new TestGuestMemory((Base, Size));
        using GuestMemory memory = test.CreateBackendView();
        test.Span(Base, 1)[0] = 42;
        memory.EnterUse();
        Assert.True(memory.TryTranslate(Base, 1, out byte* p));
        memory.Clear();
        Assert.False(memory.TryTranslate(Base, 1, out _));
        // Still mapped: reading through the old pointer is safe until the user leaves.
        Assert.Equal(42, *p);
        memory.ExitUse();
    }
}

public unsafe class GuestMemoryDisposeTests
{
    [Fact]
    public void Dispose_while_a_chain_is_outstanding_defers_the_unmap()
    {
        using var test = TestGuestMemory.Single();
        var memory = test.CreateBackendView();
        ulong gpa = test.Regions[0].GuestPhysAddr;
        test.Span(gpa, 1)[0] = 7;
        memory.EnterUse();
        Assert.True(memory.TryTranslate(gpa, 1, out byte* p));
        memory.Dispose();
        Assert.Equal(7, *p); // a late completion can still touch its buffer
        memory.ExitUse();
        Assert.Equal(0, memory.RegionCount);
    }
}
