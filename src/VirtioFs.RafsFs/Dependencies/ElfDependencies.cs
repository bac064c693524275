using System.Buffers.Binary;
using System.Text;

namespace VirtioFs.RafsFs.Dependencies;

/// <summary>Reads <paramref name="destination"/>.Length bytes of a file at <paramref name="offset"/>; returns the count
/// read (short at the end of the file) or a negative errno.</summary>
internal delegate int FileReader(ulong offset, Span<byte> destination);

/// <summary>What the dynamic loader will open for an ELF file: its interpreter and the libraries it names.</summary>
/// <param name="Machine">e_machine (62 x86-64, 183 AArch64, ...), which picks the multiarch library directories.</param>
/// <param name="Interpreter">PT_INTERP, the loader's path (/lib64/ld-linux-x86-64.so.2), or null.</param>
/// <param name="Needed">DT_NEEDED names, in order.</param>
/// <param name="SearchPath">DT_RUNPATH (or DT_RPATH when there is no RUNPATH) directories, in order, as written.</param>
internal sealed record ElfDependencyList(ushort Machine, string? Interpreter, IReadOnlyList<string> Needed, IReadOnlyList<string> SearchPath);

/// <summary>
/// Reads the dynamic section of a 64-bit little-endian ELF file (System V gABI, "Program Header" and "Dynamic Section";
/// ld.so(8) for how the names are searched). Only what the loader reads before it maps anything: the file header, the
/// program headers, PT_INTERP, PT_DYNAMIC and the string table DT_STRTAB points at. The file is an image's, so hostile:
/// every count and offset is checked and capped, and anything that does not add up answers null (not an ELF file the
/// loader could use), never an exception.
/// </summary>
internal static class ElfDependencies
{
    private const int HeaderSize = 64, ProgramHeaderSize = 56, DynamicEntrySize = 16;
    private const uint PT_LOAD = 1, PT_DYNAMIC = 2, PT_INTERP = 3;
    private const long DT_NULL = 0, DT_NEEDED = 1, DT_STRTAB = 5, DT_STRSZ = 10, DT_RPATH = 15, DT_RUNPATH = 29;
    private const ushort ET_EXEC = 2, ET_DYN = 3;

    /// <summary>Most program headers read (real files have about a dozen).</summary>
    public const int MaxProgramHeaders = 128;
    /// <summary>Largest dynamic section read (libLLVM's is under 1 KiB).</summary>
    public const int MaxDynamicBytes = 64 * 1024;
    /// <summary>Most DT_NEEDED names taken from one file.</summary>
    public const int MaxNeeded = 256;
    /// <summary>Longest name or path read out of the string table (PATH_MAX).</summary>
    public const int MaxStringBytes = 4096;

    public static ElfDependencyList? Read(FileReader read)
    {
        Span<byte> header = stackalloc byte[HeaderSize];
        if (read(0, header) != HeaderSize) return null;
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT.
        if (!header[..4].SequenceEqual("\u007fELF"u8) || header[4] != 2 || header[5] != 1 || header[6] != 1) return null;
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(header[16..]);
        if (type != ET_EXEC && type != ET_DYN) return null;
        ushort machine = BinaryPrimitives.ReadUInt16LittleEndian(header[18..]);
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(header[32..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(header[54..]);
        ushort phnum = BinaryPrimitives.ReadUInt16LittleEndian(header[56..]);
        if (phentsize != ProgramHeaderSize || phnum == 0 || phnum > MaxProgramHeaders) return null;

        byte[] headers = new byte[phnum * ProgramHeaderSize];
        if (read(phoff, headers) != headers.Length) return null;
        var loads = new List<(ulong Vaddr, ulong Offset, ulong FileSize)>();
        (ulong Offset, ulong Size) dynamic = default, interp = default;
        for (int i = 0; i < phnum; i++)
        {
            var ph = headers.AsSpan(i * ProgramHeaderSize, ProgramHeaderSize);
            uint ptype = BinaryPrimitives.ReadUInt32LittleEndian(ph);
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]);
            ulong vaddr = BinaryPrimitives.ReadUInt64LittleEndian(ph[16..]);
            ulong filesz = BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]);
            switch (ptype)
            {
                case PT_LOAD: loads.Add((vaddr, offset, filesz)); break;
                case PT_DYNAMIC: dynamic = (offset, filesz); break;
                case PT_INTERP: interp = (offset, filesz); break;
            }
        }

        string? interpreter = null;
        if (interp.Size is > 1 and <= MaxStringBytes)
        {
            byte[] path = new byte[(int)interp.Size];
            if (read(interp.Offset, path) == path.Length) interpreter = CString(path);
        }
        var needed = new List<string>();
        var searchPath = new List<string>();
        if (dynamic.Size < DynamicEntrySize || dynamic.Size > MaxDynamicBytes)
        {
            // A static executable, or one whose dynamic section is not believable: only its interpreter, if any.
            return interpreter is null ? null : new ElfDependencyList(machine, interpreter, needed, searchPath);
        }
        byte[] entries = new byte[(int)dynamic.Size / DynamicEntrySize * DynamicEntrySize];
        if (read(dynamic.Offset, entries) != entries.Length) return null;
        ulong strtab = 0, strsz = 0;
        long runpath = -1, rpath = -1;
        var neededOffsets = new List<ulong>();
        for (int at = 0; at < entries.Length; at += DynamicEntrySize)
        {
            long tag = BinaryPrimitives.ReadInt64LittleEndian(entries.AsSpan(at));
            ulong value = BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan(at + 8));
            if (tag == DT_NULL) break;
            switch (tag)
            {
                case DT_NEEDED when neededOffsets.Count < MaxNeeded: neededOffsets.Add(value); break;
                case DT_STRTAB: strtab = value; break;
                case DT_STRSZ: strsz = value; break;
                case DT_RUNPATH: runpath = (long)Math.Min(value, long.MaxValue); break;
                case DT_RPATH: rpath = (long)Math.Min(value, long.MaxValue); break;
            }
        }
        // DT_STRTAB is an address: the loader finds it through the PT_LOAD segment that maps it.
        if (strsz == 0 || !ToFileOffset(loads, strtab, out ulong strtabOffset)) return new ElfDependencyList(machine, interpreter, needed, searchPath);
        foreach (ulong name in neededOffsets)
        {
            if (ReadString(read, strtabOffset, strsz, name) is { Length: > 0 } s) needed.Add(s);
        }
        // ld.so ignores DT_RPATH when DT_RUNPATH is present.
        long pathAt = runpath >= 0 ? runpath : rpath;
        if (pathAt >= 0 && ReadString(read, strtabOffset, strsz, (ulong)pathAt) is { Length: > 0 } list)
        {
            foreach (var dir in list.Split(':', StringSplitOptions.RemoveEmptyEntries)) searchPath.Add(dir);
        }
        return new ElfDependencyList(machine, interpreter, needed, searchPath);
    }

    private static bool ToFileOffset(List<(ulong Vaddr, ulong Offset, ulong FileSize)> loads, ulong address, out ulong offset)
    {
        foreach (var (vaddr, fileOffset, size) in loads)
        {
            if (address >= vaddr && address - vaddr < size)
            {
                offset = fileOffset + (address - vaddr);
                return offset >= fileOffset; // no wrap-around
            }
        }
        offset = 0;
        return false;
    }

    /// <summary>The NUL-terminated string at <paramref name="at"/> of a string table of <paramref name="size"/> bytes.</summary>
    private static string? ReadString(FileReader read, ulong tableOffset, ulong size, ulong at)
    {
        if (at >= size || tableOffset > ulong.MaxValue - at) return null;
        int room = (int)Math.Min(size - at, MaxStringBytes);
        Span<byte> buffer = stackalloc byte[MaxStringBytes];
        int n = read(tableOffset + at, buffer[..room]);
        if (n <= 0) return null;
        int end = buffer[..n].IndexOf((byte)0);
        if (end < 0) return null; // unterminated within the table (or the cap): not a name the loader would use
        return Encoding.UTF8.GetString(buffer[..end]);
    }

    private static string? CString(ReadOnlySpan<byte> bytes)
    {
        int end = bytes.IndexOf((byte)0);
        if (end <= 0) return null;
        return Encoding.UTF8.GetString(bytes[..end]);
    }

    /// <summary>The directories ld.so searches after DT_RUNPATH for a machine: the Debian/Ubuntu multiarch ones, then
    /// the lib64 ones of Fedora and SUSE, then the plain ones (Alpine, busybox images).</summary>
    public static IReadOnlyList<string> DefaultDirectories(ushort machine) => machine switch
    {
        62 => X86_64,
        183 => AArch64,
        _ => Plain,
    };

    private static readonly string[] Plain = ["/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"];
    private static readonly string[] X86_64 = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", .. Plain];
    private static readonly string[] AArch64 = ["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", .. Plain];
}
