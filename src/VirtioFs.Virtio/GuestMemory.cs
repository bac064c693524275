using System.Runtime.InteropServices;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace VirtioFs.Virtio;

/// <summary>
/// One region of guest RAM as the vhost-user front-end describes it (qemu vhost-user.rst, "Memory region description"):
/// the guest-physical base, the size, the front-end's own virtual address for the same bytes, and the offset of the
/// region inside the file descriptor it passes.
/// </summary>
public readonly record struct MemoryRegionInfo(ulong GuestPhysAddr, ulong MemorySize, ulong UserspaceAddr, ulong MmapOffset)
{
    /// <summary>True when both address ranges and the file range are non-empty and do not wrap.</summary>
    public bool IsWellFormed =>
        MemorySize != 0
        && GuestPhysAddr <= ulong.MaxValue - (MemorySize - 1)
        && UserspaceAddr <= ulong.MaxValue - (MemorySize - 1)
        && MmapOffset <= ulong.MaxValue - MemorySize;
}

/// <summary>
/// Guest memory shared by the front-end: regions mmapped MAP_SHARED read+write from the fds it sends, and checked
/// translation of guest-physical addresses (descriptor buffers) and front-end user addresses (ring addresses from
/// SET_VRING_ADDR) into host pointers.
/// </summary>
/// <remarks>
/// Readers never lock: the region table is immutable and replaced copy-on-write. A reader that holds host pointers
/// over time brackets its use with <see cref="EnterUse"/>/<see cref="ExitUse"/>; mappings dropped from the table are
/// only unmapped once no user is left (users that started after the swap only see the new table, so any moment with
/// zero users proves the old mappings are unreachable). Mutations are serialised by a lock.
/// </remarks>
public sealed class GuestMemory : IDisposable
{
    /// <summary>vhost-user-backend answers GET_MAX_MEM_SLOTS with 509 (KVM's slot limit); we cap the table there too.</summary>
    public const int MaxRegions = 509;

    private sealed class MappedRegion
    {
        public required MemoryRegionInfo Info { get; init; }
        public required nint Mapping { get; init; }
        public required nuint MappingLength { get; init; }

        /// <summary>Host address of the region's first byte (mapping + mmap_offset), stored rather than computed so the
        /// per-descriptor translation reads one field.</summary>
        // SAFETY: pointer arithmetic only: MmapOffset + MemorySize <= MappingLength (TryMap maps exactly that).
        public required unsafe byte* Base { get; init; }

        public unsafe void Unmap()
        {
            // SAFETY: Mapping/MappingLength came from a successful mmap and each region is unmapped exactly once
            // (only after it left the table and no user can still hold pointers into it).
            munmap((void*)Mapping, (size_t)(ulong)MappingLength);
        }
    }

    private MappedRegion[] _table = [];
    private readonly Lock _writeLock = new();
    private readonly List<MappedRegion> _retired = [];
    private int _users;
    private int _retiredCount;
    private bool _disposed;

    /// <summary>Number of regions currently mapped.</summary>
    public int RegionCount => Volatile.Read(ref _table).Length;

    /// <summary>Snapshot of the current region descriptions (for diagnostics and tests).</summary>
    public MemoryRegionInfo[] GetRegions() => Array.ConvertAll(Volatile.Read(ref _table), r => r.Info);

    /// <summary>
    /// Translate a guest-physical range to a host pointer. The whole range must lie in one region: a buffer ending on
    /// the region's last byte is valid (cloud-hypervisor #2450 was an off-by-one here), one crossing out is not.
    /// </summary>
    // SAFETY: host = Base + offset only when [offset, offset + length) lies inside the region's MemorySize bytes,
    // checked without overflow by TryRange; no memory is touched here.
    public unsafe bool TryTranslate(ulong guestPhysAddr, ulong length, out byte* host)
    {
        // Written out for each address space rather than shared through a selector: this runs once per descriptor,
        // and a shared helper changed what the JIT inlines into ChainEnumerator.MoveNext (VirtqueueBenchmark).
        foreach (MappedRegion r in Volatile.Read(ref _table))
        {
            if (TryRange(guestPhysAddr, length, r.Info.GuestPhysAddr, r.Info.MemorySize, out ulong offset))
            {
                host = r.Base + offset;
                return true;
            }
        }
        host = null;
        return false;
    }

    /// <summary>Translate a front-end user virtual address range (SET_VRING_ADDR) to a host pointer.</summary>
    // SAFETY: as TryTranslate.
    public unsafe bool TryTranslateUser(ulong userAddr, ulong length, out byte* host)
    {
        foreach (MappedRegion r in Volatile.Read(ref _table))
        {
            if (TryRange(userAddr, length, r.Info.UserspaceAddr, r.Info.MemorySize, out ulong offset))
            {
                host = r.Base + offset;
                return true;
            }
        }
        host = null;
        return false;
    }

    private static bool TryRange(ulong addr, ulong length, ulong start, ulong size, out ulong offset)
    {
        offset = addr - start;
        // addr >= start, offset <= size and length <= size - offset: no addition that could overflow.
        return addr >= start && offset <= size && length <= size - offset;
    }

    /// <summary>Mark the start of a use of host pointers obtained from this memory (see remarks on the class).</summary>
    public void EnterUse() => Interlocked.Increment(ref _users);

    /// <summary>End a use begun with <see cref="EnterUse"/>; frees retired mappings when the last user leaves.</summary>
    public void ExitUse()
    {
        if (Interlocked.Decrement(ref _users) == 0 && Volatile.Read(ref _retiredCount) != 0)
        {
            lock (_writeLock)
            {
                FreeRetiredIfIdle();
            }
        }
    }

    /// <summary>Replace the whole table (SET_MEM_TABLE). The fds stay owned by the caller (close them afterwards).</summary>
    public bool TryReplaceRegions(ReadOnlySpan<MemoryRegionInfo> regions, ReadOnlySpan<int> fds, out string? error)
    {
        if (regions.Length != fds.Length)
        {
            error = $"{regions.Length} regions but {fds.Length} fds";
            return false;
        }
        if (regions.Length > MaxRegions)
        {
            error = $"{regions.Length} regions exceed the limit of {MaxRegions}";
            return false;
        }
        var mapped = new MappedRegion[regions.Length];
        for (int i = 0; i < regions.Length; i++)
        {
            if (!CheckOverlap(mapped.AsSpan(0, i), regions[i], out error) || !TryMap(regions[i], fds[i], out mapped[i]!, out error))
            {
                for (int j = 0; j < i; j++)
                {
                    mapped[j].Unmap();
                }
                return false;
            }
        }
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            MappedRegion[] old = Interlocked.Exchange(ref _table, mapped);
            Retire(old);
        }
        error = null;
        return true;
    }

    /// <summary>Add one region (ADD_MEM_REG). The fd stays owned by the caller.</summary>
    public bool TryAddRegion(in MemoryRegionInfo region, int fd, out string? error)
    {
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            MappedRegion[] current = _table;
            if (current.Length >= MaxRegions)
            {
                error = $"region table full ({MaxRegions})";
                return false;
            }
            if (!CheckOverlap(current, region, out error) || !TryMap(region, fd, out MappedRegion? added, out error))
            {
                return false;
            }
            MappedRegion[] next = [.. current, added];
            Interlocked.Exchange(ref _table, next);
            return true;
        }
    }

    /// <summary>Remove the region with the same guest address and size (REM_MEM_REG).</summary>
    public bool TryRemoveRegion(in MemoryRegionInfo region, out string? error)
    {
        lock (_writeLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            MappedRegion[] current = _table;
            int index = -1;
            for (int i = 0; i < current.Length; i++)
            {
                if (current[i].Info.GuestPhysAddr == region.GuestPhysAddr && current[i].Info.MemorySize == region.MemorySize)
                {
                    index = i;
                    break;
                }
            }
            if (index < 0)
            {
                error = $"no region at guest address 0x{region.GuestPhysAddr:x} of size 0x{region.MemorySize:x}";
                return false;
            }
            MappedRegion removed = current[index];
            MappedRegion[] next = [.. current.AsSpan(0, index), .. current.AsSpan(index + 1)];
            Interlocked.Exchange(ref _table, next);
            Retire([removed]);
            error = null;
            return true;
        }
    }

    /// <summary>Drop every region (RESET_OWNER, disconnect); unmapping waits for users as usual.</summary>
    public void Clear()
    {
        lock (_writeLock)
        {
            if (_disposed)
            {
                return;
            }
            Retire(Interlocked.Exchange(ref _table, []));
        }
    }

    // Caller holds _writeLock and has already swapped the table with a full fence (Interlocked.Exchange): either a
    // user that entered concurrently is counted in _users now, or it will read the new table.
    private void Retire(MappedRegion[] old)
    {
        _retired.AddRange(old);
        Interlocked.Exchange(ref _retiredCount, _retired.Count); // full fence before reading _users
        FreeRetiredIfIdle();
    }

    private void FreeRetiredIfIdle()
    {
        if (_retired.Count == 0 || Volatile.Read(ref _users) != 0)
        {
            return;
        }
        foreach (MappedRegion r in _retired)
        {
            r.Unmap();
        }
        _retired.Clear();
        Volatile.Write(ref _retiredCount, 0);
    }

    private static bool CheckOverlap(ReadOnlySpan<MappedRegion> existing, in MemoryRegionInfo region, out string? error)
    {
        if (!region.IsWellFormed)
        {
            error = $"malformed region gpa=0x{region.GuestPhysAddr:x} size=0x{region.MemorySize:x} " +
                    $"uva=0x{region.UserspaceAddr:x} offset=0x{region.MmapOffset:x}";
            return false;
        }
        foreach (MappedRegion r in existing)
        {
            // Only guest-physical overlap is an error: it would make descriptor translation ambiguous. Front-ends may
            // legitimately describe one host mapping at two guest addresses, so user ranges may overlap (the first
            // match then wins, and both name the same bytes).
            if (Overlaps(r.Info.GuestPhysAddr, r.Info.MemorySize, region.GuestPhysAddr, region.MemorySize))
            {
                error = $"region at gpa 0x{region.GuestPhysAddr:x} overlaps the one at 0x{r.Info.GuestPhysAddr:x}";
                return false;
            }
        }
        error = null;
        return true;
    }

    // Both ranges are well formed (no wrap), so last = start + size - 1 cannot overflow.
    private static bool Overlaps(ulong a, ulong aSize, ulong b, ulong bSize) =>
        a <= b + (bSize - 1) && b <= a + (aSize - 1);

    private static unsafe bool TryMap(in MemoryRegionInfo region, int fd, out MappedRegion mapped, out string? error)
    {
        mapped = null!;
        // Map from file offset 0 and add mmap_offset ourselves: the offset need not be page aligned (libvhost-user does
        // the same). The length is checked against the file size first, because touching a mapping past the end of
        // a memfd raises SIGBUS, which a hostile front-end could otherwise use to kill us.
        ulong length = region.MmapOffset + region.MemorySize; // IsWellFormed guarantees no overflow
        if (length > (ulong)nint.MaxValue)
        {
            error = $"region of 0x{length:x} bytes is too large to map";
            return false;
        }
        long fileSize = (long)lseek(fd, 0, SEEK_END);
        if (fileSize < 0)
        {
            error = $"cannot size region fd {fd}: errno {errno}";
            return false;
        }
        if ((ulong)fileSize < length)
        {
            error = $"region needs 0x{length:x} bytes but its fd holds only 0x{fileSize:x}";
            return false;
        }
        // SAFETY: a fresh MAP_SHARED mapping chosen by the kernel; nothing aliases it until we publish it.
        void* p = mmap(null, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
        {
            error = $"mmap of 0x{length:x} bytes failed: errno {errno}";
            return false;
        }
        mapped = new MappedRegion { Info = region, Mapping = (nint)p, MappingLength = (nuint)length, Base = (byte*)p + region.MmapOffset };
        error = null;
        return true;
    }

    /// <summary>
    /// Drops every region. Mappings still used (a chain completed late by a device thread pool) are unmapped by the
    /// last <see cref="ExitUse"/>, never under a user: a leaked mapping is better than a crash.
    /// </summary>
    public void Dispose()
    {
        lock (_writeLock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            Retire(Interlocked.Exchange(ref _table, []));
        }
    }
}
