using Microsoft.Win32.SafeHandles;
using LibC = Tmds.Linux.LibC;

namespace VirtioFs.Storage;

/// <summary>
/// How vfsd fills the page cache for the large files it reads (local blobs and chunk-cache files). On a VM whose
/// balloon reports free pages to the host (<see cref="Enabled"/>), pages are read one at a time into order-0 folios,
/// asked for just before they are needed (<see cref="WillNeed"/>), never by the kernel's own readahead, which for
/// these files allocates large folios. Elsewhere every call here does nothing and the kernel reads ahead as usual.
/// </summary>
/// <remarks>
/// Why: since Linux 6.16 ext4 (xfs before it) fills a large file's page cache with large folios, carved from free
/// 2 MiB blocks. A VM whose balloon reports free pages to its host (virtio-balloon free page reporting, used by
/// Firecracker, cloud-hypervisor and QEMU guests with a balloon) hands those blocks back, and the first touch of each
/// refilled page then faults in the host, charged to whoever touches it. Measured on this machine (Linux 6.18,
/// page_reporting_order 9), summing a 381 MB blob read cold 8 s after dropping the page cache, CPU seconds:
/// mapped, default readahead, 0.57-0.74; pread into one buffer, 0.60; pread with POSIX_FADV_RANDOM (order-0 pages),
/// 0.15; read at once after the drop, before the blocks were reported, 0.04 either way. A guest reading a 400 MB image
/// with the host's page cache dropped cost vfsd 0.76-0.82 s of CPU against 0.39-0.44 s warm; with these hints
/// 0.49-0.53 s cold and 0.41-0.45 s warm (the C virtiofsd: 0.59-0.72 s and 0.50-0.55 s; its small files get small
/// folios). Without page reporting, large folios are the cheaper: 0.04 s against 0.15 s above, hence <see cref="Enabled"/>.
/// Writes are not affected (1 MiB pwrites of 381 MB into a new file: 0.08 s of CPU, settled or not).
/// </remarks>
public static class PageCacheAdvice
{
    /// <summary>The virtio driver whose devices say whether this VM reports free pages.</summary>
    internal const string BalloonDriverDirectory = "/sys/bus/virtio/drivers/virtio_balloon";

    /// <summary>VIRTIO_BALLOON_F_REPORTING (virtio spec 1.2, 5.5.3 "Feature bits": free page reporting).</summary>
    internal const int FreePageReportingFeature = 5;

    /// <summary>Whether the hints are given: by default, when this machine's balloon reports free pages to its host.</summary>
    public static bool Enabled { get; set; } = ReportsFreePages(BalloonDriverDirectory);

    /// <summary>
    /// True when a virtio balloon device bound under <paramref name="driverDirectory"/> negotiated free page reporting:
    /// its sysfs <c>features</c> file is the negotiated feature bits as '0'/'1' characters, bit 0 first
    /// (drivers/virtio/virtio.c, features_show).
    /// </summary>
    internal static bool ReportsFreePages(string driverDirectory)
    {
        try
        {
            if (!Directory.Exists(driverDirectory)) return false;
            foreach (var device in Directory.EnumerateDirectories(driverDirectory, "virtio*"))
            {
                var features = Path.Combine(device, "features");
                if (!File.Exists(features)) continue;
                using var reader = new StreamReader(features);
                var buffer = new char[FreePageReportingFeature + 1];
                if (reader.ReadBlock(buffer, 0, buffer.Length) == buffer.Length && buffer[FreePageReportingFeature] == '1') return true;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return false;
    }

    /// <summary>Bytes past a range that <see cref="WillNeed"/> asks for too, so the next chunk's I/O overlaps this one's
    /// use (the kernel's default readahead window is 128 KiB; a chunk is usually 1 MiB).</summary>
    public const int ReadAheadBytes = 1 << 20;

    /// <summary>POSIX_FADV_RANDOM: a read(2) of this file reads the pages it needs and no more (force_page_cache_ra),
    /// at the mapping's minimum folio order.</summary>
    public static void NoReadahead(SafeFileHandle handle)
    {
        if (Enabled && !handle.IsClosed) _ = LibC.posix_fadvise((int)handle.DangerousGetHandle(), 0, 0, LibC.POSIX_FADV_RANDOM);
    }

    /// <summary>MADV_RANDOM on a mapping: its page faults read no more than the page they fault on. Paired with
    /// <see cref="WillNeed"/> before each use, so faults find their pages already read.</summary>
    public static unsafe void NoReadahead(byte* start, ulong length)
    {
        if (!Enabled) return;
        // SAFETY: the caller owns the mapping [start, start + length); madvise only changes the kernel's paging hint.
        _ = LibC.madvise(start, (Tmds.Linux.size_t)length, LibC.MADV_RANDOM);
    }

    /// <summary>
    /// POSIX_FADV_WILLNEED for [offset, offset + length + <see cref="ReadAheadBytes"/>): starts reading what is not yet
    /// in the page cache, in order-0 folios, without waiting for it (pages already there cost one lookup each folio;
    /// the kernel stops at the end of the file).
    /// </summary>
    public static void WillNeed(SafeFileHandle handle, long offset, long length)
    {
        if (!Enabled || handle.IsClosed || offset < 0 || length < 0 || length > long.MaxValue - ReadAheadBytes - offset) return;
        _ = LibC.posix_fadvise((int)handle.DangerousGetHandle(), offset, length + ReadAheadBytes, LibC.POSIX_FADV_WILLNEED);
    }
}
