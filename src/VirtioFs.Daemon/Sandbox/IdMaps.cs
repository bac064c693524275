using System.Globalization;
using VirtioFs.Daemon.CommandLine;

namespace VirtioFs.Daemon.Sandbox;

/// <summary>One line of a user namespace's uid_map or gid_map (user_namespaces(7)): Count ids from Outside (the host)
/// appear as Inside in the namespace.</summary>
public readonly record struct NamespaceIdMap(uint Inside, uint Outside, uint Count);

/// <summary>
/// The id-map options of Rust virtiofsd 1.13, parsed as it parses them:
/// <list type="bullet">
/// <item><c>--uid-map</c>/<c>--gid-map</c> <c>:namespace_id:host_id:count:</c> (src/idmap.rs parse_idmap): the last
/// character is the delimiter, must not be alphanumeric, must also start the value, and exactly three u32 fields lie
/// between. They set up the user namespace of an unprivileged <c>--sandbox namespace</c>.</item>
/// <item><c>--translate-uid</c>/<c>--translate-gid</c> <c>TYPE:a:b:count</c> (src/soft_idmap/cmdline.rs): TYPE is
/// guest, host, squash-guest, squash-host, map (three numbers) or forbid-guest (two); the separator is the first
/// character that is not alphanumeric, '-' or '_'. The daemon translates ids itself (no namespace).</item>
/// </list>
/// </summary>
public static class IdMaps
{
    /// <summary>virtiofsd idmap.rs: <c>:inside:outside:count:</c>, any non-alphanumeric delimiter.</summary>
    public static NamespaceIdMap ParseNamespaceMap(string option, string value)
    {
        string Bad(string why) => throw new OptionParser.UsageException($"{option} '{value}': {why} (expected :namespace_id:host_id:count:)");
        if (value.Length == 0) Bad("the map is empty");
        char delimiter = value[^1];
        if (char.IsLetterOrDigit(delimiter) || value[0] != delimiter || value.Length < 2) Bad("it must start and end with the same non-alphanumeric delimiter");
        string[] fields = value[1..^1].Split(delimiter);
        if (fields.Length != 3) Bad("it needs exactly three values");
        uint[] n = fields.Select(f => ParseU32(option, value, f)).ToArray();
        if (n[2] == 0) Bad("the count must be at least 1");
        if ((ulong)n[0] + n[2] > 1UL << 32 || (ulong)n[1] + n[2] > 1UL << 32) Bad("the range passes 2^32");
        return new NamespaceIdMap(n[0], n[1], n[2]);
    }

    /// <summary>virtiofsd soft_idmap/cmdline.rs <c>IdMap::from_str</c>.</summary>
    public static IdTranslation ParseTranslation(string option, string value)
    {
        string Bad(string why) => throw new OptionParser.UsageException($"{option} '{value}': {why}");
        int sep = 0;
        while (sep < value.Length && (char.IsLetterOrDigit(value[sep]) || value[sep] is '-' or '_')) sep++;
        if (sep == value.Length) Bad("expected TYPE:a:b:count (TYPE guest, host, squash-guest, squash-host, map) or forbid-guest:from:count");
        string type = value[..sep].ToLowerInvariant();
        uint[] n = value[(sep + 1)..].Split(value[sep]).Select(f => ParseU32(option, value, f)).ToArray();
        IdTranslationKind kind = type switch
        {
            "guest" => IdTranslationKind.Guest,
            "host" => IdTranslationKind.Host,
            "squash-guest" => IdTranslationKind.SquashGuest,
            "squash-host" => IdTranslationKind.SquashHost,
            "map" => IdTranslationKind.Map,
            "forbid-guest" => IdTranslationKind.ForbidGuest,
            _ => throw new OptionParser.UsageException($"{option} '{value}': invalid ID map prefix '{type}' (guest, host, squash-guest, squash-host, forbid-guest, map)"),
        };
        int expected = kind == IdTranslationKind.ForbidGuest ? 2 : 3;
        if (n.Length != expected) Bad($"invalid ID map length (expected {expected} numbers, got {n.Length})");
        uint count = n[^1];
        uint first = n[0];
        uint second = expected == 3 ? n[1] : 0;
        if (count == 0) Bad("the count must be at least 1");
        // The source range and (for 1:1 maps) the target range must lie within the 32-bit id space.
        bool oneToOne = kind is IdTranslationKind.Guest or IdTranslationKind.Host or IdTranslationKind.Map;
        if ((ulong)first + count > 1UL << 32 || (oneToOne && (ulong)second + count > 1UL << 32)) Bad("the range passes 2^32");
        return new IdTranslation(kind, first, second, count);
    }

    /// <summary>The run-time translator of one kind (virtiofsd soft_idmap TryFrom); overlapping ranges in one direction
    /// are refused as virtiofsd refuses them. Null when there is nothing to translate.</summary>
    public static VirtioFs.Passthrough.IdTranslator? ToTranslator(string option, IReadOnlyList<IdTranslation> entries)
    {
        if (entries.Count == 0) return null;
        var t = new VirtioFs.Passthrough.IdTranslator();
        try
        {
            foreach (IdTranslation e in entries)
            {
                switch (e.Kind)
                {
                    case IdTranslationKind.Guest: t.AddGuestToHost(e.First, e.Count, e.Second, VirtioFs.Passthrough.IdMapping.Range); break;
                    case IdTranslationKind.Host: t.AddHostToGuest(e.First, e.Count, e.Second, VirtioFs.Passthrough.IdMapping.Range); break;
                    case IdTranslationKind.SquashGuest: t.AddGuestToHost(e.First, e.Count, e.Second, VirtioFs.Passthrough.IdMapping.Squash); break;
                    case IdTranslationKind.SquashHost: t.AddHostToGuest(e.First, e.Count, e.Second, VirtioFs.Passthrough.IdMapping.Squash); break;
                    case IdTranslationKind.Map:
                        t.AddGuestToHost(e.First, e.Count, e.Second, VirtioFs.Passthrough.IdMapping.Range);
                        t.AddHostToGuest(e.Second, e.Count, e.First, VirtioFs.Passthrough.IdMapping.Range);
                        break;
                    default: t.AddGuestToHost(e.First, e.Count, 0, VirtioFs.Passthrough.IdMapping.Fail); break;
                }
            }
        }
        catch (ArgumentException x)
        {
            throw new OptionParser.UsageException($"{option}: {x.Message}");
        }
        return t;
    }

    private static uint ParseU32(string option, string value, string field) =>
        uint.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out uint n)
            ? n
            : throw new OptionParser.UsageException($"{option} '{value}': '{field}' is not a number from 0 to {uint.MaxValue}");

    /// <summary>The uid_map/gid_map text of <paramref name="maps"/> (one "inside outside count" line each).</summary>
    public static string ToProcText(IEnumerable<NamespaceIdMap> maps) =>
        string.Concat(maps.Select(m => string.Create(CultureInfo.InvariantCulture, $"{m.Inside} {m.Outside} {m.Count}\n")));
}

/// <summary>The kinds of virtiofsd's <c>--translate-uid/gid</c> (soft_idmap/cmdline.rs IdMap).</summary>
public enum IdTranslationKind
{
    /// <summary>guest:FROM_GUEST:TO_HOST:COUNT, guest ids 1:1 to host ids.</summary>
    Guest,
    /// <summary>host:FROM_HOST:TO_GUEST:COUNT, host ids 1:1 to guest ids.</summary>
    Host,
    /// <summary>squash-guest:FROM_GUEST:TO_HOST:COUNT, a guest range onto one host id.</summary>
    SquashGuest,
    /// <summary>squash-host:FROM_HOST:TO_GUEST:COUNT, a host range onto one guest id.</summary>
    SquashHost,
    /// <summary>map:GUEST:HOST:COUNT, both directions 1:1.</summary>
    Map,
    /// <summary>forbid-guest:FROM_GUEST:COUNT, the guest may not use these ids (EPERM).</summary>
    ForbidGuest,
}

/// <summary>One <c>--translate-uid/gid</c> entry; <see cref="First"/> is the source base, <see cref="Second"/> the
/// target (0 for forbid-guest).</summary>
public readonly record struct IdTranslation(IdTranslationKind Kind, uint First, uint Second, uint Count);
