namespace VirtioFs.Passthrough;

/// <summary>How one range of ids is translated (Rust virtiofsd 1.13 src/soft_idmap/mod.rs MapEntry).</summary>
public enum IdMapping
{
    /// <summary>1:1 onto a range of the same length starting at the target.</summary>
    Range,
    /// <summary>Every id of the range onto the one target id.</summary>
    Squash,
    /// <summary>The ids may not be used: EPERM (guest to host only).</summary>
    Fail,
}

/// <summary>
/// virtiofsd's <c>--translate-uid</c>/<c>--translate-gid</c> at run time: the daemon itself translates the ids of one
/// kind (uids or gids) between guest and host, independently in each direction; ids outside every range stay as they
/// are. Guest ids are translated where they reach the host (the creating caller's fsuid/fsgid, chown, access checks),
/// host ids where they reach the guest (every attribute reply).
/// </summary>
public sealed class IdTranslator
{
    private readonly record struct Entry(uint From, uint Count, uint To, IdMapping Mapping);

    private readonly List<Entry> _guestToHost = [];
    private readonly List<Entry> _hostToGuest = [];

    /// <summary>Adds a guest-to-host range; throws <see cref="ArgumentException"/> if it overlaps an earlier one or passes 2^32.</summary>
    public void AddGuestToHost(uint from, uint count, uint to, IdMapping mapping) => Add(_guestToHost, "guest-to-host", from, count, to, mapping);

    /// <summary>Adds a host-to-guest range (Range or Squash); same checks.</summary>
    public void AddHostToGuest(uint from, uint count, uint to, IdMapping mapping)
    {
        if (mapping == IdMapping.Fail) throw new ArgumentException("host ids cannot be forbidden", nameof(mapping));
        Add(_hostToGuest, "host-to-guest", from, count, to, mapping);
    }

    private static void Add(List<Entry> entries, string direction, uint from, uint count, uint to, IdMapping mapping)
    {
        if (count == 0 || (ulong)from + count > 1UL << 32 || (mapping == IdMapping.Range && (ulong)to + count > 1UL << 32))
            throw new ArgumentException($"{direction} range {from}+{count} is empty or passes 2^32");
        foreach (Entry e in entries)
        {
            // soft_idmap do_push: "mapping intersects previously added entry".
            if (from < (ulong)e.From + e.Count && e.From < (ulong)from + count)
                throw new ArgumentException($"{direction} range [{from}, {(ulong)from + count}) intersects [{e.From}, {(ulong)e.From + e.Count})");
        }
        entries.Add(new Entry(from, count, to, mapping));
    }

    /// <summary>The host id for a guest id; false when the guest may not use it (forbid-guest: answer EPERM).</summary>
    public bool TryToHost(uint guest, out uint host) => TryMap(_guestToHost, guest, out host);

    /// <summary>The guest id for a host id.</summary>
    public uint ToGuest(uint host) => TryMap(_hostToGuest, host, out uint guest) ? guest : host;

    private static bool TryMap(List<Entry> entries, uint id, out uint result)
    {
        foreach (Entry e in entries)
        {
            if (id - e.From < e.Count) // unsigned: false below From
            {
                result = e.Mapping switch
                {
                    IdMapping.Range => e.To + (id - e.From),
                    IdMapping.Squash => e.To,
                    _ => 0,
                };
                return e.Mapping != IdMapping.Fail;
            }
        }
        result = id;
        return true;
    }
}
