namespace VirtioFs.Rafs.Reader;

/// <summary>Verifies an image: structure, signature, v5's native digests, the merkle extension (every content digest,
/// then every inode's metadata against the digest that binds it), and (with blobs) every chunk's data against its
/// digest. Returns the first mismatch, named by path, inode number and, for metadata, the field.</summary>
public static class ImageChecker
{
    public static string? Check(RafsImage image, string? blobDir, byte[]? trustedKey, Microsoft.Extensions.Logging.ILogger? logger = null) =>
        CheckWithWarnings(image, blobDir, trustedKey, logger).Error;

    /// <summary>The first error (null when the image is sound) and what is odd but harmless.</summary>
    public static ImageCheckResult CheckWithWarnings(RafsImage image, string? blobDir, byte[]? trustedKey, Microsoft.Extensions.Logging.ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        var warnings = new List<string>();
        var err = CheckCore(image, blobDir, trustedKey, warnings);
        if (logger is not null)
        {
            if (err is null) Log.CheckPassed(logger, image.InodeCount, image.Blobs.Count);
            else Log.CheckFailed(logger, err);
        }
        return new ImageCheckResult(err, warnings);
    }

    private static string? CheckCore(RafsImage image, string? blobDir, byte[]? trustedKey, List<string> warnings)
    {
        if (trustedKey is not null)
        {
            if (image.RootDigest is null) return $"image has no merkle root to verify a signature over{(image.MerkleVersion != 0 ? $" (merkle extension version {image.MerkleVersion}, not {Layout.MerkleExtension.MetadataBoundVersion} or later: metadata is not bound; rebuild the image)" : "")}";
            if (image.Signature is null) return "image is not signed";
            if (!Signing.Verify(trustedKey, image.RootDigest, image.Signature)) return "signature over the root digest does not verify with the trusted key";
        }
        var digests = new Dictionary<ulong, byte[]>();   // content digests of non-directories, by inode handle
        var fileContent = new Dictionary<ulong, byte[]>(); // version 3: a regular file's merkle content digest (binds its file digest)
        var emptyDigest = Merkle.Leaf(image.Digester, ReadOnlySpan<byte>.Empty);
        var zeros = Array.Empty<byte>();
        var children = new Dictionary<ulong, List<(byte[] Name, ulong Ino)>>();
        var all = ImageWalker.Walk(image).ToList();
        var chunks = new List<RafsChunk>();
        using var store = blobDir is null ? null : new BlobStore(image, blobDir);
        var buf = new byte[image.ChunkSize];
        var verifiedChunks = new HashSet<(uint, uint)>();
        var perBlob = new Dictionary<uint, Dictionary<uint, RafsChunk>>();
        var dirIndex = new Dictionary<string, ulong>();
        foreach (var e in all) if (e.Attr.FileType == 0x4000) dirIndex.TryAdd(Convert.ToBase64String(e.Path), e.Ino);
        foreach (var (path, ino, attr) in all)
        {
            if (path.Length > 0)
            {
                int slash = Array.LastIndexOf(path, (byte)'/');
                var parentPath = slash < 0 ? [] : path[..slash];
                var name = slash < 0 ? path : path[(slash + 1)..];
                if (!dirIndex.TryGetValue(Convert.ToBase64String(parentPath), out var parentIno)) return $"'/{ImageWalker.Show(path)}': parent directory not found (corrupt names)";
                if (!children.TryGetValue(parentIno, out var list)) children[parentIno] = list = new();
                list.Add((name, ino));
            }
            if (digests.ContainsKey(ino)) continue;
            switch (attr.FileType)
            {
                case 0x8000:
                {
                    chunks.Clear();
                    int rc = image.GetChunks(ino, chunks);
                    if (rc != 0) return $"'/{ImageWalker.Show(path)}': chunk list is corrupt (errno {rc})";
                    ulong covered = 0;
                    // Version 3 rows hold the file's whole-content digest. A file of one chunk (or none) is checked
                    // against its chunk digest (or H("")) from the bootstrap alone; one of several chunks, with the
                    // blobs, by hashing its data as the chunks are read (a chunk already verified is read again).
                    var fileDigest = image.HasFileDigests ? image.GetFileDigest(attr.Ino).ToArray() : null;
                    using var fileHash = fileDigest is not null && store is not null && chunks.Count > 1 ? new Codec.Incremental(image.Digester) : null;
                    foreach (var c in chunks)
                    {
                        if (c.FileOffset != covered) return $"'/{ImageWalker.Show(path)}': chunk at offset {c.FileOffset} leaves a gap";
                        covered += c.UncompressedSize;
                        if (store is not null && c.UncompressedSize > buf.Length) return $"'/{ImageWalker.Show(path)}': chunk larger than the chunk size";
                        bool unverified = !c.IsHole && verifiedChunks.Add((c.BlobIndex, c.ChunkIndex));
                        if (store is not null && unverified)
                        {
                            if (!perBlob.TryGetValue(c.BlobIndex, out var m)) perBlob[c.BlobIndex] = m = new();
                            m[c.ChunkIndex] = c;
                        }
                        if (store is not null && (unverified || (fileHash is not null && !c.IsHole)))
                        {
                            var err = store.ReadChunk(c, buf.AsSpan(0, (int)c.UncompressedSize), verify: unverified);
                            if (err is not null) return $"'/{ImageWalker.Show(path)}': {err}";
                        }
                        if (fileHash is not null)
                        {
                            if (c.IsHole && zeros.Length < c.UncompressedSize) zeros = new byte[c.UncompressedSize];
                            fileHash.Update(c.IsHole ? zeros.AsSpan(0, (int)c.UncompressedSize) : buf.AsSpan(0, (int)c.UncompressedSize));
                        }
                    }
                    if (covered != attr.Size) return $"'/{ImageWalker.Show(path)}': chunks cover {covered} bytes, size is {attr.Size}";
                    var chunkDigests = chunks.Where(c => !c.IsHole).Select(c => { var d = c.Digest; return (ReadOnlyMemory<byte>)((ReadOnlySpan<byte>)d).ToArray(); }).ToList();
                    digests[ino] = Merkle.File(image.Digester, chunkDigests);
                    if (fileDigest is not null)
                    {
                        byte[]? actualFile = null;
                        if (fileHash is not null) fileHash.Finish(actualFile = new byte[Codec.DigestSize]);
                        else if (chunks.Count == 0) actualFile = emptyDigest;
                        else if (chunks.Count == 1 && !chunks[0].IsHole && chunks[0].UncompressedSize == attr.Size) actualFile = chunkDigests[0].ToArray();
                        if (actualFile is not null && !actualFile.AsSpan().SequenceEqual(fileDigest))
                            return $"{Where(path, attr)}: file digest {Convert.ToHexStringLower(fileDigest)} in its merkle row does not match its content ({Convert.ToHexStringLower(actualFile)})";
                        fileContent[ino] = Merkle.File(image.Digester, chunkDigests, fileDigest);
                    }
                    break;
                }
                case 0xA000:
                    int lrc = image.ReadLink(ino, out var target);
                    if (lrc != 0) return $"'/{ImageWalker.Show(path)}': symlink target unreadable (errno {lrc})";
                    digests[ino] = Merkle.Leaf(image.Digester, target);
                    break;
                case 0x4000:
                    break;
                default:
                    digests[ino] = Merkle.Leaf(image.Digester, ReadOnlySpan<byte>.Empty);
                    break;
            }
        }
        if (store is not null)
        {
            foreach (var (blob, map) in perBlob)
            {
                var err = store.CheckBlobMeta(blob, map);
                if (err is not null) return err;
            }
        }
        if (blobDir is not null)
        {
            // A blob id is usually the sha256 of the blob's bytes, but not always: nydus-image 2.2 names a blob by a
            // digest of its chunk data, so its file hashes to something else, and nydusd (which never hashes whole blobs:
            // it verifies each chunk against its digest, storage/src/cache/mod.rs) serves it. What decides is the chunk
            // digests checked above and the blob metadata; a differing file hash is worth a warning only.
            foreach (var b in image.Blobs)
            {
                if (!IsSha256Name(b.BlobId)) continue;
                string file = Path.Combine(blobDir, b.BlobId);
                if (!File.Exists(file)) continue; // a blob no file reads was not needed above
                using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
                var h = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(fs));
                if (h != b.BlobId) warnings.Add($"blob {b.BlobId}: the file's sha256 is {h}, not its name (every chunk it holds matched its digest)");
            }
        }
        if (image.Version == RafsVersion.V5 && CheckNativeV5(image, all, children, digests) is { } native) return native;
        if (!image.HasMerkle) return null;
        foreach (var (ino, d) in fileContent) digests[ino] = d;
        return CheckContent(image, all, children, digests) ?? CheckMetadata(image, all);
    }

    private static string Where(byte[] path, in RafsAttr attr) => $"'/{ImageWalker.Show(path)}' (ino {attr.Ino})";

    private static string KindOf(in RafsAttr attr) => attr.FileType switch
    {
        0x4000 => "its children's names and inode digests",
        0x8000 => "its chunk digests",
        0xA000 => "its symlink target",
        _ => "its (empty) content",
    };

    /// <summary>RAFS v5 records carry nydus's digests (directory = H(child digests), no names): check them bottom up.</summary>
    private static string? CheckNativeV5(RafsImage image, List<(byte[] Path, ulong Ino, RafsAttr Attr)> all,
        Dictionary<ulong, List<(byte[] Name, ulong Ino)>> children, Dictionary<ulong, byte[]> content)
    {
        var native = new Dictionary<ulong, byte[]>(content);
        for (int i = all.Count - 1; i >= 0; i--)
        {
            var (_, ino, attr) = all[i];
            if (attr.FileType != 0x4000 || native.ContainsKey(ino)) continue;
            var kids = children.GetValueOrDefault(ino) ?? new();
            kids.Sort((a, b) => a.Name.AsSpan().SequenceCompareTo(b.Name));
            native[ino] = Merkle.Directory(image.Digester, false, kids.Select(k => ((ReadOnlyMemory<byte>)k.Name, (ReadOnlyMemory<byte>)native[k.Ino])).ToList());
        }
        foreach (var (path, ino, attr) in all)
        {
            var stored = image.GetNativeDigest(ino);
            if (!stored.SequenceEqual(native[ino])) return $"{Where(path, attr)}: v5 inode digest {Convert.ToHexStringLower(stored)} does not match the content ({Convert.ToHexStringLower(native[ino])})";
        }
        return null;
    }

    /// <summary>Top down from the trusted root: the root row, then every inode's content digest (a directory's over its
    /// children's names and stored inode digests). After this every stored inode and content digest is authentic.</summary>
    private static string? CheckContent(RafsImage image, List<(byte[] Path, ulong Ino, RafsAttr Attr)> all,
        Dictionary<ulong, List<(byte[] Name, ulong Ino)>> children, Dictionary<ulong, byte[]> content)
    {
        var attrs = new Dictionary<ulong, RafsAttr>();
        foreach (var (_, ino, attr) in all) attrs.TryAdd(ino, attr);
        var rootAttr = all[0].Attr;
        if (!image.GetInodeDigest(rootAttr.Ino).SequenceEqual(image.RootDigest)) return "root digest in the superblock does not match the root inode's digest";
        var done = new HashSet<ulong>();
        foreach (var (path, ino, attr) in all)
        {
            if (!done.Add(ino)) continue;
            var stored = image.GetContentDigest(attr.Ino);
            if (stored.IsEmpty) return $"{Where(path, attr)}: inode number has no merkle row";
            // Only a regular file's row holds a file digest; elsewhere the field is zero, so no row byte goes unbound.
            if (attr.FileType != 0x8000 && image.GetFileDigest(attr.Ino).ContainsAnyExcept((byte)0))
                return $"{Where(path, attr)}: file digest field of its merkle row is not zero (not a regular file)";
            byte[] actual;
            if (attr.FileType == 0x4000)
            {
                var kids = children.GetValueOrDefault(ino) ?? new();
                kids.Sort((a, b) => a.Name.AsSpan().SequenceCompareTo(b.Name));
                var list = new List<(ReadOnlyMemory<byte>, ReadOnlyMemory<byte>)>(kids.Count);
                foreach (var (name, kid) in kids)
                {
                    var d = image.GetInodeDigest(attrs[kid].Ino);
                    if (d.IsEmpty) return $"'/{ImageWalker.Show(path)}/{ImageWalker.Show(name)}' (ino {attrs[kid].Ino}): inode number has no merkle row";
                    list.Add((name, d.ToArray()));
                }
                actual = Merkle.Directory(image.Digester, true, list);
            }
            else
            {
                actual = content[ino];
            }
            if (!stored.SequenceEqual(actual))
                return $"{Where(path, attr)}: {KindOf(attr)} do not match its content digest {Convert.ToHexStringLower(stored)} ({Convert.ToHexStringLower(actual)})";
        }
        return null;
    }

    /// <summary>Every inode's mode, uid, gid, rdev, size and xattrs against the inode digest that binds them (authentic
    /// after <see cref="CheckContent"/>); a mismatch is named by the field, from the row's copy of the bound metadata.</summary>
    private static string? CheckMetadata(RafsImage image, List<(byte[] Path, ulong Ino, RafsAttr Attr)> all)
    {
        var done = new HashSet<ulong>();
        var xattrs = new List<KeyValuePair<byte[], byte[]>>();
        Span<byte> actual = stackalloc byte[Codec.DigestSize];
        foreach (var (path, ino, attr) in all)
        {
            if (!done.Add(ino)) continue;
            xattrs.Clear();
            int rc = image.GetXattrs(ino, xattrs);
            if (rc != 0) return $"{Where(path, attr)}: xattrs unreadable (errno {rc})";
            Merkle.SortXattrs(xattrs);
            var live = new Layout.BoundMeta(attr.Mode, attr.Uid, attr.Gid, attr.Rdev, attr.Size);
            var stored = image.GetInodeDigest(attr.Ino);
            var contentDigest = image.GetContentDigest(attr.Ino);
            Merkle.InodeDigest(image.Digester, live, xattrs, contentDigest, actual);
            if (actual.SequenceEqual(stored)) continue;
            image.TryGetBoundMeta(attr.Ino, out var bound);
            string fields = bound.Differences(live);
            Merkle.InodeDigest(image.Digester, bound, xattrs, contentDigest, actual);
            bool copyBinds = actual.SequenceEqual(stored);
            if (fields.Length > 0 && copyBinds)
                return $"{Where(path, attr)}: metadata does not match its merkle digest: {fields}";
            if (fields.Length > 0)
                return $"{Where(path, attr)}: metadata does not match its merkle digest: {fields}; xattr may differ too";
            return $"{Where(path, attr)}: metadata does not match its merkle digest: xattr (the xattrs are not the bound ones)";
        }
        return null;
    }

    private static bool IsSha256Name(string id) => id.Length == 64 && id.All(char.IsAsciiHexDigitLower);
}

/// <summary>What <see cref="ImageChecker.CheckWithWarnings"/> found: the first error, or null, and the warnings.</summary>
public sealed record ImageCheckResult(string? Error, IReadOnlyList<string> Warnings);
