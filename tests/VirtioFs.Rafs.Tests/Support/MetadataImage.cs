using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using VirtioFs.Rafs.Builder;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.Rafs.Tests.Support;

/// <summary>
/// A small image for the metadata half of the merkle tree, and the edits an attacker who can rewrite a bootstrap
/// would make: each changes one field of one inode record in place and leaves every digest (the merkle table, the
/// header, v5's native digests) as the builder wrote it. The tree is built in memory from plain files, so no
/// mknod, chown or setxattr is needed. Shared (as a linked source file) by the Rafs, RafsFs and ImageTool tests.
/// </summary>
public sealed class MetadataImage : IDisposable
{
    /// <summary>Field edits: which path each changes, and the word `vfs-image check` must name.</summary>
    public static readonly IReadOnlyDictionary<string, (string Path, string Field)> Edits = new Dictionary<string, (string, string)>
    {
        ["setuid"] = ("bin/tool", "mode"),
        ["uid"] = ("etc/conf", "uid"),
        ["gid"] = ("etc/conf", "gid"),
        ["rdev"] = ("dev/chr", "rdev"),
        ["xattr-add"] = ("lib/capfile", "xattr"),
        ["xattr-change"] = ("lib/capfile2", "xattr"),
    };

    public static readonly byte[] CapabilityValue = [1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    public string Root { get; }
    public string BlobDir { get; }
    public string Bootstrap { get; }
    public int FsVersion { get; }
    public BuildResult Build { get; }

    public MetadataImage(int fsVersion, byte[]? signingKey = null)
    {
        FsVersion = fsVersion;
        Root = Directory.CreateTempSubdirectory("vfs-merkle-meta-").FullName;
        string src = Directory.CreateDirectory(Path.Combine(Root, "src")).FullName;
        BlobDir = Directory.CreateDirectory(Path.Combine(Root, "blobs")).FullName;
        Bootstrap = Path.Combine(Root, "bootstrap");
        foreach (var d in new[] { "bin", "etc", "dev", "lib" }) Directory.CreateDirectory(Path.Combine(src, d));
        File.WriteAllText(Path.Combine(src, "bin/tool"), "#!/bin/sh\necho tool\n");
        File.WriteAllText(Path.Combine(src, "bin/other"), "#!/bin/sh\necho other\n");
        File.WriteAllText(Path.Combine(src, "etc/conf"), "key=value\n");
        File.WriteAllText(Path.Combine(src, "lib/capfile"), "capable\n");
        File.WriteAllText(Path.Combine(src, "lib/capfile2"), "capable too\n");
        File.WriteAllText(Path.Combine(src, "top.txt"), "top\n");

        var root = DirectorySource.Load(src);
        Node(root, "bin/tool").Mode = 0x8000 | 0x1ED;            // 0755, no setuid
        Node(root, "bin/other").Mode = 0x8000 | 0x1ED;
        var conf = Node(root, "etc/conf");
        conf.Mode = 0x8000 | 0x1A4;
        conf.Uid = 0;
        conf.Gid = 0;
        // A character device (1, 3), as /dev/null; glibc makedev form.
        var dev = Node(root, "dev");
        dev.Children!.Add(new BuildEntry("chr"u8.ToArray(), new BuildInode { Mode = 0x2000 | 0x1B6, Rdev = (1 << 8) | 3, MtimeSec = 1_700_000_000 }));
        // v6 stores "user.capability" as name index 1 + "capability": turning the index into 6 (security.) adds
        // security.capability; v5 stores full names, so its edit renames the equally long "user.capabilityXXXX".
        var cap = Node(root, "lib/capfile");
        cap.SetXattr("user.capability"u8.ToArray(), CapabilityValue);
        cap.SetXattr("user.capabilityXXXX"u8.ToArray(), CapabilityValue);
        Node(root, "lib/capfile2").SetXattr("security.capability"u8.ToArray(), CapabilityValue);

        Build = ImageBuilder.Build(root, new BuildOptions
        {
            BlobDir = BlobDir, Bootstrap = Bootstrap, Compressor = Compressor.Lz4Block, Digester = Digester.Blake3, ChunkSize = 64 * 1024,
            FsVersion = fsVersion, SigningKey = signingKey, BuildTime = 1_700_000_000,
        });
    }

    private static BuildInode Node(BuildInode root, string path) => ImageBuilder.Resolve(root, path) ?? throw new InvalidOperationException(path);

    /// <summary>The reader's handle (v6 nid, v5 index) and attributes of <paramref name="path"/>.</summary>
    public (ulong Handle, RafsAttr Attr) Find(string path)
    {
        using var img = RafsImage.Open(Bootstrap);
        if (ImageWalker.Resolve(img, path, out ulong ino) != 0 || img.GetAttr(ino, out var a) != 0) throw new InvalidOperationException(path);
        return (ino, a);
    }

    /// <summary>Applies edit <paramref name="edit"/> (a key of <see cref="Edits"/>) to the bootstrap file.</summary>
    public void Tamper(string edit)
    {
        var (path, _) = Edits[edit];
        var (handle, attr) = Find(path);
        var boot = File.ReadAllBytes(Bootstrap);
        long rec = RecordOffset(boot, handle);
        bool v5 = FsVersion == 5;
        switch (edit)
        {
            case "setuid":
                if (v5) Or32(boot, rec + 60, 0x800);
                else BinaryPrimitives.WriteUInt16LittleEndian(boot.AsSpan((int)rec + 4), (ushort)(attr.Mode | 0x800));
                break;
            case "uid":
                BinaryPrimitives.WriteUInt32LittleEndian(boot.AsSpan((int)rec + (v5 ? 48 : 24)), 4242);
                break;
            case "gid":
                BinaryPrimitives.WriteUInt32LittleEndian(boot.AsSpan((int)rec + (v5 ? 52 : 28)), 4242);
                break;
            case "rdev":
                // (8, 0): a block device's number in place of /dev/null's.
                if (v5) BinaryPrimitives.WriteUInt32LittleEndian(boot.AsSpan((int)rec + 104), 8 << 8);
                else BinaryPrimitives.WriteUInt32LittleEndian(boot.AsSpan((int)rec + 16), V6Writer.EncodeDev(8 << 8));
                break;
            case "xattr-add":
                if (v5) Replace(boot, "user.capabilityXXXX"u8, "security.capability"u8);
                else
                {
                    // erofs_xattr_entry: u8 name length (10), u8 name index (1 = user.), u16 value size, then the name.
                    byte[] entry = [10, 1, (byte)CapabilityValue.Length, 0, .. "capability"u8];
                    int at = Unique(boot, entry);
                    boot[at + 1] = 6; // security.
                }
                break;
            case "xattr-change":
                boot[CapabilityValueOffset(boot, v5) + 4] ^= 0x01; // a bit of the permitted set
                break;
            default:
                throw new ArgumentException(edit);
        }
        File.WriteAllBytes(Bootstrap, boot);
    }

    /// <summary>Removes the merkle extension header (as an image nydus built has none).</summary>
    public void DropExtension()
    {
        var boot = File.ReadAllBytes(Bootstrap);
        boot.AsSpan(HeaderOffset, MerkleExtension.Size).Clear();
        File.WriteAllBytes(Bootstrap, boot);
    }

    /// <summary>Rewrites the extension header's version (1: an image from before metadata binding).</summary>
    public void SetExtensionVersion(uint version)
    {
        var boot = File.ReadAllBytes(Bootstrap);
        BinaryPrimitives.WriteUInt32LittleEndian(boot.AsSpan(HeaderOffset + 4), version);
        File.WriteAllBytes(Bootstrap, boot);
    }

    private int HeaderOffset => FsVersion == 5 ? V5.SignatureHeaderOffset : MerkleExtension.Offset;

    private long RecordOffset(byte[] boot, ulong handle)
    {
        if (FsVersion == 5)
        {
            var sb = MemoryMarshal.Read<RafsV5SuperBlock>(boot);
            return (long)BinaryPrimitives.ReadUInt32LittleEndian(boot.AsSpan((int)sb.s_inode_table_offset + ((int)handle - 1) * 4)) << 3;
        }
        var sb6 = MemoryMarshal.Read<RafsV6SuperBlock>(boot.AsSpan(V6.SuperOffset));
        return (long)sb6.s_meta_blkaddr * V6.BlockSize + (long)handle * V6.InodeSlotSize;
    }

    private static void Or32(byte[] b, long at, uint bits) =>
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan((int)at), BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)at)) | bits);

    private static int Unique(byte[] hay, ReadOnlySpan<byte> needle)
    {
        int at = hay.AsSpan().IndexOf(needle);
        if (at < 0 || hay.AsSpan(at + 1).IndexOf(needle) >= 0) throw new InvalidOperationException("pattern not found exactly once in the bootstrap");
        return at;
    }

    /// <summary>Where lib/capfile2's security.capability value starts: v6 stores the entry header and the suffix
    /// "capability" right before it; v5 stores "security.capability", NUL, then the value.</summary>
    private static int CapabilityValueOffset(byte[] boot, bool v5)
    {
        byte[] prefix = v5 ? [.. "security.capability"u8, 0] : [10, 6, (byte)CapabilityValue.Length, 0, .. "capability"u8];
        return Unique(boot, [.. prefix, .. CapabilityValue]) + prefix.Length;
    }

    private static void Replace(byte[] hay, ReadOnlySpan<byte> from, ReadOnlySpan<byte> to)
    {
        int at = Unique(hay, from);
        to.CopyTo(hay.AsSpan(at));
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
