// Namespace overview: VirtioFs.TestSupport plays the other side of the transport for tests: the guest (memfd-backed
// RAM and a driver-side split queue writer) and the VMM (a vhost-user front-end that sends real messages with fds).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Tmds.Linux;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;


namespace VirtioFs.TestSupport;

/// <summary>One memfd-backed region of test guest RAM, mapped here too so the test can play the guest.</summary>
public sealed unsafe class TestRegion
{
    internal TestRegion(ulong guestPhysAddr, ulong size, ulong userspaceAddr, ulong mmapOffset, int fd, byte* host)
    {
        GuestPhysAddr = guestPhysAddr;
        Size = size;
        UserspaceAddr = userspaceAddr;
        MmapOffset = mmapOffset;
        Fd = fd;
        Host = host;
    }

    public ulong GuestPhysAddr { get; }
    public ulong Size { get; }
    /// <summary>The "front-end user address" of the region's first byte (what SET_VRING_ADDR speaks).</summary>
    public ulong UserspaceAddr { get; }
    public ulong MmapOffset { get; }
    /// <summary>The memfd; the front-end sends it, the test keeps owning it.</summary>
    public int Fd { get; }
    /// <summary>Where the test sees the region's first byte.</summary>
    public byte* Host { get; }

    public MemoryRegionInfo Info => new(GuestPhysAddr, Size, UserspaceAddr, MmapOffset);

    public bool Contains(ulong gpa, ulong length) =>
        gpa >= GuestPhysAddr && gpa - GuestPhysAddr <= Size && length <= Size - (gpa - GuestPhysAddr);
}

/// <summary>
/// Guest RAM for tests: one memfd per region at chosen guest-physical addresses, with a bump allocator for rings and
/// buffers. User addresses are guest address + a per-region bias, so code that mixes up the two address spaces fails.
/// </summary>
public sealed unsafe class TestGuestMemory : IDisposable
{
    /// <summary>Bias added to guest addresses to make front-end user addresses.</summary>
    public const ulong UserAddressBias = 0x7f00_0000_0000;

    private readonly List<TestRegion> _regions = [];
    private readonly Dictionary<TestRegion, ulong> _next = [];

    /// <summary>Creates regions of the given guest addresses and sizes. mmapOffset is applied to every region.</summary>
    public TestGuestMemory(ulong mmapOffset, params (ulong GuestPhysAddr, ulong Size)[] regions)
    {
        foreach ((ulong gpa, ulong size) in regions)
        {
            AddRegion(gpa, size, mmapOffset);
        }
    }

    /// <summary>Creates regions with mmap_offset 0.</summary>
    public TestGuestMemory(params (ulong GuestPhysAddr, ulong Size)[] regions)
        : this(0, regions)
    {
    }

    /// <summary>A single region of <paramref name="size"/> bytes at guest address 0x1000_0000.</summary>
    public static TestGuestMemory Single(ulong size = 4 << 20) => new((0x1000_0000, size));

    public IReadOnlyList<TestRegion> Regions => _regions;

    /// <summary>Adds (and maps) another region; send it with ADD_MEM_REG.</summary>
    public TestRegion AddRegion(ulong guestPhysAddr, ulong size, ulong mmapOffset = 0)
    {
        byte[] name = Encoding.ASCII.GetBytes("vfs-test-guest\0");
        int fd;
        fixed (byte* n = name)
        {
            fd = memfd_create(n, MFD_CLOEXEC);
        }
        if (fd < 0)
        {
            throw new IOException($"memfd_create failed: errno {errno}");
        }
        ulong length = checked(mmapOffset + size);
        if (ftruncate(fd, (long)length) != 0)
        {
            close(fd);
            throw new IOException($"ftruncate failed: errno {errno}");
        }
        void* p = mmap(null, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
        {
            close(fd);
            throw new IOException($"mmap failed: errno {errno}");
        }
        var region = new TestRegion(guestPhysAddr, size, guestPhysAddr + UserAddressBias + (ulong)_regions.Count * 0x1_0000_0000,
            mmapOffset, fd, (byte*)p + mmapOffset);
        _regions.Add(region);
        _next[region] = guestPhysAddr;
        return region;
    }

    public TestRegion RegionOf(ulong gpa, ulong length = 1) =>
        _regions.Find(r => r.Contains(gpa, length)) ?? throw new ArgumentOutOfRangeException(nameof(gpa), $"0x{gpa:x} is not in test memory");

    /// <summary>Front-end user address of a guest address.</summary>
    public ulong ToUser(ulong gpa)
    {
        TestRegion r = RegionOf(gpa, 0);
        return r.UserspaceAddr + (gpa - r.GuestPhysAddr);
    }

    /// <summary>Host pointer of a guest range (test side).</summary>
    public byte* Host(ulong gpa, ulong length)
    {
        TestRegion r = RegionOf(gpa, length);
        return r.Host + (gpa - r.GuestPhysAddr);
    }

    public Span<byte> Span(ulong gpa, int length) => new(Host(gpa, (ulong)length), length);

    public T Read<T>(ulong gpa) where T : unmanaged => Unsafe.ReadUnaligned<T>(Host(gpa, (ulong)sizeof(T)));

    public void Write<T>(ulong gpa, T value) where T : unmanaged => Unsafe.WriteUnaligned(Host(gpa, (ulong)sizeof(T)), value);

    /// <summary>Bump-allocates zeroed guest memory, from the first region (or <paramref name="region"/>) with room.</summary>
    public ulong Allocate(ulong size, ulong align = 16, TestRegion? region = null)
    {
        foreach (TestRegion r in region is null ? _regions : [region])
        {
            ulong start = (_next[r] + align - 1) & ~(align - 1);
            if (r.Contains(start, size))
            {
                _next[r] = start + size;
                Span(start, (int)size).Clear();
                return start;
            }
        }
        throw new InvalidOperationException($"test guest memory exhausted allocating {size} bytes");
    }

    /// <summary>Copies bytes into freshly allocated guest memory and returns their guest address.</summary>
    public ulong AllocateBytes(ReadOnlySpan<byte> data, ulong align = 8)
    {
        ulong gpa = Allocate((ulong)Math.Max(data.Length, 1), align);
        data.CopyTo(Span(gpa, data.Length));
        return gpa;
    }

    /// <summary>Region descriptions as the vhost-user SET_MEM_TABLE payload carries them.</summary>
    public MemoryRegionInfo[] Infos => _regions.ConvertAll(r => r.Info).ToArray();

    /// <summary>A GuestMemory (the back-end's view) mapping these regions, for tests without a vhost-user connection.</summary>
    public GuestMemory CreateBackendView()
    {
        var memory = new GuestMemory();
        int[] fds = _regions.ConvertAll(r => r.Fd).ToArray();
        if (!memory.TryReplaceRegions(Infos, fds, out string? error))
        {
            memory.Dispose();
            throw new InvalidOperationException(error);
        }
        return memory;
    }

    public void Dispose()
    {
        foreach (TestRegion r in _regions)
        {
            munmap(r.Host - r.MmapOffset, (size_t)(r.Size + r.MmapOffset));
            close(r.Fd);
        }
        _regions.Clear();
    }
}
