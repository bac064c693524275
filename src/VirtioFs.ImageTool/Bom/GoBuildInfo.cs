using System.Buffers.Binary;
using System.Text;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// Go module build info in ELF executables. Since Go 1.18 the linker writes a ".go.buildinfo" section: a 32-byte
/// header ("\xff Go buildinf:", pointer size, flags; flag 2 = strings inline), then two uvarint-length-prefixed
/// strings: the Go version and the module info, whose lines are "path", "mod", "dep" and "=>" (replacement of the
/// line before) with tab-separated fields (go/src/debug/buildinfo/buildinfo.go, runtime/debug/mod.go). Older
/// binaries (pointer format) are skipped. Only the header, the section table and the section are read.
/// </summary>
public static class GoBuildInfo
{
    // 0xff then " Go buildinf:" (a C# "\xff" in a u8 literal would be UTF-8 encoded as two bytes).
    private static readonly byte[] Magic = [0xff, .. " Go buildinf:"u8];
    private const int MaxSections = 4096;
    private const int MaxBuildInfo = 1 << 20;

    public static void Catalog(ImageFiles tree, in ImageEntry e, BomDocument doc)
    {
        var info = Read(tree, e);
        if (info is null) return;
        var (goVersion, mods) = info.Value;
        foreach (var (kind, path, version) in mods)
        {
            if (kind == "path") continue;
            int slash = path.LastIndexOf('/');
            doc.Packages.Add(new BomPackage
            {
                Name = path, Version = version, Type = "golang", FoundIn = e.Path,
                Purl = Purl.Make("golang", slash > 0 ? path[..slash] : null, slash > 0 ? path[(slash + 1)..] : path, version == "(devel)" ? "" : version),
            });
        }
        _ = goVersion;
    }

    /// <summary>The Go version and the (kind, module path, version) lines of a Go binary, or null when it is not one.</summary>
    public static (string GoVersion, List<(string Kind, string Path, string Version)> Modules)? Read(ImageFiles tree, in ImageEntry e)
    {
        var h = tree.ReadRange(e, 0, 64);
        // ELF64 little-endian only (EI_CLASS 2, EI_DATA 1): the images this tool builds are x86-64 and arm64 Linux.
        if (h.Length < 64 || h[0] != 0x7f || h[1] != 'E' || h[2] != 'L' || h[3] != 'F' || h[4] != 2 || h[5] != 1) return null;
        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(h.AsSpan(0x28));
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(h.AsSpan(0x3A));
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(h.AsSpan(0x3C));
        int shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(h.AsSpan(0x3E));
        if (shentsize != 64 || shnum == 0 || shnum > MaxSections || shstrndx >= shnum || shoff >= e.Attr.Size) return null;
        var sh = tree.ReadRange(e, shoff, shnum * 64);
        if (sh.Length != shnum * 64) return null;
        (ulong Off, ulong Size) Section(int i) => (BinaryPrimitives.ReadUInt64LittleEndian(sh.AsSpan(i * 64 + 0x18)), BinaryPrimitives.ReadUInt64LittleEndian(sh.AsSpan(i * 64 + 0x20)));
        var (strOff, strSize) = Section(shstrndx);
        if (strSize > 1 << 20) return null;
        var names = tree.ReadRange(e, strOff, (int)strSize);
        for (int i = 0; i < shnum; i++)
        {
            uint nameOff = BinaryPrimitives.ReadUInt32LittleEndian(sh.AsSpan(i * 64));
            if (nameOff >= names.Length) continue;
            var rest = names.AsSpan((int)nameOff);
            int z = rest.IndexOf((byte)0);
            if (z < 0 || !rest[..z].SequenceEqual(".go.buildinfo"u8)) continue;
            var (off, size) = Section(i);
            var data = tree.ReadRange(e, off, (int)Math.Min(size, MaxBuildInfo));
            return Parse(data);
        }
        return null;
    }

    /// <summary>Parses a .go.buildinfo section; null when it is not the inline-string format.</summary>
    public static (string GoVersion, List<(string Kind, string Path, string Version)> Modules)? Parse(ReadOnlySpan<byte> data)
    {
        if (data.Length < 32 || !data[..14].SequenceEqual(Magic) || (data[15] & 2) == 0) return null;
        int pos = 32;
        var version = ReadBytes(data, ref pos);
        var modBytes = ReadBytes(data, ref pos);
        if (version is null || modBytes is null) return null;
        // The module info is framed by two 16-byte binary sentinels (cmd/go/internal/modload/build.go infoStart and
        // infoEnd); debug/buildinfo strips them when the byte before the end one is a newline. Bytes, not chars.
        if (modBytes.Length >= 33 && modBytes[^17] == (byte)'\n') modBytes = modBytes[16..^16];
        var mod = Encoding.UTF8.GetString(modBytes);
        var mods = new List<(string, string, string)>();
        foreach (var line in mod.Split('\n'))
        {
            var f = line.Split('\t');
            switch (f[0])
            {
                case "path" when f.Length >= 2: mods.Add(("path", f[1], "")); break;
                case "mod" or "dep" when f.Length >= 3: mods.Add((f[0], f[1], f[2])); break;
                // "=>" replaces the module of the line before with another path and version.
                case "=>" when f.Length >= 3 && mods.Count > 0 && mods[^1].Item1 is "mod" or "dep": mods[^1] = (mods[^1].Item1, f[1], f[2]); break;
            }
        }
        return (Encoding.UTF8.GetString(version), mods);
    }

    private static byte[]? ReadBytes(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong len = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (pos >= data.Length || shift > 28) return null;
            byte b = data[pos++];
            len |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) break;
        }
        if (len > (ulong)(data.Length - pos)) return null;
        var s = data.Slice(pos, (int)len).ToArray();
        pos += (int)len;
        return s;
    }
}
