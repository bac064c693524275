using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace VirtioFs.ImageTool.Bom;

/// <summary>Language package manifests: Python dist-info, npm package.json, .NET deps.json.</summary>
public static partial class Language
{
    [GeneratedRegex(@"(^|/)node_modules/(@[^/]+/)?[^/@][^/]*/package\.json$")]
    private static partial Regex NodeModulesManifest();

    [GeneratedRegex(@"[-_.]+")]
    private static partial Regex PythonNameSeparators();

    /// <summary>node_modules/NAME/package.json or node_modules/@SCOPE/NAME/package.json (at any nesting), not a
    /// package.json deeper inside a package's own tree.</summary>
    public static bool IsNodeModulesManifest(string path) => NodeModulesManifest().IsMatch(path);

    /// <summary>PEP 503 normalised name, as pip compares names and as the pypi purl type spells them.</summary>
    public static string NormalizePython(string name) => PythonNameSeparators().Replace(name, "-").ToLowerInvariant();

    /// <summary>A dist-info METADATA file (core metadata, an RFC 822 header block): Name, Version, License.</summary>
    public static void Python(ImageFiles tree, in ImageEntry e, BomDocument doc)
    {
        var text = Encoding.UTF8.GetString(tree.ReadAll(e));
        int end = text.IndexOf("\n\n", StringComparison.Ordinal);
        var headers = Catalogers.ControlParagraphs(end < 0 ? text : text[..end]).FirstOrDefault();
        if (headers is null || !headers.TryGetValue("Name", out var name) || !headers.TryGetValue("Version", out var version))
            throw new InvalidDataException("METADATA without Name and Version");
        var license = headers.GetValueOrDefault("License-Expression") ?? headers.GetValueOrDefault("License");
        doc.Packages.Add(new BomPackage
        {
            Name = name, Version = version, Type = "pypi", FoundIn = e.Path, License = license is { Length: > 0 and < 200 } ? license : null,
            Purl = Purl.Make("pypi", null, NormalizePython(name), version),
        });
    }

    public static void Npm(ImageFiles tree, in ImageEntry e, BomDocument doc)
    {
        using var json = JsonDocument.Parse(tree.ReadAll(e));
        var root = json.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException("package.json is not an object");
        if (!root.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
            || !root.TryGetProperty("version", out var v) || v.ValueKind != JsonValueKind.String)
            throw new InvalidDataException("package.json without a name and version");
        string name = n.GetString()!, version = v.GetString()!;
        string? license = root.TryGetProperty("license", out var l)
            ? l.ValueKind == JsonValueKind.String ? l.GetString()
            : l.ValueKind == JsonValueKind.Object && l.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null
            : null;
        int slash = name.StartsWith('@') ? name.IndexOf('/') : -1;
        doc.Packages.Add(new BomPackage
        {
            Name = name, Version = version, Type = "npm", FoundIn = e.Path, License = license,
            Purl = slash > 0 ? Purl.Make("npm", name[..slash], name[(slash + 1)..], version) : Purl.Make("npm", null, name, version),
        });
    }

    /// <summary>A .NET deps.json: its "libraries" map ("Name/Version" → {"type": "package" | "project" | ...});
    /// NuGet packages are the "package" entries (dotnet/runtime docs/design/features/host-dependency-resolution).</summary>
    public static void DotNet(ImageFiles tree, in ImageEntry e, BomDocument doc)
    {
        using var json = JsonDocument.Parse(tree.ReadAll(e));
        if (json.RootElement.ValueKind != JsonValueKind.Object || !json.RootElement.TryGetProperty("libraries", out var libs) || libs.ValueKind != JsonValueKind.Object) return;
        foreach (var lib in libs.EnumerateObject())
        {
            if (lib.Value.ValueKind != JsonValueKind.Object || !lib.Value.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String || t.GetString() != "package") continue;
            int slash = lib.Name.IndexOf('/');
            if (slash <= 0 || slash == lib.Name.Length - 1) continue;
            string name = lib.Name[..slash], version = lib.Name[(slash + 1)..];
            doc.Packages.Add(new BomPackage { Name = name, Version = version, Type = "nuget", FoundIn = e.Path, Purl = Purl.Make("nuget", null, name, version) });
        }
    }
}
