namespace VirtioFs.VhostUser;

/// <summary>
/// Pure shape checks for front-end messages (the <c>IsValid</c> of rust-vmm's message.rs, written from
/// vhost-user.rst): header flags here; payload size and fd count per request, and the size fields inside payloads,
/// by each request's row of <see cref="VhostUserRequestTable"/>.
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

    /// <summary>True for requests this back-end implements (a row of <see cref="VhostUserRequestTable"/>).</summary>
    public static bool IsKnown(VhostUserRequest request) => VhostUserRequestTable.TryGet(request, out _);

    /// <summary>
    /// Returns null when <paramref name="payload"/> and <paramref name="fdCount"/> have the shape vhost-user.rst gives
    /// <paramref name="request"/> (its row of <see cref="VhostUserRequestTable"/>), else the reason. Unknown requests
    /// are invalid.
    /// </summary>
    public static string? Validate(VhostUserRequest request, ReadOnlySpan<byte> payload, int fdCount) =>
        VhostUserRequestTable.TryGet(request, out VhostUserRequestSpec spec)
            ? spec.Validate(payload, fdCount)
            : $"unknown request {(uint)request}";
}
