using System.Buffers.Binary;
using System.Globalization;
using VirtioFs.ImageTool.Bom.Sqlite;

namespace VirtioFs.ImageTool.Bom;

/// <summary>
/// rpm: the sqlite database rpm 4.16+ writes (Fedora 33+, RHEL 9, openSUSE), rpmdb.sqlite in /var/lib/rpm or
/// /usr/lib/sysimage/rpm. rpm's sqlite backend keeps one row per installed package in the table Packages (hnum INTEGER
/// PRIMARY KEY, blob BLOB: rpm lib/backend/sqlite.c), the blob being the package's header (<see cref="RpmHeader"/>);
/// the other tables are indexes rpm rebuilds from those headers and are not read. The Berkeley DB "Packages" of older
/// rpm holds the same blobs (<see cref="BerkeleyHashDb"/>); the "Packages.db" of the ndb backend is refused by name:
/// a BOM without its packages would be wrong.
/// </summary>
public static class Rpm
{
    /// <summary>rpm's sqlite backend's package table (lib/backend/sqlite.c).</summary>
    public const string PackagesTable = "Packages";

    public static void Catalog(ImageFiles tree, BomDocument doc, TextWriter log)
    {
        var read = new HashSet<ulong>();
        var sqliteDirs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in Catalogers.RpmDatabases.Where(p => p.EndsWith("/rpmdb.sqlite", StringComparison.Ordinal)))
        {
            // /var/lib/rpm is a symlink to /usr/lib/sysimage/rpm on Fedora 36+: one database, read once.
            if (!tree.TryStat(p, out var db) || !db.IsFile || db.Attr.Size == 0) continue;
            sqliteDirs.Add(p[..p.LastIndexOf('/')]);
            if (read.Add(db.Nid)) CatalogSqlite(tree, db, doc);
        }
        foreach (var p in Catalogers.RpmDatabases.Where(p => !p.EndsWith("/rpmdb.sqlite", StringComparison.Ordinal)))
        {
            if (!tree.TryStat(p, out var db) || !db.IsFile || db.Attr.Size == 0) continue;
            // rpm 4.16+ opens the backend it is configured for; a Berkeley DB left beside an rpmdb.sqlite is what
            // `rpmdb --rebuilddb` migrated from, not a second set of packages.
            if (sqliteDirs.Contains(p[..p.LastIndexOf('/')]))
            {
                log.WriteLine($"vfs-image: bom: {p} is beside an rpmdb.sqlite, which is the database read");
                continue;
            }
            if (p.EndsWith(".db", StringComparison.Ordinal))
                throw new InvalidDataException($"the image has an rpm ndb database ({p}); vfs-image reads rpm's sqlite (rpmdb.sqlite) and Berkeley DB (Packages) databases only, and a BOM without its packages would be wrong");
            if (read.Add(db.Nid)) CatalogBerkeley(tree, db, doc);
        }
    }

    /// <summary>rpm before 4.16 (CentOS 7, RHEL 8, Amazon Linux 2): Packages is a Berkeley DB hash database whose
    /// values are the header blobs (rpm lib/backend/db3.c); key 0 holds rpm's instance counter, not a package.</summary>
    private static void CatalogBerkeley(ImageFiles tree, in ImageEntry db, BomDocument doc)
    {
        var reader = new WindowedReader(tree, db);
        var file = new BerkeleyHashDb(db.Path, (long)db.Attr.Size, reader.Read);
        foreach (var (key, value) in file.ReadAll())
        {
            if (key.Length == 4 && BinaryPrimitives.ReadUInt32LittleEndian(key) == 0) continue;
            try
            {
                doc.Packages.Add(ToPackage(tree, new RpmHeader(value), db.Path, doc));
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"{db.Path}: record {Convert.ToHexString(key)}: {e.Message}", e);
            }
        }
    }

    private static void CatalogSqlite(ImageFiles tree, in ImageEntry db, BomDocument doc)
    {
        // SQLite's write-ahead log holds committed pages not yet copied into the database (fileformat2 §4). rpm
        // checkpoints on close, but an image taken while rpm ran, or a WAL kept at its size after a checkpoint, has
        // one: its committed frames are read as SQLite would, the rest ignored.
        Func<int, SqliteWal?>? openWal = null;
        if (tree.TryStat(db.Path + "-wal", out var wal) && wal.IsFile && wal.Attr.Size > 0)
        {
            if (wal.Attr.Size > (ulong)ImageFiles.MaxWholeRead) throw new InvalidDataException($"{wal.Path} is {wal.Attr.Size} bytes, more than vfs-image reads of an rpm database's write-ahead log ({ImageFiles.MaxWholeRead})");
            var walReader = new WindowedReader(tree, wal);
            openWal = ps => new SqliteWal(wal.Path, (long)wal.Attr.Size, walReader.Read, ps);
        }
        var reader = new WindowedReader(tree, db);
        var file = new SqliteFile(db.Path, (long)db.Attr.Size, reader.Read, openWal: openWal);
        var root = file.FindTableRoot(PackagesTable);
        foreach (var (rowid, payload) in file.ReadTable(root))
        {
            var row = SqliteRecord.Parse(payload, file.TextEncoding, db.Path);
            if (row.Length < 2 || row[1] is not byte[] blob) throw new InvalidDataException($"{db.Path}: Packages row {rowid} has no header blob in its second column");
            try
            {
                doc.Packages.Add(ToPackage(tree, new RpmHeader(blob), db.Path, doc));
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"{db.Path}: Packages row {rowid}: {e.Message}", e);
            }
        }
    }

    /// <summary>
    /// The package an rpm header describes. purl (purl-spec types/rpm-definition.json): pkg:rpm/VENDOR/NAME@VERSION-RELEASE
    /// with the epoch as the "epoch" qualifier, "arch", and the distro ("fedora-40") as other catalogers give it; the
    /// namespace is the os-release ID (lowercased, as the spec asks). The version shown is rpm's [EPOCH:]VERSION-RELEASE.
    /// </summary>
    public static BomPackage ToPackage(ImageFiles? tree, RpmHeader h, string foundIn, BomDocument doc)
    {
        var name = h.GetString(RpmHeader.TagName) ?? throw new InvalidDataException("no NAME tag");
        var version = h.GetString(RpmHeader.TagVersion) ?? throw new InvalidDataException($"{name}: no VERSION tag");
        var release = h.GetString(RpmHeader.TagRelease) ?? throw new InvalidDataException($"{name}: no RELEASE tag");
        var epoch = h.GetInt32(RpmHeader.TagEpoch)?.ToString(CultureInfo.InvariantCulture);
        var arch = h.GetString(RpmHeader.TagArch);
        var ns = doc.OsId?.ToLowerInvariant();
        var pkg = new BomPackage
        {
            Name = name, Version = (epoch is null ? "" : epoch + ":") + version + "-" + release, Type = "rpm", FoundIn = foundIn,
            Architecture = arch, License = h.GetString(RpmHeader.TagLicense), Supplier = h.GetString(RpmHeader.TagVendor),
            Purl = Purl.Make("rpm", ns, name, version + "-" + release, ("arch", arch), ("epoch", epoch),
                ("distro", ns is null || doc.OsVersion is null ? null : $"{ns}-{doc.OsVersion}"), ("upstream", h.GetString(RpmHeader.TagSourceRpm))),
        };
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in FileNames(h, name))
        {
            // As for dpkg: the regular files the package lists, by their real paths in the image.
            if (tree is not null && tree.TryGet(f, out var e) && e.IsFile && seen.Add(e.Path)) pkg.Files.Add(e.Path);
        }
        return pkg;
    }

    /// <summary>The package's file paths: DIRNAMES[DIRINDEXES[i]] + BASENAMES[i] (rpm 4.0+ "compressed file list",
    /// lib/tagexts.c fnTag), or OLDFILENAMES in headers older than that.</summary>
    public static IEnumerable<string> FileNames(RpmHeader h, string name)
    {
        if (!h.Has(RpmHeader.TagBaseNames)) return h.GetStringArray(RpmHeader.TagOldFileNames);
        var bases = h.GetStringArray(RpmHeader.TagBaseNames);
        var dirs = h.GetStringArray(RpmHeader.TagDirNames);
        var idx = h.GetInt32Array(RpmHeader.TagDirIndexes);
        if (idx.Length != bases.Length) throw new InvalidDataException($"{name}: {bases.Length} BASENAMES but {idx.Length} DIRINDEXES");
        var files = new string[bases.Length];
        for (int i = 0; i < bases.Length; i++)
        {
            if ((uint)idx[i] >= (uint)dirs.Length) throw new InvalidDataException($"{name}: DIRINDEXES[{i}] = {idx[i]} is outside the {dirs.Length} DIRNAMES");
            files[i] = dirs[idx[i]] + bases[i];
        }
        return files;
    }

    /// <summary>
    /// Page reads of the database through the file's own chunks, each read once and kept (up to
    /// <see cref="ImageFiles.MaxWholeRead"/> bytes): a b-tree walk jumps around the file, and reading each page by
    /// itself would fetch a chunk again from a registry once it left ImageFiles' few-chunk cache, while reading the
    /// whole file would fetch index pages the walk never needs.
    /// </summary>
    private sealed class WindowedReader(ImageFiles tree, ImageEntry file)
    {
        /// <summary>The window when the chunk list does not say (a hole past the chunks): one SQLite default page.</summary>
        private const int FallbackWindow = 4096;
        private readonly Dictionary<long, byte[]> _windows = new();
        private readonly Queue<long> _order = new();
        private readonly List<VirtioFs.Rafs.Reader.RafsChunk> _chunks = new();
        private long _kept;

        public byte[] Read(long offset, int length)
        {
            long size = (long)file.Attr.Size;
            if (offset < 0 || offset >= size || length <= 0) return [];
            var result = new byte[(int)Math.Min(length, size - offset)];
            int done = 0;
            while (done < result.Length)
            {
                long at = offset + done;
                var (start, win) = WindowAt(at);
                int from = (int)(at - start);
                int n = Math.Min(result.Length - done, win.Length - from);
                if (n <= 0) break;
                win.AsSpan(from, n).CopyTo(result.AsSpan(done));
                done += n;
            }
            return done == result.Length ? result : result[..done];
        }

        private (long Start, byte[] Data) WindowAt(long at)
        {
            _chunks.Clear();
            long start = at - at % FallbackWindow;
            int len = FallbackWindow;
            // The chunk covering `at` (bootstrap metadata only); its whole range is one fetch anyway.
            if (tree.Image.GetChunks(file.Nid, (ulong)at, 1, _chunks) == 0 && _chunks.Count > 0
                && _chunks[0].FileOffset <= (ulong)at && (ulong)at < _chunks[0].FileOffset + _chunks[0].UncompressedSize)
            {
                start = (long)_chunks[0].FileOffset;
                len = (int)Math.Min(_chunks[0].UncompressedSize, 16u << 20);
            }
            if (_windows.TryGetValue(start, out var hit) && at - start < hit.Length) return (start, hit);
            var data = tree.ReadRange(file, (ulong)start, len);
            while (_order.Count > 0 && _kept + data.Length > ImageFiles.MaxWholeRead)
            {
                if (_windows.Remove(_order.Dequeue(), out var old)) _kept -= old.Length;
            }
            if (_windows.Remove(start, out var shorter)) _kept -= shorter.Length;
            _windows[start] = data;
            _order.Enqueue(start);
            _kept += data.Length;
            return (start, data);
        }
    }
}
