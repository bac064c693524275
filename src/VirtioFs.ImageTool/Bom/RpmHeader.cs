using System.Buffers.Binary;
using System.Text;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// An rpm header as the rpm database stores it (one blob per installed package, without the 8-byte magic a package
/// file's header carries): a big-endian int32 index count il and data length dl, il 16-byte index entries
/// {tag, type, offset, count}, then dl bytes of data store (rpm docs/manual/format.md "Header"; lib/header.c
/// hdrblobInit/hdrblobVerifyInfo; lib/header_internal.h struct entryInfo_s). Every entry's type and offset are
/// checked when the blob is opened, as rpm's hdrblobVerifyInfo does, and each value read is bounds-checked against
/// the data store.
/// </summary>
public sealed class RpmHeader
{
    public const int TagName = 1000, TagVersion = 1001, TagRelease = 1002, TagEpoch = 1003, TagLicense = 1014,
        TagVendor = 1011, TagArch = 1022, TagOldFileNames = 1027, TagSourceRpm = 1044,
        TagDirIndexes = 1116, TagBaseNames = 1117, TagDirNames = 1118;

    // rpm's tag value types (include/rpm/rpmtag.h rpmTagType_e).
    private const uint TypeInt32 = 4, TypeString = 6, TypeStringArray = 8, TypeI18nString = 9, MaxType = 9;

    /// <summary>lib/header_internal.h: hdrchkTags allows under 65536 tags, hdrchkData under 16 MiB of data.</summary>
    public const int MaxTags = 0xffff, MaxData = 0xffffff;

    private readonly byte[] _blob;
    private readonly int _data;
    private readonly int _dl;
    private readonly Dictionary<int, (uint Type, int Offset, int Count)> _entries = new();

    public RpmHeader(byte[] blob)
    {
        _blob = blob;
        if (blob.Length < 8) throw new InvalidDataException($"rpm header of {blob.Length} bytes has no index count and data length");
        int il = BinaryPrimitives.ReadInt32BigEndian(blob), dl = BinaryPrimitives.ReadInt32BigEndian(blob.AsSpan(4));
        if (il < 1 || il > MaxTags) throw new InvalidDataException($"rpm header index count {il} is outside 1..{MaxTags}");
        if (dl < 0 || dl > MaxData) throw new InvalidDataException($"rpm header data length {dl} is outside 0..{MaxData}");
        long need = 8 + 16L * il + dl;
        if (need > blob.Length) throw new InvalidDataException($"rpm header claims {need} bytes ({il} entries, {dl} data bytes) but the blob has {blob.Length}");
        _data = 8 + 16 * il;
        _dl = dl;
        for (int i = 0; i < il; i++)
        {
            var e = blob.AsSpan(8 + 16 * i, 16);
            int tag = BinaryPrimitives.ReadInt32BigEndian(e);
            uint type = BinaryPrimitives.ReadUInt32BigEndian(e[4..]);
            int offset = BinaryPrimitives.ReadInt32BigEndian(e[8..]);
            uint count = BinaryPrimitives.ReadUInt32BigEndian(e[12..]);
            // hdrchkType, hdrchkRange, hdrchkData: a type rpm does not know, an offset outside the data store or a
            // count over the data size is a corrupt header.
            if (type > MaxType) throw new InvalidDataException($"rpm header entry {i} (tag {tag}) has unknown type {type}");
            if (offset < 0 || offset > dl) throw new InvalidDataException($"rpm header entry {i} (tag {tag}) has offset {offset} outside its {dl}-byte data");
            if (count > MaxData) throw new InvalidDataException($"rpm header entry {i} (tag {tag}) has count {count} over {MaxData}");
            _entries.TryAdd(tag, (type, offset, (int)count));
        }
    }

    public bool Has(int tag) => _entries.ContainsKey(tag);

    /// <summary>A STRING (or the first of an I18NSTRING / STRING_ARRAY) tag's value, or null when absent.</summary>
    public string? GetString(int tag)
    {
        if (!_entries.TryGetValue(tag, out var e)) return null;
        if (e.Type is not (TypeString or TypeI18nString or TypeStringArray)) throw new InvalidDataException($"rpm header tag {tag} has type {e.Type}, not a string");
        if (e.Count < 1) throw new InvalidDataException($"rpm header tag {tag} has no value");
        return ReadStrings(tag, e.Offset, 1)[0];
    }

    /// <summary>A STRING_ARRAY tag's values, or an empty array when absent.</summary>
    public string[] GetStringArray(int tag)
    {
        if (!_entries.TryGetValue(tag, out var e)) return [];
        if (e.Type != TypeStringArray) throw new InvalidDataException($"rpm header tag {tag} has type {e.Type}, not a string array");
        // Each string takes at least its NUL: more strings than data bytes cannot be there (checked before allocating).
        if (e.Count > _dl - e.Offset) throw new InvalidDataException($"rpm header tag {tag}: {e.Count} strings cannot fit {_dl - e.Offset} data bytes");
        return ReadStrings(tag, e.Offset, e.Count);
    }

    /// <summary>An INT32 tag's values, or an empty array when absent.</summary>
    public int[] GetInt32Array(int tag)
    {
        if (!_entries.TryGetValue(tag, out var e)) return [];
        if (e.Type != TypeInt32) throw new InvalidDataException($"rpm header tag {tag} has type {e.Type}, not INT32");
        if ((long)e.Offset + 4L * e.Count > _dl) throw new InvalidDataException($"rpm header tag {tag}: {e.Count} INT32 values at {e.Offset} run past its {_dl}-byte data");
        var r = new int[e.Count];
        for (int i = 0; i < r.Length; i++) r[i] = BinaryPrimitives.ReadInt32BigEndian(_blob.AsSpan(_data + e.Offset + 4 * i));
        return r;
    }

    /// <summary>The first value of an INT32 tag, or null when absent.</summary>
    public int? GetInt32(int tag)
    {
        if (!_entries.ContainsKey(tag)) return null;
        var v = GetInt32Array(tag);
        return v.Length > 0 ? v[0] : throw new InvalidDataException($"rpm header tag {tag} has no value");
    }

    private string[] ReadStrings(int tag, int offset, int count)
    {
        var data = _blob.AsSpan(_data, _dl);
        var r = new string[count];
        int at = offset;
        for (int i = 0; i < count; i++)
        {
            int nul = at < data.Length ? data[at..].IndexOf((byte)0) : -1;
            if (nul < 0) throw new InvalidDataException($"rpm header tag {tag}: string {i} at {at} has no NUL inside the data store");
            // rpm writes UTF-8 but older packages may carry Latin-1 in a license or vendor: never fail on that.
            r[i] = Encoding.UTF8.GetString(data.Slice(at, nul));
            at += nul + 1;
        }
        return r;
    }
}
