using System.Text;

namespace VirtioFs.Fuse;

/// <summary>
/// One line of /proc/self/mountinfo (proc(5), written by fs/proc_namespace.c show_mountinfo):
/// <c>36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue</c> is mount id, parent id,
/// major:minor, root, mount point, mount options, zero or more optional fields, the separator <c>-</c>, filesystem
/// type, source and superblock options. Paths come unescaped: the kernel writes space, tab, newline and backslash as
/// <c>\040</c>, <c>\011</c>, <c>\012</c> and <c>\134</c>.
/// </summary>
public sealed record MountInfoEntry(int MountId, int ParentId, string Device, string Root, string MountPoint, string Options,
    IReadOnlyList<string> OptionalFields, string FsType, string Source, string SuperOptions)
{
    /// <summary>A FUSE mount: type <c>fuse</c>, <c>fuseblk</c>, or <c>fuse.SUBTYPE</c> as mount.fuse names it.</summary>
    public bool IsFuse => FsType is "fuse" or "fuseblk" || FsType.StartsWith("fuse.", StringComparison.Ordinal);
}

/// <summary>Reads /proc/self/mountinfo: the one parser for every caller that asks what is mounted where.</summary>
public static class MountInfo
{
    public const string SelfPath = "/proc/self/mountinfo";

    /// <summary>Parses one line; false for a line that does not have mountinfo's shape.</summary>
    public static bool TryParse(string line, out MountInfoEntry entry)
    {
        entry = null!;
        string[] fields = line.Split(' ');
        // The separator is the first field that is exactly "-" after the six fixed ones; optional fields are "tag[:value]".
        if (fields.Length < 9) return false;
        int separator = Array.IndexOf(fields, "-", 6);
        if (separator < 0 || fields.Length < separator + 3) return false;
        if (!int.TryParse(fields[0], out int id) || !int.TryParse(fields[1], out int parent)) return false;
        if (!fields[2].Contains(':', StringComparison.Ordinal)) return false;
        entry = new MountInfoEntry(id, parent, fields[2], Unescape(fields[3]), Unescape(fields[4]), fields[5], fields[6..separator],
            fields[separator + 1], Unescape(fields[separator + 2]), separator + 3 < fields.Length ? fields[separator + 3] : "");
        return true;
    }

    /// <summary>
    /// The mount visible at <paramref name="mountPoint"/>: the last one listed there (a later mount on the same path
    /// covers the earlier ones). Null when nothing is mounted there or the table cannot be read.
    /// </summary>
    public static MountInfoEntry? Find(string mountPoint, string path = SelfPath)
    {
        MountInfoEntry? found = null;
        try
        {
            foreach (string line in File.ReadLines(path))
            {
                if (TryParse(line, out MountInfoEntry e) && e.MountPoint == mountPoint) found = e;
            }
        }
        catch (IOException)
        {
            return null;
        }
        return found;
    }

    /// <summary>Undoes the kernel's octal escapes (<c>\ooo</c>); anything else is kept as it is.</summary>
    public static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal)) return field;
        var bytes = new List<byte>(field.Length);
        byte[] raw = Encoding.UTF8.GetBytes(field);
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] == '\\' && i + 3 < raw.Length && IsOctal(raw[i + 1]) && IsOctal(raw[i + 2]) && IsOctal(raw[i + 3]))
            {
                int value = (raw[i + 1] - '0') * 64 + (raw[i + 2] - '0') * 8 + (raw[i + 3] - '0');
                if (value <= 0xFF)
                {
                    bytes.Add((byte)value);
                    i += 3;
                    continue;
                }
            }
            bytes.Add(raw[i]);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static bool IsOctal(byte b) => b is >= (byte)'0' and <= (byte)'7';
}
