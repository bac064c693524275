using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;

namespace VirtioFs.RafsFs;

/// <summary>
/// Checks an image against its merkle tree lazily, top down (the tree is described in src/VirtioFs.Rafs/Merkle.cs).
/// Trust starts at the root: the caller has compared the image's root digest with a trusted value or signature, and
/// <see cref="VerifyRoot"/> binds the root inode's stored digest to it. From then on every stored digest the
/// verifier meets was itself covered by a verified parent: a directory is recomputed from its children's names and
/// stored digests the first time it is used, a file from its chunk digests when it is opened (the storage layer
/// then checks each chunk against its digest), a symlink from its target. Each inode is checked once; the verified
/// state is a bit per i_ino. A mismatch answers EIO for that operation and is logged.
/// </summary>
internal sealed class MerkleVerifier
{
    private const uint S_IFMT = 0xF000, S_IFDIR = 0x4000;
    private readonly RafsImage _image;
    private readonly ILogger _logger;
    private readonly bool _withNames;
    private readonly int[] _verified;

    public MerkleVerifier(RafsImage image, ILogger logger)
    {
        _image = image;
        _logger = logger;
        // v6 directories bind names (VirtioFs extension); v5 hashes child digests only (nydus builder/src/core/v5.rs).
        _withNames = image.Version == RafsVersion.V6;
        // One bit per inode number; the reader bounds InodeCount by the merkle table's size inside the bootstrap.
        _verified = new int[(int)Math.Min((image.InodeCount + 32) / 32, int.MaxValue)];
    }

    /// <summary>Checks that the root inode's stored digest is <paramref name="trustedRoot"/> and that the root
    /// directory matches it. Returns null, or why the image must be refused.</summary>
    public string? VerifyRoot(ReadOnlySpan<byte> trustedRoot)
    {
        if (_image.GetAttr(_image.RootIno, out RafsAttr root) != 0) return "the root inode is unreadable";
        var stored = _image.GetInodeDigest((uint)root.Ino);
        if (stored.Length != Codec.DigestSize) return "the image has no digest for its root inode (no merkle tree)";
        if (!stored.SequenceEqual(trustedRoot)) return "the root inode's digest differs from the image's root digest";
        return EnsureDirectory(_image.RootIno) == 0 ? null : "the root directory does not match its digest";
    }

    private bool IsVerified(ulong iIno) => iIno < (ulong)_verified.Length * 32 && (Volatile.Read(ref _verified[iIno / 32]) & (1 << (int)(iIno % 32))) != 0;

    private void MarkVerified(ulong iIno)
    {
        if (iIno < (ulong)_verified.Length * 32) Interlocked.Or(ref _verified[iIno / 32], 1 << (int)(iIno % 32));
    }

    /// <summary>0 when directory <paramref name="ino"/> (a reader inode number) lists exactly the children its digest
    /// covers; EIO otherwise. Not a directory: ENOTDIR.</summary>
    public int EnsureDirectory(ulong ino)
    {
        int rc = _image.GetAttr(ino, out RafsAttr attr);
        if (rc != 0) return rc;
        if ((attr.Mode & S_IFMT) != S_IFDIR) return Errno.ENOTDIR;
        if (IsVerified(attr.Ino)) return 0;
        Span<byte> expected = stackalloc byte[Codec.DigestSize];
        if (!TryStored(attr.Ino, expected)) return Fail(ino, "directory");

        using var h = new Codec.Incremental(_image.Digester);
        int inner = 0;
        var len = new byte[1];
        rc = _image.ReadDir(ino, 0, (name, child, _, _) =>
        {
            if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8)) return true;
            if ((inner = _image.GetAttr(child, out RafsAttr c)) != 0) return false;
            var d = _image.GetInodeDigest((uint)c.Ino);
            if (d.Length != Codec.DigestSize) { inner = Errno.EIO; return false; }
            if (_withNames)
            {
                len[0] = (byte)name.Length;
                h.Update(len);
                h.Update(name);
            }
            h.Update(d);
            return true;
        });
        if (rc != 0 || inner != 0) return Fail(ino, "directory");
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        h.Finish(actual);
        if (!actual.SequenceEqual(expected)) return Fail(ino, "directory");
        MarkVerified(attr.Ino);
        return 0;
    }

    /// <summary>0 when the chunk digests of file <paramref name="iIno"/> hash to its stored digest.</summary>
    public int CheckFile(ulong iIno, ReadOnlySpan<RafsChunk> chunks)
    {
        if (IsVerified(iIno)) return 0;
        Span<byte> expected = stackalloc byte[Codec.DigestSize];
        if (!TryStored(iIno, expected)) return Fail(iIno, "file");
        using var h = new Codec.Incremental(_image.Digester);
        foreach (ref readonly RafsChunk c in chunks)
        {
            var digest = c.Digest;
            h.Update(digest);
        }
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        h.Finish(actual);
        if (!actual.SequenceEqual(expected)) return Fail(iIno, "file");
        MarkVerified(iIno);
        return 0;
    }

    /// <summary>0 when the target of symlink <paramref name="ino"/> hashes to its stored digest.</summary>
    public int CheckSymlink(ulong ino, ReadOnlySpan<byte> target)
    {
        int rc = _image.GetAttr(ino, out RafsAttr attr);
        if (rc != 0) return rc;
        if (IsVerified(attr.Ino)) return 0;
        Span<byte> expected = stackalloc byte[Codec.DigestSize];
        if (!TryStored(attr.Ino, expected)) return Fail(ino, "symlink");
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        Codec.Hash(_image.Digester, target, actual);
        if (!actual.SequenceEqual(expected)) return Fail(ino, "symlink");
        MarkVerified(attr.Ino);
        return 0;
    }

    private bool TryStored(ulong iIno, Span<byte> into)
    {
        if (iIno > uint.MaxValue) return false;
        var d = _image.GetInodeDigest((uint)iIno);
        if (d.Length != Codec.DigestSize) return false;
        d.CopyTo(into);
        return true;
    }

    private int Fail(ulong ino, string kind)
    {
        RafsFsLog.DigestMismatch(_logger, ino, kind);
        return Errno.EIO;
    }
}
