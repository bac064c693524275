// Extended attribute name mapping between the guest and the host, virtiofsd's --xattrmap (virtiofsd
// doc/xattr-mapping.md, src/passthrough/xattrmap.rs).
//
// A map is a list of rules tried in order; the first that matches decides. Each rule is written with a separator that is
// the first non-blank character of the rule: ":type:scope:key:prepend:" or the short ":map:key:prepend:".
//   type  prefix       client names matching key get prepend put in front; host names starting with prepend lose it
//         ok           passes the name unchanged
//         bad          client: EPERM (getxattr: ENODATA, as if absent); host names: hidden from listxattr
//         unsupported  client: ENOTSUP; host names: hidden
//   scope client (get/set/removexattr names from the guest, matched on key), server (listxattr names from the host,
//         matched on prepend), all (both)
//   map   key prepend  = prefix/all key prepend, then (key non-empty) bad/all prepend key and ok/all, or (key empty)
//         bad/all; at most one, and it must be the last rule.
// Every name must be matched by some rule, so a map needs a final catch-all for each direction; a map without one is
// refused when it is parsed (virtiofsd would fail the operation at run time instead).
using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace VirtioFs.Passthrough;

public enum XattrRuleType
{
    Prefix,
    Ok,
    Bad,
    Unsupported,
}

[Flags]
public enum XattrScope
{
    Client = 1,
    Server = 2,
    All = Client | Server,
}

/// <summary>One rule; <see cref="Key"/> and <see cref="Prepend"/> are raw name bytes (UTF-8 of the map text).</summary>
public sealed record XattrRule(XattrRuleType Type, XattrScope Scope, byte[] Key, byte[] Prepend)
{
    public bool Equals(XattrRule? other) =>
        other is not null && Type == other.Type && Scope == other.Scope && Key.AsSpan().SequenceEqual(other.Key)
        && Prepend.AsSpan().SequenceEqual(other.Prepend);

    public override int GetHashCode() => HashCode.Combine(Type, Scope, Key.Length, Prepend.Length);

    public override string ToString() =>
        $":{Type.ToString().ToLowerInvariant()}:{Scope.ToString().ToLowerInvariant()}:{Encoding.UTF8.GetString(Key)}:{Encoding.UTF8.GetString(Prepend)}:";
}

/// <summary>What a guest name becomes on the host.</summary>
public enum XattrMapResult
{
    /// <summary>Use the mapped name.</summary>
    Pass,
    /// <summary>A <c>bad</c> rule: EPERM (ENODATA for getxattr).</summary>
    Deny,
    /// <summary>An <c>unsupported</c> rule: ENOTSUP.</summary>
    Unsupported,
    /// <summary>The mapped name does not fit the destination (longer than XATTR_NAME_MAX): ERANGE.</summary>
    TooLong,
}

/// <summary>A parsed, terminated xattr map. Immutable and thread-safe.</summary>
public sealed class XattrMap
{
    private readonly XattrRule[] _rules;

    private XattrMap(XattrRule[] rules) => _rules = rules;

    /// <summary>The rules in match order, <c>map</c> already expanded.</summary>
    public IReadOnlyList<XattrRule> Rules => _rules;

    /// <summary>Parses virtiofsd's rule syntax. Pure: never throws for bad input; <paramref name="error"/> says why.</summary>
    public static bool TryParse(string text, [NotNullWhen(true)] out XattrMap? map, out string error)
    {
        ArgumentNullException.ThrowIfNull(text);
        map = null;
        var rules = new List<XattrRule>();
        int pos = 0;
        int ruleNumber = 0;
        bool sawMap = false;
        while (true)
        {
            while (pos < text.Length && char.IsWhiteSpace(text[pos])) pos++;
            if (pos == text.Length) break;
            ruleNumber++;
            if (sawMap)
            {
                error = $"xattrmap rule {ruleNumber}: a 'map' rule must be the only map rule and the last rule";
                return false;
            }
            char separator = text[pos++];
            if (!TryField(text, ref pos, separator, out string typeText))
            {
                error = $"xattrmap rule {ruleNumber}: incomplete rule (every field ends with the separator '{separator}')";
                return false;
            }
            string? scopeText = null;
            if (typeText != "map" && !TryField(text, ref pos, separator, out scopeText))
            {
                error = $"xattrmap rule {ruleNumber}: incomplete rule (every field ends with the separator '{separator}')";
                return false;
            }
            if (!TryField(text, ref pos, separator, out string key) || !TryField(text, ref pos, separator, out string prepend))
            {
                error = $"xattrmap rule {ruleNumber}: incomplete rule (every field ends with the separator '{separator}')";
                return false;
            }
            if (key.Contains('\0', StringComparison.Ordinal) || prepend.Contains('\0', StringComparison.Ordinal))
            {
                error = $"xattrmap rule {ruleNumber}: names cannot contain NUL";
                return false;
            }
            byte[] keyBytes = Encoding.UTF8.GetBytes(key);
            byte[] prependBytes = Encoding.UTF8.GetBytes(prepend);
            if (typeText == "map")
            {
                sawMap = true;
                rules.Add(new XattrRule(XattrRuleType.Prefix, XattrScope.All, keyBytes, prependBytes));
                if (keyBytes.Length > 0)
                {
                    // Hide host names that already carry key unprefixed, and keep the guest from naming the prefixed
                    // names directly (it would bypass the guest's access rules for key: doc "Security considerations").
                    rules.Add(new XattrRule(XattrRuleType.Bad, XattrScope.All, prependBytes, keyBytes));
                    rules.Add(new XattrRule(XattrRuleType.Ok, XattrScope.All, [], []));
                }
                else
                {
                    rules.Add(new XattrRule(XattrRuleType.Bad, XattrScope.All, [], []));
                }
                continue;
            }
            XattrRuleType? type = typeText switch
            {
                "prefix" => XattrRuleType.Prefix,
                "ok" => XattrRuleType.Ok,
                "bad" => XattrRuleType.Bad,
                "unsupported" => XattrRuleType.Unsupported,
                _ => null,
            };
            if (type is null)
            {
                error = $"xattrmap rule {ruleNumber}: type '{typeText}' is not one of prefix, ok, bad, unsupported, map";
                return false;
            }
            XattrScope? scope = scopeText switch
            {
                "all" => XattrScope.All,
                "client" => XattrScope.Client,
                "server" => XattrScope.Server,
                _ => null,
            };
            if (scope is null)
            {
                error = $"xattrmap rule {ruleNumber}: scope '{scopeText}' is not one of all, client, server";
                return false;
            }
            rules.Add(new XattrRule(type.Value, scope.Value, keyBytes, prependBytes));
        }
        if (rules.Count == 0)
        {
            error = "xattrmap: no rules";
            return false;
        }
        // doc/xattr-mapping.md: "There must be a mapping for every xattr name": a rule that matches any guest name
        // (client scope, empty key) and one that matches any host name (server scope, empty prepend).
        if (!rules.Exists(r => (r.Scope & XattrScope.Client) != 0 && r.Key.Length == 0))
        {
            error = "xattrmap: no rule matches every guest name; end the map with a catch-all such as :ok:all::: or :bad:all:::";
            return false;
        }
        if (!rules.Exists(r => (r.Scope & XattrScope.Server) != 0 && r.Prepend.Length == 0))
        {
            error = "xattrmap: no rule matches every host name; end the map with a catch-all such as :ok:all::: or :bad:all:::";
            return false;
        }
        map = new XattrMap([.. rules]);
        error = "";
        return true;
    }

    /// <summary>Parses or throws <see cref="FormatException"/> with the one-line reason.</summary>
    public static XattrMap Parse(string text) =>
        TryParse(text, out XattrMap? map, out string error) ? map : throw new FormatException(error);

    private static bool TryField(string text, ref int pos, char separator, out string field)
    {
        int end = text.IndexOf(separator, pos);
        if (end < 0)
        {
            field = "";
            return false;
        }
        field = text[pos..end];
        pos = end + 1;
        return true;
    }

    private XattrRule? Find(XattrScope scope, ReadOnlySpan<byte> name)
    {
        foreach (XattrRule r in _rules)
        {
            if ((r.Scope & scope) != 0 && name.StartsWith(scope == XattrScope.Client ? r.Key : r.Prepend))
            {
                return r;
            }
        }
        return null; // not reached for a parsed map: it is terminated in both directions
    }

    /// <summary>
    /// Maps a name the guest sent (get/set/removexattr) to the host's name, written to <paramref name="hostName"/>
    /// (not NUL-terminated); <paramref name="length"/> is its length on <see cref="XattrMapResult.Pass"/>.
    /// </summary>
    public XattrMapResult MapClient(ReadOnlySpan<byte> guestName, Span<byte> hostName, out int length)
    {
        length = 0;
        XattrRule? rule = Find(XattrScope.Client, guestName);
        switch (rule?.Type)
        {
            case XattrRuleType.Ok:
                if (guestName.Length > hostName.Length) return XattrMapResult.TooLong;
                guestName.CopyTo(hostName);
                length = guestName.Length;
                return XattrMapResult.Pass;
            case XattrRuleType.Prefix:
                int total = rule.Prepend.Length + guestName.Length;
                if (total > hostName.Length) return XattrMapResult.TooLong;
                rule.Prepend.CopyTo(hostName);
                guestName.CopyTo(hostName[rule.Prepend.Length..]);
                length = total;
                return XattrMapResult.Pass;
            case XattrRuleType.Unsupported:
                return XattrMapResult.Unsupported;
            default:
                return XattrMapResult.Deny;
        }
    }

    /// <summary>The host name a guest name maps to, or null when the map refuses it (for names fixed at start-up).</summary>
    public byte[]? MapClientName(ReadOnlySpan<byte> guestName)
    {
        Span<byte> buffer = stackalloc byte[512];
        return MapClient(guestName, buffer, out int n) == XattrMapResult.Pass ? buffer[..n].ToArray() : null;
    }

    /// <summary>
    /// Rewrites a host listxattr result (NUL-terminated names) in place into what the guest sees: names a server
    /// <c>bad</c>/<c>unsupported</c> rule matches are dropped, <c>prefix</c> rules strip their prefix. Returns the new
    /// length (never longer than <paramref name="length"/>: names only lose bytes).
    /// </summary>
    public int MapServerList(Span<byte> list, int length)
    {
        int read = 0;
        int write = 0;
        while (read < length)
        {
            int nul = list[read..length].IndexOf((byte)0);
            int end = nul < 0 ? length : read + nul;
            ReadOnlySpan<byte> name = list[read..end];
            read = end + 1;
            if (name.IsEmpty) continue;
            XattrRule? rule = Find(XattrScope.Server, name);
            ReadOnlySpan<byte> shown = rule?.Type switch
            {
                XattrRuleType.Ok => name,
                XattrRuleType.Prefix => name[rule.Prepend.Length..],
                _ => default,
            };
            if (shown.IsEmpty) continue;
            shown.CopyTo(list[write..]); // overlapping copy toward the front is safe (Span.CopyTo handles overlap)
            write += shown.Length;
            list[write++] = 0;
        }
        return write;
    }
}
