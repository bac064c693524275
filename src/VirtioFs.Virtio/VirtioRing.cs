// Namespace overview: VirtioFs.Virtio speaks the virtio 1.2 split virtqueue (virtio spec 1.2 §2.7).
// A split queue is three areas in guest memory that the driver (guest) and the device (us) share:
//   - the descriptor table: Q entries {le64 addr; le32 len; le16 flags; le16 next} describing guest buffers,
//   - the available ring (driver -> device): {le16 flags; le16 idx; le16 ring[Q]; le16 used_event},
//   - the used ring (device -> driver): {le16 flags; le16 idx; {le32 id; le32 len}[Q]; le16 avail_event}.
// Indices are free-running u16 counters; slot = idx % Q with Q a power of two. The driver publishes heads by writing
// ring[] then idx (we load idx with acquire); we publish completions by writing the element then idx (release).
// With VIRTIO_F_EVENT_IDX (§2.7.7-2.7.10) each side tells the other at which index it wants to be notified.
// Everything here is hostile input: every address goes through GuestMemory's checked translation and every chain
// walk is bounded by a time-to-live, so a broken guest gets a zero-length completion, never a crash or a hang.
using System.Runtime.InteropServices;

namespace VirtioFs.Virtio;

/// <summary>C <c>struct vring_desc</c> (linux/virtio_ring.h), 16 bytes, little-endian fields.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VringDesc
{
    public ulong addr;
    public uint len;
    public ushort flags;
    public ushort next;
}

/// <summary>C <c>struct vring_avail</c> header (linux/virtio_ring.h): flags and idx; ring[Q] and used_event follow.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VringAvail
{
    public ushort flags;
    public ushort idx;
}

/// <summary>C <c>struct vring_used_elem</c> (linux/virtio_ring.h), 8 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VringUsedElem
{
    public uint id;
    public uint len;
}

/// <summary>C <c>struct vring_used</c> header (linux/virtio_ring.h): flags and idx; ring[Q] and avail_event follow.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VringUsed
{
    public ushort flags;
    public ushort idx;
}

/// <summary>Descriptor flags, virtio spec 1.2 §2.7.5.</summary>
public static class VirtqDescFlags
{
    public const ushort Next = 1;
    public const ushort Write = 2;
    public const ushort Indirect = 4;
}

/// <summary>Ring flags, virtio spec 1.2 §2.7.6 / §2.7.8 (only meaningful without EVENT_IDX).</summary>
public static class VringFlags
{
    /// <summary>avail.flags: the driver does not want interrupts.</summary>
    public const ushort AvailNoInterrupt = 1;
    /// <summary>used.flags: the device does not want kicks.</summary>
    public const ushort UsedNoNotify = 1;
}

/// <summary>Transport feature bit numbers, virtio spec 1.2 §6.</summary>
public static class VirtioFeatureBits
{
    public const int IndirectDesc = 28;
    public const int EventIdx = 29;
    public const int Version1 = 32;
}
