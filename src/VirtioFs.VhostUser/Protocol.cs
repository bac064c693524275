// Namespace overview: VirtioFs.VhostUser is the back-end side of the vhost-user protocol (qemu
// docs/interop/vhost-user.rst). A front-end (QEMU, cloud-hypervisor) connects over a Unix stream socket and sends
// messages: a 12-byte header {u32 request; u32 flags; u32 size} in native byte order, then `size` payload bytes, with
// file descriptors (guest memory, eventfds) attached as SCM_RIGHTS to the first bytes of the message. Flags bits 0-1
// carry the version (1), bit 2 marks a reply and bit 3 (NEED_REPLY) asks for a u64 status once REPLY_ACK is
// negotiated. Through these messages the front-end shares guest RAM (SET_MEM_TABLE / ADD_MEM_REG), describes each
// virtqueue (SET_VRING_NUM/ADDR/BASE) and hands over eventfds: "kick" (guest -> us) and "call" (us -> guest
// interrupt). Rings are stopped until kicked, disabled until SET_VRING_ENABLE when PROTOCOL_FEATURES is negotiated,
// and stopped again by GET_VRING_BASE. The device itself (virtio-fs) is behind IVhostUserBackend; nothing here knows
// about FUSE.
using System.Runtime.InteropServices;

namespace VirtioFs.VhostUser;

/// <summary>Front-end requests (vhost-user.rst "Front-end message types").</summary>
public enum VhostUserRequest : uint
{
    None = 0,
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SendRarp = 19,
    NetSetMtu = 20,
    SetBackendReqFd = 21,
    IotlbMsg = 22,
    SetVringEndian = 23,
    GetConfig = 24,
    SetConfig = 25,
    ResetDevice = 34,
    VringKick = 35,
    GetMaxMemSlots = 36,
    AddMemReg = 37,
    RemMemReg = 38,
    SetStatus = 39,
    GetStatus = 40,
}

/// <summary>Header flag bits (vhost-user.rst "Header").</summary>
public static class VhostUserFlags
{
    public const uint VersionMask = 0x3;
    public const uint Version = 0x1;
    public const uint Reply = 1u << 2;
    public const uint NeedReply = 1u << 3;
    public const uint KnownMask = VersionMask | Reply | NeedReply;
}

/// <summary>Protocol feature bit numbers (vhost-user.rst "Protocol features").</summary>
public static class VhostUserProtocolFeatureBits
{
    public const int Mq = 0;
    public const int LogShmfd = 1;
    public const int ReplyAck = 3;
    public const int BackendReq = 5;
    public const int Config = 9;
    public const int ResetDevice = 13;
    public const int ConfigureMemSlots = 15;
    public const int Status = 16;
}

/// <summary>Virtio feature bits the transport itself owns.</summary>
public static class VhostUserFeatureBits
{
    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES: GET/SET_PROTOCOL_FEATURES are understood.</summary>
    public const int ProtocolFeatures = 30;
}

/// <summary>The 12-byte vhost-user message header (vhost-user.rst "Header"); not in any kernel header.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostUserMsgHeader
{
    public uint request;
    public uint flags;
    public uint size;

    public const int Size = 12;
}

/// <summary>C <c>struct vhost_vring_state</c> (linux/vhost_types.h): ring index and a number (size, base, enable).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostVringState
{
    public uint index;
    public uint num;
}

/// <summary>C <c>struct vhost_vring_addr</c> (linux/vhost_types.h). The addresses are front-end user addresses.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostVringAddr
{
    public uint index;
    /// <summary>Bit 0: VHOST_VRING_F_LOG (log used-ring writes at log_guest_addr).</summary>
    public uint flags;
    public ulong desc_user_addr;
    public ulong used_user_addr;
    public ulong avail_user_addr;
    public ulong log_guest_addr;
}

/// <summary>vhost-user "Memory regions description" header of SET_MEM_TABLE: count, padding, then regions.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostUserMemory
{
    public uint nregions;
    public uint padding;

    /// <summary>SET_MEM_TABLE carries at most 8 regions (VHOST_MEMORY_BASELINE_NREGIONS); more need ADD_MEM_REG.</summary>
    public const int MaxRegions = 8;
}

/// <summary>vhost-user "Memory region description" (the kernel's vhost_memory_region has flags_padding instead of
/// mmap_offset, hence our own name).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostUserMemoryRegion
{
    public ulong guest_phys_addr;
    public ulong memory_size;
    public ulong userspace_addr;
    public ulong mmap_offset;
}

/// <summary>vhost-user "Single memory region description" of ADD_MEM_REG / REM_MEM_REG.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostUserSingleMemoryRegion
{
    public ulong padding;
    public VhostUserMemoryRegion region;
}

/// <summary>vhost-user "Log description" of SET_LOG_BASE.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostUserLog
{
    public ulong mmap_size;
    public ulong mmap_offset;
}

/// <summary>vhost-user "Device config space" header of GET_CONFIG / SET_CONFIG; `size` bytes of payload follow.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct VhostUserConfig
{
    public uint offset;
    public uint size;
    public uint flags;

    public const int HeaderSize = 12;
    /// <summary>VHOST_USER_MAX_CONFIG_SIZE.</summary>
    public const int MaxSize = 256;
}
