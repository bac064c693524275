using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Layout;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.RafsFs;

/// <summary>
/// Checks an image against its merkle tree (extension version 2, described in src/VirtioFs.Rafs/Merkle.cs) lazily,
/// top down, before anything it vouches for reaches the guest. Trust starts at the root: the caller compared the
/// image's root digest with a trusted value or signature, and <see cref="VerifyRoot"/> binds the root inode's stored
/// inode digest to it. From there each step uses only digests an earlier step authenticated:
/// <list type="bullet">
/// <item>an inode is <em>vouched</em> when its stored inode digest is authentic: the root's by the trusted root, any
/// other's because a verified directory's content digest covers it;</item>
/// <item><see cref="EnsureInode"/>: a vouched inode's record (mode, uid, gid, rdev, size, xattrs) and its stored
/// content digest must hash to its inode digest (a symlink's target is checked against the content digest too);
/// this runs before LOOKUP, GETATTR, READDIRPLUS, ACCESS, xattr, OPEN and READLINK answers use the inode;</item>
/// <item><see cref="EnsureDirectory"/>: a directory's children (names and stored inode digests) must hash to its
/// content digest, which vouches for every child;</item>
/// <item><see cref="CheckFile"/>: a file's chunk digests must hash to its content digest at OPEN (the storage layer then
/// checks each chunk's data against its digest).</item>
/// </list>
/// State is four bits per inode handle (the reader's nid or v5 index, never the image's i_ino, which a hostile
/// image can repeat), set once, so the hot path is a bit test. A mismatch answers EIO for that inode and is logged.
/// </summary>
internal sealed class MerkleVerifier
{
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFLNK = 0xA000;
    private readonly RafsImage _image;
    private readonly ILogger _logger;
    private readonly Bits _vouched, _metaOk, _dirOk, _fileOk;

    public MerkleVerifier(RafsImage image, ILogger logger)
    {
        _image = image;
        _logger = logger;
        // Handles are bounded by the bootstrap (v6: one per 32-byte slot; v5: the inode table), not by a field.
        ulong limit = image.InodeHandleLimit;
        _vouched = new Bits(limit);
        _metaOk = new Bits(limit);
        _dirOk = new Bits(limit);
        _fileOk = new Bits(limit);
    }

    /// <summary>Checks that the root inode's stored digest is <paramref name="trustedRoot"/> and that the root inode
    /// and directory match it. Returns null, or why the image must be refused.</summary>
    public string? VerifyRoot(ReadOnlySpan<byte> trustedRoot)
    {
        ulong root = _image.RootIno;
        if (_image.GetAttr(root, out RafsAttr attr) != 0) return "the root inode is unreadable";
        var stored = _image.GetInodeDigest(attr.Ino);
        if (stored.Length != Codec.DigestSize) return "the image has no digest for its root inode (no merkle tree)";
        if (!stored.SequenceEqual(trustedRoot)) return "the root inode's digest differs from the image's root digest";
        _vouched.Set(root);
        if (EnsureInode(root) != 0) return "the root inode's metadata does not match its digest";
        return EnsureDirectory(root) == 0 ? null : "the root directory does not match its digest";
    }

    /// <summary>0 when inode <paramref name="ino"/> (a reader handle) was reached through verified directories and its
    /// metadata, xattrs and content digest hash to its inode digest; EIO otherwise.</summary>
    public int EnsureInode(ulong ino)
    {
        if (_metaOk.Get(ino)) return 0;
        // A kernel only names inodes a LOOKUP or READDIRPLUS returned, and those were vouched for by their parent.
        if (!_vouched.Get(ino)) return Fail(ino, "not reached through a verified directory");
        int rc = _image.GetAttr(ino, out RafsAttr attr);
        if (rc != 0) return Fail(ino, "inode record");
        var stored = _image.GetInodeDigest(attr.Ino);
        var content = _image.GetContentDigest(attr.Ino);
        if (stored.Length != Codec.DigestSize || content.Length != Codec.DigestSize) return Fail(ino, "merkle row");
        var xattrs = new List<KeyValuePair<byte[], byte[]>>();
        if (_image.GetXattrs(ino, xattrs) != 0) return Fail(ino, "xattrs");
        Merkle.SortXattrs(xattrs);
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        Merkle.InodeDigest(_image.Digester, new BoundMeta(attr.Mode, attr.Uid, attr.Gid, attr.Rdev, attr.Size), xattrs, content, actual);
        if (!actual.SequenceEqual(stored)) return Fail(ino, "metadata (mode, uid, gid, rdev, size or xattrs)");
        if ((attr.Mode & S_IFMT) == S_IFLNK)
        {
            // The target is in the bootstrap: check it now, so lookup, getattr and readlink agree.
            if (_image.ReadLink(ino, out byte[] target) != 0) return Fail(ino, "symlink");
            Codec.Hash(_image.Digester, target, actual);
            if (!actual.SequenceEqual(content)) return Fail(ino, "symlink");
        }
        _metaOk.Set(ino);
        return 0;
    }

    /// <summary>0 when directory <paramref name="ino"/> (a reader handle) is a verified inode and lists exactly the
    /// children its content digest covers (each then vouched for); EIO otherwise. Not a directory: ENOTDIR.</summary>
    public int EnsureDirectory(ulong ino)
    {
        if (_dirOk.Get(ino)) return 0;
        int rc = EnsureInode(ino);
        if (rc != 0) return rc;
        if ((rc = _image.GetAttr(ino, out RafsAttr attr)) != 0) return rc;
        if ((attr.Mode & S_IFMT) != S_IFDIR) return Errno.ENOTDIR;
        Span<byte> expected = stackalloc byte[Codec.DigestSize];
        _image.GetContentDigest(attr.Ino).CopyTo(expected);

        using var h = new Codec.Incremental(_image.Digester);
        int inner = 0;
        var len = new byte[1];
        var kids = new List<ulong>();
        rc = _image.ReadDir(ino, 0, (name, child, _, _) =>
        {
            if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) return true;
            if ((inner = _image.GetAttr(child, out RafsAttr c)) != 0) return false;
            var d = _image.GetInodeDigest(c.Ino);
            if (d.Length != Codec.DigestSize) { inner = Errno.EIO; return false; }
            len[0] = (byte)name.Length;
            h.Update(len);
            h.Update(name);
            h.Update(d);
            kids.Add(child);
            return true;
        });
        if (rc != 0 || inner != 0) return Fail(ino, "directory");
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        h.Finish(actual);
        if (!actual.SequenceEqual(expected)) return Fail(ino, "directory");
        foreach (var k in kids) _vouched.Set(k);
        _dirOk.Set(ino);
        return 0;
    }

    /// <summary>0 when the chunk digests of file <paramref name="ino"/> (a verified inode) hash to its content digest.</summary>
    public int CheckFile(ulong ino, ulong iIno, ReadOnlySpan<RafsChunk> chunks)
    {
        if (_fileOk.Get(ino)) return 0;
        int rc = EnsureInode(ino);
        if (rc != 0) return rc;
        using var h = new Codec.Incremental(_image.Digester);
        foreach (ref readonly RafsChunk c in chunks)
        {
            if (c.IsHole) continue; // holes have no chunk (v5 readers synthesise them; the builder records none)
            var digest = c.Digest;
            h.Update(digest);
        }
        h.Update(_image.GetFileDigest(iIno)); // merkle version 3: the row's whole-file digest (empty for version 2)
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        h.Finish(actual);
        if (!actual.SequenceEqual(_image.GetContentDigest(iIno))) return Fail(ino, "file");
        _fileOk.Set(ino);
        return 0;
    }

    private int Fail(ulong ino, string kind)
    {
        RafsFsLog.DigestMismatch(_logger, ino, kind);
        return Errno.EIO;
    }

    /// <summary>A fixed-size concurrent bit set over inode handles; out-of-range handles read as unset.</summary>
    private sealed class Bits(ulong count)
    {
        private readonly int[] _words = new int[(int)Math.Min((count + 31) / 32, int.MaxValue)];

        public bool Get(ulong i) => i < (ulong)_words.Length * 32 && (Volatile.Read(ref _words[i / 32]) & (1 << (int)(i % 32))) != 0;

        public void Set(ulong i)
        {
            if (i < (ulong)_words.Length * 32) Interlocked.Or(ref _words[i / 32], 1 << (int)(i % 32));
        }
    }
}
