using System.Text;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// Finds packages in an image's file tree. Each cataloger looks for its database or manifests by path (from the
/// bootstrap alone) and reads only those files; Go binaries are read by ranges (ELF header, section table, build
/// info). What is found is added to <see cref="BomDocument.Packages"/>.
/// </summary>
public static class Catalogers
{
    /// <summary>The rpm databases we recognise: rpmdb.sqlite is read (<see cref="Rpm"/>), the others refuse the BOM rather than omit their packages.</summary>
    public static readonly string[] RpmDatabases =
    [
        "/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/Packages", "/usr/lib/sysimage/rpm/Packages.db",
    ];

    /// <summary>Executables smaller than this are not read for Go build info: a Go binary is over a megabyte (the
    /// runtime alone), and reading an ELF header costs a chunk fetch from a registry.</summary>
    public const ulong GoMinBinarySize = 512 * 1024;

    public static (string? Id, string? Version) ReadOsRelease(ImageFiles tree)
    {
        foreach (var p in new[] { "/etc/os-release", "/usr/lib/os-release" })
        {
            if (!tree.TryStat(p, out var e) || !e.IsFile) continue;
            string? id = null, ver = null;
            foreach (var line in Encoding.UTF8.GetString(tree.ReadAll(e)).Split('\n'))
            {
                int eq = line.IndexOf('=');
                if (eq <= 0) continue;
                var v = line[(eq + 1)..].Trim().Trim('"', '\'');
                switch (line[..eq].Trim())
                {
                    case "ID": id = v; break;
                    case "VERSION_ID": ver = v; break;
                }
            }
            return (id, ver);
        }
        return (null, null);
    }

    public static void Run(ImageFiles tree, BomDocument doc, TextWriter log)
    {
        Rpm.Catalog(tree, doc, log);
        Dpkg.Catalog(tree, doc);
        Apk.Catalog(tree, doc);
        // A file a distribution's package database lists is accounted for by that package: its binaries are not read
        // for Go build info (each costs chunk fetches from a registry; syft reads them, and reports the Go modules of
        // a Debian-packaged Go program beside the deb that already names it).
        var packaged = doc.Packages.SelectMany(p => p.Files).ToHashSet(StringComparer.Ordinal);
        foreach (var e in tree.Entries)
        {
            if (!e.IsFile) continue;
            try
            {
                if (e.Path.EndsWith(".dist-info/METADATA", StringComparison.Ordinal)) Language.Python(tree, e, doc);
                else if (e.Path.EndsWith("/package.json", StringComparison.Ordinal) && Language.IsNodeModulesManifest(e.Path)) Language.Npm(tree, e, doc);
                else if (e.Path.EndsWith(".deps.json", StringComparison.Ordinal)) Language.DotNet(tree, e, doc);
                else if ((e.Attr.Mode & 0x49) != 0 /* any x bit, 0111 */ && e.Attr.Size >= GoMinBinarySize && !packaged.Contains(e.Path)) GoBuildInfo.Catalog(tree, e, doc);
            }
            catch (Exception ex) when (ex is InvalidDataException or FormatException or System.Text.Json.JsonException or DecoderFallbackException)
            {
                // One malformed manifest must not lose the rest of the BOM; say which and go on.
                log.WriteLine($"vfs-image: bom: skipping {e.Path}: {ex.Message}");
            }
        }
    }

    /// <summary>Paragraphs of a Debian control file (deb-control(5)): "Field: value" lines, continuation lines start
    /// with a space or tab, paragraphs are separated by blank lines. Field names are case-insensitive.</summary>
    public static IEnumerable<Dictionary<string, string>> ControlParagraphs(string text)
    {
        var cur = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        string? last = null;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.Length == 0)
            {
                if (cur.Count > 0) yield return cur;
                cur = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                last = null;
                continue;
            }
            if (line[0] is ' ' or '\t')
            {
                if (last is not null) cur[last] += "\n" + line.Trim();
                continue;
            }
            int colon = line.IndexOf(':');
            if (colon <= 0) continue;
            last = line[..colon].Trim();
            cur[last] = line[(colon + 1)..].Trim();
        }
        if (cur.Count > 0) yield return cur;
    }
}

/// <summary>dpkg: /var/lib/dpkg/status (and distroless /var/lib/dpkg/status.d/*), files from /var/lib/dpkg/info/*.list.</summary>
public static class Dpkg
{
    public const string Status = "/var/lib/dpkg/status";

    public static void Catalog(ImageFiles tree, BomDocument doc)
    {
        var sources = new List<ImageEntry>();
        if (tree.TryStat(Status, out var st) && st.IsFile) sources.Add(st);
        if (tree.TryStat("/var/lib/dpkg/status.d", out var sd) && sd.IsDirectory)
        {
            sources.AddRange(tree.Entries.Where(e => e.IsFile && e.Path.StartsWith(sd.Path + "/", StringComparison.Ordinal)
                && !e.Path.EndsWith(".md5sums", StringComparison.Ordinal) && e.Path.LastIndexOf('/') == sd.Path.Length));
        }
        foreach (var src in sources)
        {
            foreach (var p in Catalogers.ControlParagraphs(Encoding.UTF8.GetString(tree.ReadAll(src))))
            {
                if (!p.TryGetValue("Package", out var name) || !p.TryGetValue("Version", out var version)) continue;
                // dpkg-query -W lists every package but those "not-installed"; a package of which only configuration
                // files are left is not in the image either, so the BOM leaves out "config-files" too.
                var status = p.GetValueOrDefault("Status", "install ok installed").Split(' ');
                if (status.Length == 3 && status[2] is "not-installed" or "config-files") continue;
                var arch = p.GetValueOrDefault("Architecture");
                var source = p.GetValueOrDefault("Source");
                var ns = doc.OsId ?? "debian";
                var pkg = new BomPackage
                {
                    Name = name, Version = version, Type = "deb", FoundIn = src.Path, Architecture = arch,
                    Supplier = p.GetValueOrDefault("Maintainer"),
                    Purl = Purl.Make("deb", ns, name, version, ("arch", arch), ("distro", doc.OsVersion is null ? null : $"{ns}-{doc.OsVersion}"),
                        ("upstream", source?.Split(' ')[0])),
                };
                AddFiles(tree, pkg, arch);
                doc.Packages.Add(pkg);
            }
        }
    }

    private static void AddFiles(ImageFiles tree, BomPackage pkg, string? arch)
    {
        // dpkg names the list "PKG:ARCH.list" for Multi-Arch: same packages, else "PKG.list" (dpkg src/main/filesdb.c).
        ImageEntry list = default;
        bool found = (arch is not null && tree.TryStat($"/var/lib/dpkg/info/{pkg.Name}:{arch}.list", out list) && list.IsFile)
            || (tree.TryStat($"/var/lib/dpkg/info/{pkg.Name}.list", out list) && list.IsFile);
        if (!found) return;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in Encoding.UTF8.GetString(tree.ReadAll(list)).Split('\n'))
        {
            if (line.Length < 2 || line[0] != '/') continue;
            // The list names paths as the package unpacked them (/bin/sh); usrmerge makes /bin a symlink, so
            // resolve every directory component and keep the regular files' real paths.
            if (tree.TryGet(line, out var e) && e.IsFile && seen.Add(e.Path)) pkg.Files.Add(e.Path);
        }
    }
}

/// <summary>apk: /lib/apk/db/installed (apk-tools doc/apk-package(5): P name, V version, A arch, L license, o origin,
/// F directory, R file in that directory).</summary>
public static class Apk
{
    public const string Installed = "/lib/apk/db/installed";

    public static void Catalog(ImageFiles tree, BomDocument doc)
    {
        if (!tree.TryStat(Installed, out var db) || !db.IsFile) return;
        var text = Encoding.UTF8.GetString(tree.ReadAll(db));
        var ns = doc.OsId ?? "alpine";
        foreach (var block in text.Replace("\r", "").Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            string? name = null, version = null, arch = null, license = null, origin = null, maintainer = null, dir = "";
            var files = new List<string>();
            foreach (var line in block.Split('\n'))
            {
                if (line.Length < 2 || line[1] != ':') continue;
                var v = line[2..];
                switch (line[0])
                {
                    case 'P': name = v; break;
                    case 'V': version = v; break;
                    case 'A': arch = v; break;
                    case 'L': license = v; break;
                    case 'o': origin = v; break;
                    case 'm': maintainer = v; break;
                    case 'F': dir = v; break;
                    case 'R': files.Add("/" + (dir.Length > 0 ? dir + "/" : "") + v); break;
                }
            }
            if (name is null || version is null) continue;
            var pkg = new BomPackage
            {
                Name = name, Version = version, Type = "apk", FoundIn = db.Path, Architecture = arch, License = license, Supplier = maintainer,
                Purl = Purl.Make("apk", ns, name, version, ("arch", arch), ("distro", doc.OsVersion is null ? null : $"{ns}-{doc.OsVersion}"), ("upstream", origin)),
            };
            foreach (var f in files)
            {
                if (tree.TryGet(f, out var e) && e.IsFile) pkg.Files.Add(e.Path);
            }
            doc.Packages.Add(pkg);
        }
    }
}
