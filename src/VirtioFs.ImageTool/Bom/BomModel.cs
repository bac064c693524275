namespace VirtioFs.ImageTool.Bom;

/// <summary>A package a cataloger found: its identity, the file that named it, and the files its database lists.</summary>
public sealed class BomPackage
{
    public required string Name { get; init; }
    public required string Version { get; init; }
    /// <summary>The purl type (deb, apk, pypi, npm, nuget, golang) and the ecosystem shown to a reader.</summary>
    public required string Type { get; init; }
    public required string Purl { get; init; }
    /// <summary>The image file the package was read from (its database, manifest or binary).</summary>
    public required string FoundIn { get; init; }
    public string? License { get; init; }
    public string? Supplier { get; init; }
    public string? Architecture { get; init; }
    /// <summary>Absolute paths of the regular files the package's database lists (dpkg *.list, apk F:/R:).</summary>
    public List<string> Files { get; } = new();
}

/// <summary>Everything a BOM writer needs: the image's identity, its packages and its regular files.</summary>
public sealed class BomDocument
{
    public required string ImageName { get; init; }
    /// <summary>A digest that names the image (the bootstrap's sha256, or the manifest digest from a registry).</summary>
    public required string ImageDigest { get; init; }
    public required DateTimeOffset Created { get; init; }
    public required string ToolVersion { get; init; }
    public List<BomPackage> Packages { get; } = new();
    public List<(ImageEntry Entry, FileDigest Digest)> Files { get; } = new();
    /// <summary>OS from /etc/os-release (ID and VERSION_ID), used as the purl's namespace and distro qualifier.</summary>
    public string? OsId { get; init; }
    public string? OsVersion { get; init; }
}

/// <summary>Package URLs (github.com/package-url/purl-spec): pkg:type/namespace/name@version?qualifiers.</summary>
public static class Purl
{
    public static string Make(string type, string? ns, string name, string version, params (string Key, string? Value)[] qualifiers)
    {
        var sb = new System.Text.StringBuilder("pkg:").Append(type).Append('/');
        if (!string.IsNullOrEmpty(ns))
        {
            // A namespace may hold several segments (npm @scope, golang host/path): encode each, keep the slashes.
            sb.Append(string.Join('/', ns.Split('/').Select(Encode))).Append('/');
        }
        sb.Append(Encode(name));
        if (version.Length > 0) sb.Append('@').Append(Encode(version));
        var q = qualifiers.Where(x => !string.IsNullOrEmpty(x.Value)).OrderBy(x => x.Key, StringComparer.Ordinal).ToList();
        for (int i = 0; i < q.Count; i++) sb.Append(i == 0 ? '?' : '&').Append(q[i].Key).Append('=').Append(Encode(q[i].Value!));
        return sb.ToString();
    }

    /// <summary>Percent-encodes everything but RFC 3986 unreserved characters (a ':' epoch and a '+' included).</summary>
    public static string Encode(string s)
    {
        var sb = new System.Text.StringBuilder(s.Length);
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(s))
        {
            if (b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9' or (byte)'-' or (byte)'.' or (byte)'_' or (byte)'~')
                sb.Append((char)b);
            else sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
