using System.Buffers.Binary;
using System.Diagnostics;
using System.Text.Json;
using VirtioFs.ImageTool.Bom;
using VirtioFs.ImageTool.Bom.Sqlite;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// vfs-image bom on rpm databases: a real rpmdb.sqlite written by rpm 4.18 (Debian's rpm package; tests/setup.sh
/// installs it) into a root the test installs rpms it builds with rpmbuild, compared with `rpm -qa` and `rpm -ql` on
/// the same root; and the SQLite reader and rpm header parser fed hostile bytes made by <see cref="SqliteBuilder"/>.
/// </summary>
public sealed class RpmTests
{
    private const string RpmDbPath = "/var/lib/rpm";

    private static readonly Lazy<string> RealRoot = new(BuildRpmRoot);

    private static string Spec(string name, string? epoch, bool noarch, string license, int extraFiles, params string[] subpackages)
    {
        var sb = new System.Text.StringBuilder();
        sb.Append($"Name: {name}\nVersion: 1.2.3\nRelease: 4.vfs\nSummary: test\nLicense: {license}\n");
        if (epoch is not null) sb.Append($"Epoch: {epoch}\n");
        if (noarch) sb.Append("BuildArch: noarch\n");
        // No debuginfo, no brp scripts: the packages hold text files only.
        sb.Append("%global debug_package %{nil}\n%define __os_install_post %{nil}\n%description\ntest\n");
        foreach (var s in subpackages) sb.Append($"%package -n {s}\nSummary: sub\n%description -n {s}\nsub\n");
        sb.Append("%install\n");
        sb.Append($"mkdir -p %{{buildroot}}/usr/share/{name}/sub %{{buildroot}}/usr/share/doc/{name}\n");
        sb.Append($"echo hello > %{{buildroot}}/usr/share/{name}/a.txt\necho world > %{{buildroot}}/usr/share/{name}/sub/b.txt\n");
        sb.Append($"ln -s a.txt %{{buildroot}}/usr/share/{name}/link\necho doc > %{{buildroot}}/usr/share/doc/{name}/README\n");
        // Many long file names make the header larger than a page: its row spills into an overflow chain.
        for (int i = 0; i < extraFiles; i++) sb.Append($"echo {i} > %{{buildroot}}/usr/share/{name}/sub/a-rather-long-file-name-to-grow-the-header-{i:D4}.txt\n");
        foreach (var s in subpackages) sb.Append($"mkdir -p %{{buildroot}}/usr/share/{s}\necho {s} > %{{buildroot}}/usr/share/{s}/f.txt\n");
        sb.Append($"%files\n/usr/share/{name}\n%doc /usr/share/doc/{name}/README\n");
        foreach (var s in subpackages) sb.Append($"%files -n {s}\n/usr/share/{s}/f.txt\n");
        return sb.ToString();
    }

    /// <summary>Builds three source packages (one with an epoch, one arch-specific with a header spanning overflow
    /// pages, one with 30 subpackages so the Packages b-tree has interior pages) and installs them into a fresh root.</summary>
    private static string BuildRpmRoot()
    {
        var work = Cli.Temp("rpm-build");
        var top = Path.Combine(work, "top");
        var root = Path.Combine(work, "root");
        var specs = new[]
        {
            Spec("vfs-alpha", "2", true, "MIT", 0),
            Spec("vfs-beta", null, false, "GPL-2.0-or-later", 300),
            Spec("vfs-gamma", null, true, "Apache-2.0", 0, [.. Enumerable.Range(1, 30).Select(i => $"vfs-gamma-sub{i:D2}")]),
        };
        foreach (var (spec, i) in specs.Select((s, i) => (s, i)))
        {
            var path = Path.Combine(work, $"p{i}.spec");
            File.WriteAllText(path, spec);
            var (code, _, err) = BomTests.Sh("rpmbuild", "-bb", "--define", $"_topdir {top}", path);
            Assert.True(code == 0, $"rpmbuild {path}: {err}");
        }
        var rpms = Directory.GetFiles(Path.Combine(top, "RPMS"), "*.rpm", SearchOption.AllDirectories);
        Assert.Equal(33, rpms.Length);
        Directory.CreateDirectory(Path.Combine(root, "etc"));
        File.WriteAllText(Path.Combine(root, "etc/os-release"), "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n");
        var (c1, _, e1) = BomTests.Sh("rpm", "--root", root, "--dbpath", RpmDbPath, "--initdb");
        Assert.True(c1 == 0, e1);
        var (c2, _, e2) = BomTests.Sh("rpm", ["-i", "--nodeps", "--ignorearch", "--root", root, "--dbpath", RpmDbPath, .. rpms]);
        Assert.True(c2 == 0, e2);
        return root;
    }

    private static string[] RpmQuery(string root, params string[] args)
    {
        var (code, stdout, err) = BomTests.Sh("rpm", ["--root", root, "--dbpath", RpmDbPath, .. args]);
        Assert.True(code == 0, err);
        return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    private static IEnumerable<JsonElement> Packages(JsonDocument spdx) =>
        spdx.RootElement.GetProperty("packages").EnumerateArray().Where(p => p.GetProperty("SPDXID").GetString() != "SPDXRef-Image");

    private static string PurlOf(JsonElement p) => p.GetProperty("externalRefs")[0].GetProperty("referenceLocator").GetString()!;

    [SkippableFact]
    public void Rpm_sqlite_packages_and_files_equal_rpm_qa_and_rpm_ql()
    {
        Skip.IfNot(BomTests.OnPath("rpm") && BomTests.OnPath("rpmbuild"), "rpm/rpmbuild are not installed (tests/setup.sh installs Debian's rpm)");
        var root = RealRoot.Value;
        // rpm 4.18 on Debian writes the sqlite backend; this test is about reading it, so say so if that changed.
        Assert.True(File.Exists(Path.Combine(root, "var/lib/rpm/rpmdb.sqlite")), "rpm did not write var/lib/rpm/rpmdb.sqlite");
        Assert.False(File.Exists(Path.Combine(root, "var/lib/rpm/Packages")));
        var (boot, blobs) = BomTests.Build(root);
        using var spdx = BomTests.Bom(boot, blobs, "spdx");

        var expected = RpmQuery(root, "-qa", "--qf", "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH}\n").Order(StringComparer.Ordinal).ToList();
        Assert.Equal(33, expected.Count);
        var got = Packages(spdx).Select(p => (Name: p.GetProperty("name").GetString()!, Version: p.GetProperty("versionInfo").GetString()!, Purl: PurlOf(p), Json: p)).ToList();
        Assert.Equal(expected, got.Select(p => $"{p.Name} {p.Version} {System.Web.HttpUtility.ParseQueryString(new Uri(p.Purl.Replace("pkg:", "pkg://", StringComparison.Ordinal)).Query)["arch"]}").Order(StringComparer.Ordinal));

        // purl-spec rpm type: namespace = the vendor/distro (os-release ID), version = VERSION-RELEASE, epoch a qualifier.
        var alpha = got.Single(p => p.Name == "vfs-alpha");
        Assert.Equal("pkg:rpm/fedora/vfs-alpha@1.2.3-4.vfs?arch=noarch&distro=fedora-40&epoch=2&upstream=vfs-alpha-1.2.3-4.vfs.src.rpm", alpha.Purl);
        Assert.Equal("2:1.2.3-4.vfs", alpha.Version);
        Assert.Equal("MIT", alpha.Json.GetProperty("licenseDeclared").GetString());
        Assert.Contains("found in /var/lib/rpm/rpmdb.sqlite", alpha.Json.GetProperty("sourceInfo").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain("epoch=", got.Single(p => p.Name == "vfs-beta").Purl, StringComparison.Ordinal);

        // CONTAINS: every regular file `rpm -ql` lists for a package (its symlink and directories are not files).
        var ids = Packages(spdx).ToDictionary(p => p.GetProperty("SPDXID").GetString()!, p => p.GetProperty("name").GetString()!);
        var files = spdx.RootElement.GetProperty("files").EnumerateArray().ToDictionary(f => f.GetProperty("SPDXID").GetString()!, f => f.GetProperty("fileName").GetString()!);
        var contains = spdx.RootElement.GetProperty("relationships").EnumerateArray()
            .Where(r => r.GetProperty("relationshipType").GetString() == "CONTAINS" && ids.ContainsKey(r.GetProperty("spdxElementId").GetString()!))
            .GroupBy(r => ids[r.GetProperty("spdxElementId").GetString()!])
            .ToDictionary(g => g.Key, g => g.Select(r => files[r.GetProperty("relatedSpdxElement").GetString()!]).Order(StringComparer.Ordinal).ToList());
        foreach (var name in got.Select(p => p.Name))
        {
            var listed = RpmQuery(root, "-ql", name)
                .Where(f => File.Exists(Path.Join(root, f)) && new FileInfo(Path.Join(root, f)).LinkTarget is null)
                .Select(f => "." + f).Order(StringComparer.Ordinal).ToList();
            Assert.NotEmpty(listed);
            Assert.Equal(listed, contains.GetValueOrDefault(name, []));
        }
        Assert.Equal(303, contains["vfs-beta"].Count); // a.txt, sub/b.txt, README and 300 more: the overflowed header's list
    }

    [SkippableFact]
    public void Only_the_chunks_of_the_pages_the_Packages_walk_reaches_are_read()
    {
        Skip.IfNot(BomTests.OnPath("rpm") && BomTests.OnPath("rpmbuild"), "rpm/rpmbuild are not installed (tests/setup.sh installs Debian's rpm)");
        var root = RealRoot.Value;
        long dbSize = new FileInfo(Path.Combine(root, "var/lib/rpm/rpmdb.sqlite")).Length;
        // One 4 KiB chunk per page, stored as is: the blob bytes read count pages. The Packages table is about a third
        // of this database; its indexes (Basenames, Name, ...) are the rest and are not read.
        var o = Cli.Temp("rpm-chunks");
        var (c1, t1) = Cli.Run("create", root, "--blob-dir", o, "--bootstrap", Path.Combine(o, "i.boot"), "--chunk-size", "0x1000", "--compressor", "none");
        Assert.True(c1 == 0, t1);
        using var img = VirtioFs.Rafs.Reader.RafsImage.Open(Path.Combine(o, "i.boot"));
        using var tree = new ImageFiles(img, new LocalChunkSource(img, o));
        var doc = new BomDocument { ImageName = "t", ImageDigest = "t", Created = DateTimeOffset.UnixEpoch, ToolVersion = "t" };
        Rpm.Catalog(tree, doc, TextWriter.Null);
        Assert.Equal(33, doc.Packages.Count);
        long read = tree.Chunks.BytesRead;
        Assert.InRange(read, 4096, dbSize / 2);
    }

    [SkippableFact]
    public void The_real_rpmdb_has_interior_and_overflow_pages_and_each_is_checked()
    {
        Skip.IfNot(BomTests.OnPath("rpm") && BomTests.OnPath("rpmbuild"), "rpm/rpmbuild are not installed (tests/setup.sh installs Debian's rpm)");
        var bytes = File.ReadAllBytes(Path.Combine(RealRoot.Value, "var/lib/rpm/rpmdb.sqlite"));
        var db = Open(bytes);
        uint root = db.FindTableRoot("Packages");
        // The shapes this test relies on: the Packages root is an interior page (0x05), and some row overflows.
        Assert.Equal(0x05, bytes[(root - 1) * db.PageSize]);
        var rows = db.ReadTable(root).ToList();
        Assert.Equal(33, rows.Count);
        Assert.Contains(rows, r => r.Payload.Length > db.UsableSize);
        // Every prefix that cuts a page the walk needs is refused with a clear error, never a crash or a wrong list.
        for (int len = db.PageSize; len < bytes.Length; len += db.PageSize * 3)
        {
            var cut = bytes[..len];
            var e = Record.Exception(() => Open(cut).ReadTable(Open(cut).FindTableRoot("Packages")).Count());
            if (e is null) continue; // the cut kept every page the Packages walk needs (index pages come later)
            Assert.IsType<InvalidDataException>(e);
            Assert.Contains("test.sqlite", e.Message, StringComparison.Ordinal);
        }
        // Bytes flipped anywhere in rpm's own database: rows or InvalidDataException, nothing else, in bounded time.
        var rng = new Random(4018);
        var sw = Stopwatch.StartNew();
        for (int round = 0; round < 400; round++)
        {
            var bad = (byte[])bytes.Clone();
            for (int k = rng.Next(1, 16); k > 0; k--) bad[rng.Next(bad.Length)] = (byte)rng.Next(256);
            try
            {
                var d = Open(bad);
                foreach (var (_, payload) in d.ReadTable(d.FindTableRoot("Packages")))
                {
                    var rec = SqliteRecord.Parse(payload, d.TextEncoding, "t");
                    if (rec.Length > 1 && rec[1] is byte[] blob) _ = Rpm.FileNames(new RpmHeader(blob), "x").Count();
                }
            }
            catch (InvalidDataException) { }
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"400 mutated databases took {sw.Elapsed}");
    }

    [SkippableFact]
    public void Berkeley_db_Packages_written_by_libdb_gives_the_same_packages_as_rpm_qa()
    {
        Skip.IfNot(BomTests.OnPath("rpm") && BomTests.OnPath("rpmbuild"), "rpm/rpmbuild are not installed (tests/setup.sh installs Debian's rpm)");
        Skip.IfNot(BomTests.OnPath("db5.3_load"), "db5.3_load is not installed (tests/setup.sh installs db5.3-util)");
        var root = RealRoot.Value;
        // Debian's rpm 4.18 cannot write a Berkeley DB rpmdb, so the Packages file is made the way rpm < 4.16 made it:
        // a libdb hash database (db5.3_load, the library rpm used) mapping each 4-byte instance number (native, little
        // endian here) to the package's header blob, plus instance 0 holding the next-instance counter.
        var sqlite = File.ReadAllBytes(Path.Combine(root, "var/lib/rpm/rpmdb.sqlite"));
        var db = Open(sqlite);
        var input = new System.Text.StringBuilder("VERSION=3\nformat=bytevalue\ntype=hash\nHEADER=END\n 00000000\n 22000000\n");
        foreach (var (rowid, payload) in db.ReadTable(db.FindTableRoot("Packages")))
        {
            var blob = Assert.IsType<byte[]>(SqliteRecord.Parse(payload, db.TextEncoding, "t")[1]);
            var key = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(key, (uint)rowid);
            input.Append(' ').Append(Convert.ToHexString(key).ToLowerInvariant()).Append("\n ").Append(Convert.ToHexString(blob).ToLowerInvariant()).Append('\n');
        }
        input.Append("DATA=END\n");
        var dir = Cli.Temp("bom-rpmbdb-real");
        Directory.CreateDirectory(Path.Combine(dir, "var/lib/rpm"));
        Directory.CreateDirectory(Path.Combine(dir, "etc"));
        File.Copy(Path.Combine(root, "etc/os-release"), Path.Combine(dir, "etc/os-release"));
        var dump = Path.Combine(dir, "..", Path.GetFileName(dir) + ".dump");
        File.WriteAllText(dump, input.ToString());
        var packagesFile = Path.Combine(dir, "var/lib/rpm/Packages");
        var (code, _, err) = BomTests.Sh("db5.3_load", "-f", dump, packagesFile);
        Assert.True(code == 0, err);
        File.Delete(dump);
        // The files themselves, so CONTAINS can be checked too.
        BomTests.Sh("cp", "-a", Path.Combine(root, "usr"), dir);
        var (boot, blobs) = BomTests.Build(dir);
        using var spdx = BomTests.Bom(boot, blobs, "spdx");
        var expected = RpmQuery(root, "-qa", "--qf", "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\n").Order(StringComparer.Ordinal);
        Assert.Equal(expected, Packages(spdx).Select(p => $"{p.GetProperty("name").GetString()} {p.GetProperty("versionInfo").GetString()}").Order(StringComparer.Ordinal));
        Assert.Contains(Packages(spdx), p => PurlOf(p) == "pkg:rpm/fedora/vfs-alpha@1.2.3-4.vfs?arch=noarch&distro=fedora-40&epoch=2&upstream=vfs-alpha-1.2.3-4.vfs.src.rpm");
        var beta = Packages(spdx).Single(p => p.GetProperty("name").GetString() == "vfs-beta").GetProperty("SPDXID").GetString();
        Assert.Equal(303, spdx.RootElement.GetProperty("relationships").EnumerateArray().Count(r => r.GetProperty("spdxElementId").GetString() == beta));

        // Bytes flipped anywhere in the libdb file: packages or InvalidDataException, nothing else.
        var bytes = File.ReadAllBytes(packagesFile);
        var rng = new Random(53);
        for (int round = 0; round < 400; round++)
        {
            var bad = (byte[])bytes.Clone();
            for (int k = rng.Next(1, 16); k > 0; k--) bad[rng.Next(bad.Length)] = (byte)rng.Next(256);
            try
            {
                foreach (var (_, value) in new BerkeleyHashDb("t", bad.Length, (o, l) => o >= bad.Length ? [] : bad.AsSpan((int)o, (int)Math.Min(l, bad.Length - o)).ToArray()).ReadAll())
                {
                    if (value.Length > 8) _ = Rpm.FileNames(new RpmHeader(value), "x").Count();
                }
            }
            catch (InvalidDataException) { }
        }
    }

    [SkippableFact]
    public void Fixture_builder_writes_what_sqlite3_reads()
    {
        Skip.IfNot(BomTests.OnPath("sqlite3"), "sqlite3 is not installed (only this fixture check needs it)");
        var bytes = TwoLevelDb(out var blobs);
        var path = Path.Combine(Cli.Temp("rpm-sqlite3"), "x.sqlite");
        File.WriteAllBytes(path, bytes);
        var (code, stdout, err) = BomTests.Sh("sqlite3", path, "PRAGMA integrity_check; SELECT hnum || ' ' || length(blob) FROM Packages;");
        Assert.True(code == 0, err);
        Assert.Equal(["ok", .. blobs.Select((b, i) => $"{i + 1} {b.Length}")], stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    private static SqliteFile Open(byte[] bytes) =>
        new("test.sqlite", bytes.Length, (o, l) => o >= bytes.Length ? [] : bytes.AsSpan((int)o, (int)Math.Min(l, bytes.Length - o)).ToArray());

    /// <summary>A Packages table of two leaves under an interior root, one row spilling across two overflow pages.</summary>
    private static byte[] TwoLevelDb(out List<byte[]> blobs)
    {
        var b = new SqliteBuilder(1024);
        blobs = [];
        for (int i = 0; i < 4; i++)
        {
            blobs.Add(RpmHeaderBuilder.Build((RpmHeader.TagName, $"pkg{i}"), (RpmHeader.TagVersion, "1"), (RpmHeader.TagRelease, "1"),
                (RpmHeader.TagBaseNames, Enumerable.Range(0, i == 2 ? 300 : 1).Select(j => $"file{j}").ToArray()),
                (RpmHeader.TagDirNames, new[] { "/usr/share/" }), (RpmHeader.TagDirIndexes, new int[i == 2 ? 300 : 1])));
        }
        var leafA = b.Add(b.Page(false, [b.LeafCell(1, SqliteBuilder.Record(null, blobs[0])), b.LeafCell(2, SqliteBuilder.Record(null, blobs[1]))]));
        var big = b.LeafCell(3, SqliteBuilder.Record(null, blobs[2]));
        var leafB = b.Add(b.Page(false, [big, b.LeafCell(4, SqliteBuilder.Record(null, blobs[3]))]));
        var root = b.Add(b.Page(false, [SqliteBuilder.InteriorCell(leafA, 2)], rightMost: leafB));
        return b.Build(("Packages", root));
    }

    [Fact]
    public void Reader_walks_interior_leaf_and_overflow_pages_in_rowid_order()
    {
        var bytes = TwoLevelDb(out var blobs);
        var db = Open(bytes);
        var rows = db.ReadTable(db.FindTableRoot("Packages")).ToList();
        Assert.Equal([1L, 2, 3, 4], rows.Select(r => r.RowId));
        for (int i = 0; i < 4; i++)
        {
            var rec = SqliteRecord.Parse(rows[i].Payload, db.TextEncoding, "t");
            Assert.Null(rec[0]); // hnum INTEGER PRIMARY KEY is the rowid; the record holds NULL for it
            Assert.Equal(blobs[i], Assert.IsType<byte[]>(rec[1]));
        }
        Assert.True(rows[2].Payload.Length > 2 * db.UsableSize, "row 3 should need two overflow pages");
        Assert.Equal(300, Rpm.FileNames(new RpmHeader(blobs[2]), "pkg2").Count());
    }

    [Fact]
    public void A_cycle_in_the_btree_is_an_error_not_a_hang()
    {
        var b = new SqliteBuilder(1024);
        b.Pad(10); // enough pages that the child-pointer bound does not catch the cycle first
        uint self = b.NextPage;
        b.Add(b.Page(false, [SqliteBuilder.InteriorCell(self, 1)], rightMost: self)); // the root is its own child
        var db = Open(b.Build(("Packages", self)));
        var e = Assert.Throws<InvalidDataException>(() => db.ReadTable(db.FindTableRoot("Packages")).Count());
        Assert.Contains("cycle", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void More_child_pointers_than_pages_is_refused()
    {
        var b = new SqliteBuilder(1024);
        var leaf = b.Add(b.Page(false, []));
        var root = b.Add(b.Page(false, [.. Enumerable.Range(0, 50).Select(i => SqliteBuilder.InteriorCell(leaf, i))], rightMost: leaf));
        var db = Open(b.Build(("Packages", root)));
        var e = Assert.Throws<InvalidDataException>(() => db.ReadTable(root).Count());
        Assert.Contains("more child pointers than the file has pages", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_cycle_in_an_overflow_chain_is_an_error_not_a_hang()
    {
        var b = new SqliteBuilder(1024);
        var cell = b.LeafCell(1, SqliteBuilder.Record(null, new byte[5000])); // four overflow pages: 2..5
        var leaf = b.Add(b.Page(false, [cell]));
        var bytes = b.Build(("Packages", leaf));
        // Point overflow page 3 back at page 2.
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(2 * 1024), 2);
        var db = Open(bytes);
        var e = Assert.Throws<InvalidDataException>(() => db.ReadTable(db.FindTableRoot("Packages")).Count());
        Assert.Contains("cycle", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Page_numbers_outside_the_file_and_oversized_payloads_are_refused_before_allocating()
    {
        var b = new SqliteBuilder(1024);
        var root = b.Add(b.Page(false, [SqliteBuilder.InteriorCell(999, 1)], rightMost: 2));
        b.Pad(10);
        var db = Open(b.Build(("Packages", root)));
        Assert.Contains("outside", Assert.Throws<InvalidDataException>(() => db.ReadTable(root).Count()).Message, StringComparison.Ordinal);

        // A leaf cell claiming a 2^40-byte payload, and one claiming 30 MB in a 3-page file.
        foreach (ulong claim in new ulong[] { 1UL << 40, 30_000_000 })
        {
            var c = new SqliteBuilder(1024);
            var leaf = c.Add(c.Page(false, [[.. SqliteBuilder.Varint(claim), 1, 0, 0, 0, 9]]));
            var d = Open(c.Build(("Packages", leaf)));
            var e = Assert.Throws<InvalidDataException>(() => d.ReadTable(leaf).Count());
            Assert.Matches("exceeds|overflow pages", e.Message);
        }
    }

    [Fact]
    public void Random_bytes_and_mutated_databases_give_InvalidDataException_or_rows()
    {
        var rng = new Random(13);
        var good = TwoLevelDb(out _);
        var sw = Stopwatch.StartNew();
        for (int round = 0; round < 3000; round++)
        {
            byte[] bytes;
            if (round % 3 == 0)
            {
                bytes = new byte[rng.Next(0, 8192)];
                rng.NextBytes(bytes);
                if (round % 2 == 0 && bytes.Length >= 16) "SQLite format 3\0"u8.CopyTo(bytes);
            }
            else
            {
                bytes = (byte[])good.Clone();
                for (int k = rng.Next(1, 8); k > 0; k--) bytes[rng.Next(bytes.Length)] = (byte)rng.Next(256);
                if (round % 5 == 0) bytes = bytes[..rng.Next(bytes.Length)];
            }
            try
            {
                var db = Open(bytes);
                foreach (var (_, payload) in db.ReadTable(db.FindTableRoot("Packages")))
                {
                    var rec = SqliteRecord.Parse(payload, db.TextEncoding, "t");
                    if (rec.Length > 1 && rec[1] is byte[] blob)
                    {
                        var h = new RpmHeader(blob);
                        _ = h.GetString(RpmHeader.TagName);
                        _ = Rpm.FileNames(h, "x").Count();
                    }
                }
            }
            catch (InvalidDataException) { }
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"3000 hostile inputs took {sw.Elapsed}");
    }

    [Fact]
    public void Header_offsets_and_counts_outside_the_data_are_refused()
    {
        var ok = RpmHeaderBuilder.Build((RpmHeader.TagName, "n"), (RpmHeader.TagVersion, "1"));
        Assert.Equal("n", new RpmHeader(ok).GetString(RpmHeader.TagName));

        void Refused(string why, byte[] blob, Action<RpmHeader>? use = null) =>
            Assert.Throws<InvalidDataException>(() => { var h = new RpmHeader(blob); use?.Invoke(h); });
        byte[] data = "abc\0def\0"u8.ToArray();
        Refused("offset past the data", RpmHeaderBuilder.Raw([(1000, 6, 9, 1)], data));
        Refused("negative offset", RpmHeaderBuilder.Raw([(1000, 6, -4, 1)], data));
        Refused("unknown type", RpmHeaderBuilder.Raw([(1000, 42, 0, 1)], data));
        Refused("string without NUL", RpmHeaderBuilder.Raw([(1000, 6, 0, 1)], "abc"u8.ToArray()), h => h.GetString(1000));
        Refused("more strings than bytes", RpmHeaderBuilder.Raw([(1117, 8, 0, 1_000_000)], data), h => h.GetStringArray(1117));
        Refused("int32 array past the data", RpmHeaderBuilder.Raw([(1116, 4, 4, 2)], data), h => h.GetInt32Array(1116));
        Refused("a huge count", RpmHeaderBuilder.Raw([(1116, 4, 0, int.MaxValue)], data));
        Refused("no index", [0, 0, 0, 0, 0, 0, 0, 0]);
        Refused("index count over the cap", [0, 1, 0, 0, 0, 0, 0, 0]);
        Refused("truncated", ok[..^1]);
        // A dir index outside DIRNAMES.
        var badIdx = RpmHeaderBuilder.Build((RpmHeader.TagBaseNames, new[] { "a" }), (RpmHeader.TagDirNames, new[] { "/" }), (RpmHeader.TagDirIndexes, new[] { 5 }));
        Refused("dir index outside dirnames", badIdx, h => Rpm.FileNames(h, "x").Count());
    }

    private static (string Dir, string Db) ImageWithDb(byte[] db)
    {
        var dir = Cli.Temp("bom-rpmdb");
        Directory.CreateDirectory(Path.Combine(dir, "var/lib/rpm"));
        File.WriteAllBytes(Path.Combine(dir, "var/lib/rpm/rpmdb.sqlite"), db);
        return (dir, Path.Combine(dir, "var/lib/rpm/rpmdb.sqlite"));
    }

    [Fact]
    public void A_built_rpmdb_sqlite_is_read_end_to_end_without_rpm()
    {
        var (dir, _) = ImageWithDb(TwoLevelDb(out _));
        Directory.CreateDirectory(Path.Combine(dir, "usr/share"));
        File.WriteAllText(Path.Combine(dir, "usr/share/file0"), "x");
        var (boot, blobs) = BomTests.Build(dir);
        using var spdx = BomTests.Bom(boot, blobs, "spdx");
        Assert.Equal(["pkg:rpm/pkg0@1-1", "pkg:rpm/pkg1@1-1", "pkg:rpm/pkg2@1-1", "pkg:rpm/pkg3@1-1"], Packages(spdx).Select(PurlOf).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_corrupt_rpmdb_a_wal_with_content_and_a_berkeley_db_are_refused_by_name()
    {
        var good = TwoLevelDb(out _);
        var cases = new List<(string Dir, string Expect)>();
        var (d1, _) = ImageWithDb(good[..(good.Length - 1024)]); // the last page (the Packages root) cut off
        cases.Add((d1, "/var/lib/rpm/rpmdb.sqlite"));
        var (d2, db2) = ImageWithDb(good);
        File.WriteAllBytes(db2 + "-wal", new byte[(64 << 20) + 1]);
        cases.Add((d2, "/var/lib/rpm/rpmdb.sqlite-wal is 67108865 bytes"));
        var d3 = Cli.Temp("bom-rpmbdb");
        Directory.CreateDirectory(Path.Combine(d3, "var/lib/rpm"));
        File.WriteAllBytes(Path.Combine(d3, "var/lib/rpm/Packages"), new byte[8192]);
        cases.Add((d3, "/var/lib/rpm/Packages: not a Berkeley DB hash database"));
        var d5 = Cli.Temp("bom-rpmndb");
        Directory.CreateDirectory(Path.Combine(d5, "usr/lib/sysimage/rpm"));
        File.WriteAllBytes(Path.Combine(d5, "usr/lib/sysimage/rpm/Packages.db"), new byte[8192]);
        cases.Add((d5, "ndb database (/usr/lib/sysimage/rpm/Packages.db)"));
        foreach (var (dir, expect) in cases)
        {
            var (boot, blobs) = BomTests.Build(dir);
            var (code, text) = Cli.Run("bom", boot, "--blob-dir", blobs, "-o", Path.Combine(dir, "x.json"));
            Assert.Equal(1, code);
            Assert.Contains(expect, text, StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(dir, "x.json")));
        }
        // An empty WAL (what rpm leaves after a clean close) or one without a valid header holds nothing (as SQLite
        // treats it): the database alone is read.
        foreach (var wal in new[] { Array.Empty<byte>(), new byte[4096 + 32 + 24] })
        {
            var (d4, db4) = ImageWithDb(good);
            File.WriteAllBytes(db4 + "-wal", wal);
            var (b4, o4) = BomTests.Build(d4);
            Assert.Equal(4, Packages(BomTests.Bom(b4, o4, "spdx")).Count());
        }
    }

    [SkippableFact]
    public void Committed_wal_frames_are_read_and_an_uncommitted_tail_is_not()
    {
        Skip.IfNot(BomTests.OnPath("sqlite3"), "sqlite3 is not installed (tests/setup.sh installs it; it writes the WAL this test reads)");
        static string Hex(string name) => "X'" + Convert.ToHexString(RpmHeaderBuilder.Build((RpmHeader.TagName, name), (RpmHeader.TagVersion, "1"), (RpmHeader.TagRelease, "1"))) + "'";
        var (dir, db) = ImageWithDb([]);
        File.Delete(db);
        var (c1, _, e1) = BomTests.Sh("sqlite3", db, "PRAGMA journal_mode=WAL; CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL); " +
            $"INSERT INTO Packages (blob) VALUES ({Hex("pkg-a")});");
        Assert.True(c1 == 0, e1);
        // SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE: the last connection leaves its WAL, as an image taken mid-transaction has it.
        // Three transactions: add b, add c, delete a.
        var (c2, _, e2) = BomTests.Sh("sqlite3", "-cmd", ".dbconfig no_ckpt_on_close on", db,
            $"INSERT INTO Packages (blob) VALUES ({Hex("pkg-b")}); INSERT INTO Packages (blob) VALUES ({Hex("pkg-c")}); DELETE FROM Packages WHERE hnum = 1;");
        Assert.True(c2 == 0, e2);
        var walBytes = File.ReadAllBytes(db + "-wal");
        Assert.True(walBytes.Length > 32, "sqlite3 left no WAL");
        File.Delete(db + "-shm");

        string Names()
        {
            var (boot, blobs) = BomTests.Build(dir);
            using var spdx = BomTests.Bom(boot, blobs, "spdx");
            return string.Join(",", Packages(spdx).Select(p => p.GetProperty("name").GetString()).Order(StringComparer.Ordinal));
        }
        Assert.Equal("pkg-b,pkg-c", Names());
        // The last frame cut short: the delete's commit frame is gone, so that transaction did not happen.
        File.WriteAllBytes(db + "-wal", walBytes[..^1]);
        Assert.Equal("pkg-a,pkg-b,pkg-c", Names());
    }
}
