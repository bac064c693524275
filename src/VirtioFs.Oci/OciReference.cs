namespace VirtioFs.Oci;

// Overview: the OCI distribution protocol (opencontainers/distribution-spec, "spec.md") is plain HTTP under /v2/:
// blobs are content-addressed (GET/HEAD /v2/<name>/blobs/<digest>, uploads via POST .../blobs/uploads/ then PATCH/PUT),
// manifests are addressed by tag or digest (GET/PUT /v2/<name>/manifests/<reference>). Authentication is negotiated:
// a 401 carries a WWW-Authenticate challenge, either Basic or Bearer (docker token spec: fetch a JWT from the realm for
// a service and scope, then resend). This namespace holds a small client for that protocol, the image JSON documents
// (manifest, index, config) and the nydus conventions for storing a RAFS image in a registry.

/// <summary>
/// A parsed image reference <c>host[:port]/repository[:tag][@digest]</c>. A host is required (there is no implicit
/// Docker Hub: this tool talks to registries it is told about).
/// </summary>
public sealed record OciReference(string Host, string Repository, string? Tag, string? Digest)
{
    /// <summary>The tag or digest to resolve (digest wins; "latest" when neither is given).</summary>
    public string Reference => Digest ?? Tag ?? "latest";

    public override string ToString() => $"{Host}/{Repository}" + (Tag is null ? "" : ":" + Tag) + (Digest is null ? "" : "@" + Digest);

    public static OciReference Parse(string s) =>
        TryParse(s, out var r, out var error) ? r : throw new FormatException($"bad image reference '{s}': {error}");

    public static bool TryParse(string s, out OciReference reference, out string error)
    {
        reference = null!;
        error = "";
        if (string.IsNullOrEmpty(s) || s.Length > 1024) { error = "empty or too long"; return false; }
        string? digest = null;
        int at = s.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            digest = s[(at + 1)..];
            s = s[..at];
            if (!OciDigest.IsValid(digest)) { error = "bad digest"; return false; }
        }
        int slash = s.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0) { error = "no registry host (expected host[:port]/repository[:tag])"; return false; }
        string host = s[..slash];
        string rest = s[(slash + 1)..];
        string? tag = null;
        int colon = rest.LastIndexOf(':');
        if (colon >= 0)
        {
            tag = rest[(colon + 1)..];
            rest = rest[..colon];
            if (!IsValidTag(tag)) { error = "bad tag"; return false; }
        }
        if (!IsValidHost(host)) { error = "bad host"; return false; }
        if (!IsValidRepository(rest)) { error = "bad repository name"; return false; }
        reference = new OciReference(host, rest, tag, digest);
        return true;
    }

    /// <summary>Repository names: lowercase path components of [a-z0-9] joined by '.', '_', '__', '-' (distribution-spec "name").</summary>
    public static bool IsValidRepository(string name)
    {
        if (name.Length is 0 or > 255) return false;
        foreach (var part in name.Split('/'))
        {
            if (part.Length == 0 || !IsAlnum(part[0]) || !IsAlnum(part[^1])) return false;
            foreach (char c in part)
                if (!IsAlnum(c) && c is not ('.' or '_' or '-')) return false;
        }
        return true;

        static bool IsAlnum(char c) => c is >= 'a' and <= 'z' or >= '0' and <= '9';
    }

    /// <summary>Tags: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.</summary>
    public static bool IsValidTag(string tag)
    {
        if (tag.Length is 0 or > 128 || tag[0] is '.' or '-') return false;
        foreach (char c in tag)
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '_' or '-')) return false;
        return true;
    }

    private static bool IsValidHost(string host)
    {
        if (host.Length > 255) return false;
        foreach (char c in host)
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '-' or ':' or '[' or ']')) return false;
        return true;
    }
}

/// <summary>Content digests <c>algorithm:hex</c>; only sha256 is produced and checked (OCI image-spec "descriptor.md").</summary>
public static class OciDigest
{
    public static bool IsValid(string digest) =>
        digest.StartsWith("sha256:", StringComparison.Ordinal) && digest.Length == 7 + 64 && IsLowerHex(digest.AsSpan(7));

    public static bool IsLowerHex(ReadOnlySpan<char> s)
    {
        foreach (char c in s)
            if (c is not (>= '0' and <= '9' or >= 'a' and <= 'f')) return false;
        return true;
    }

    public static string Sha256(ReadOnlySpan<byte> data) => "sha256:" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(data));
}
