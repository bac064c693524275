using System.Runtime.InteropServices;

namespace VirtioFs.VhostUser;

/// <summary>
/// Pure shape checks for front-end messages (the <c>IsValid</c> of rust-vmm's message.rs, written from
/// vhost-user.rst): header flags, payload size and fd count per request, and the size fields inside payloads.
/// Semantic checks (ring index in range, features offered, regions mappable) happen when the message is applied.
/// </summary>
public static class VhostUserMessage
{
    /// <summary>Returns null when the header flags are acceptable for a request, else why not.</summary>
    public static string? ValidateFlags(uint flags)
    {
        if ((flags & VhostUserFlags.VersionMask) != VhostUserFlags.Version)
        {
            return $"unsupported version {flags & VhostUserFlags.VersionMask}";
        }
        if ((flags & VhostUserFlags.Reply) != 0)
        {
            return "REPLY flag set on a request";
        }
        if ((flags & ~VhostUserFlags.KnownMask) != 0)
        {
            return $"unknown flags 0x{flags:x}";
        }
        return null;
    }

    /// <summary>True for requests this back-end implements.</summary>
    public static bool IsKnown(VhostUserRequest request) => request switch
    {
        VhostUserRequest.GetFeatures or VhostUserRequest.SetFeatures or VhostUserRequest.SetOwner
            or VhostUserRequest.ResetOwner or VhostUserRequest.SetMemTable or VhostUserRequest.SetLogBase
            or VhostUserRequest.SetLogFd or VhostUserRequest.SetVringNum or VhostUserRequest.SetVringAddr
            or VhostUserRequest.SetVringBase or VhostUserRequest.GetVringBase or VhostUserRequest.SetVringKick
            or VhostUserRequest.SetVringCall or VhostUserRequest.SetVringErr or VhostUserRequest.GetProtocolFeatures
            or VhostUserRequest.SetProtocolFeatures or VhostUserRequest.GetQueueNum or VhostUserRequest.SetVringEnable
            or VhostUserRequest.SetBackendReqFd or VhostUserRequest.GetConfig or VhostUserRequest.SetConfig
            or VhostUserRequest.ResetDevice or VhostUserRequest.VringKick or VhostUserRequest.GetMaxMemSlots
            or VhostUserRequest.AddMemReg or VhostUserRequest.RemMemReg or VhostUserRequest.SetStatus
            or VhostUserRequest.GetStatus => true,
        _ => false,
    };

    /// <summary>
    /// Returns null when <paramref name="payload"/> and <paramref name="fdCount"/> have the shape vhost-user.rst gives
    /// <paramref name="request"/>, else the reason. Unknown requests are invalid.
    /// </summary>
    public static unsafe string? Validate(VhostUserRequest request, ReadOnlySpan<byte> payload, int fdCount)
    {
        switch (request)
        {
            case VhostUserRequest.GetFeatures:
            case VhostUserRequest.GetProtocolFeatures:
            case VhostUserRequest.GetQueueNum:
            case VhostUserRequest.GetMaxMemSlots:
            case VhostUserRequest.GetStatus:
            case VhostUserRequest.SetOwner:
            case VhostUserRequest.ResetOwner:
            case VhostUserRequest.ResetDevice:
                return Exactly(payload, 0, fdCount, 0, 0);

            case VhostUserRequest.SetFeatures:
            case VhostUserRequest.SetProtocolFeatures:
            case VhostUserRequest.SetStatus:
                return Exactly(payload, sizeof(ulong), fdCount, 0, 0);

            case VhostUserRequest.SetVringNum:
            case VhostUserRequest.SetVringBase:
            case VhostUserRequest.GetVringBase:
            case VhostUserRequest.SetVringEnable:
            case VhostUserRequest.VringKick:
                return Exactly(payload, sizeof(VhostVringState), fdCount, 0, 0);

            case VhostUserRequest.SetVringAddr:
                return Exactly(payload, sizeof(VhostVringAddr), fdCount, 0, 0);

            case VhostUserRequest.SetVringKick:
            case VhostUserRequest.SetVringCall:
            case VhostUserRequest.SetVringErr:
            {
                if (payload.Length != sizeof(ulong))
                {
                    return $"payload of {payload.Length} bytes, expected 8";
                }
                // Bits 0-7: ring index; bit 8: no fd; the rest must be zero.
                ulong u = MemoryMarshal.Read<ulong>(payload);
                if ((u & ~0x1ffUL) != 0)
                {
                    return $"reserved bits set in 0x{u:x}";
                }
                int expectedFds = (u & 0x100) != 0 ? 0 : 1;
                return fdCount == expectedFds ? null : $"{fdCount} fds, expected {expectedFds}";
            }

            case VhostUserRequest.SetMemTable:
            {
                if (payload.Length < sizeof(VhostUserMemory))
                {
                    return $"payload of {payload.Length} bytes";
                }
                uint n = MemoryMarshal.Read<VhostUserMemory>(payload).nregions;
                if (n == 0 || n > VhostUserMemory.MaxRegions)
                {
                    return $"{n} regions (1..{VhostUserMemory.MaxRegions})";
                }
                int expected = sizeof(VhostUserMemory) + (int)n * sizeof(VhostUserMemoryRegion);
                return payload.Length != expected || fdCount != (int)n
                    ? $"payload of {payload.Length} bytes and {fdCount} fds for {n} regions"
                    : null;
            }

            case VhostUserRequest.AddMemReg:
                return Exactly(payload, sizeof(VhostUserSingleMemoryRegion), fdCount, 1, 1);

            case VhostUserRequest.RemMemReg:
                // The front-end may or may not attach the region's fd; either is fine.
                return Exactly(payload, sizeof(VhostUserSingleMemoryRegion), fdCount, 0, 1);

            case VhostUserRequest.SetLogBase:
                return Exactly(payload, sizeof(VhostUserLog), fdCount, 0, 1);

            case VhostUserRequest.SetLogFd:
            case VhostUserRequest.SetBackendReqFd:
                // The fd is the payload; tolerate an (ignored) u64 some front-ends send along.
                return payload.Length is 0 or 8 && fdCount == 1 ? null : $"payload of {payload.Length} bytes with {fdCount} fds";

            case VhostUserRequest.GetConfig:
            case VhostUserRequest.SetConfig:
            {
                if (payload.Length < VhostUserConfig.HeaderSize || fdCount != 0)
                {
                    return $"payload of {payload.Length} bytes with {fdCount} fds";
                }
                VhostUserConfig c = MemoryMarshal.Read<VhostUserConfig>(payload);
                if (c.size > VhostUserConfig.MaxSize || c.offset > VhostUserConfig.MaxSize - c.size)
                {
                    return $"config range {c.offset}+{c.size} exceeds {VhostUserConfig.MaxSize}";
                }
                return payload.Length == VhostUserConfig.HeaderSize + (int)c.size ? null
                    : $"payload of {payload.Length} bytes for {c.size} config bytes";
            }

            default:
                return $"unknown request {(uint)request}";
        }
    }

    private static string? Exactly(ReadOnlySpan<byte> payload, int size, int fdCount, int minFds, int maxFds)
    {
        if (payload.Length != size)
        {
            return $"payload of {payload.Length} bytes, expected {size}";
        }
        return fdCount < minFds || fdCount > maxFds ? $"{fdCount} fds, expected {minFds}..{maxFds}" : null;
    }
}
