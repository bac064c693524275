using System.Security.Cryptography;
using System.Text.Json;
using VirtioFs.Tests.Fixtures;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>
/// vfs-image against images nydus-image itself built (nydus tests/texture, committed under tests/fixtures/nydus-texture):
/// RAFS v6 from nydus-image 2.2 (zstd, blake3) and RAFS v5 (uncompressed, sha256 and blake3 digests). The expected
/// contents come from nydus: the chunk digests in the bootstraps and the md5 list and tree in its .result file.
/// </summary>
public sealed class NydusTextureTests : IDisposable
{
    private readonly NydusTexture _t = new();

    public void Dispose() => _t.Dispose();

    [Fact]
    public void V6_from_nydus_image_2_2_passes_check_with_a_warning_for_its_blob_name()
    {
        var (code, output) = Cli.Run("check", _t.V6Bootstrap, "--blob-dir", _t.V6BlobDir, "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        Assert.True(doc.RootElement.GetProperty("ok").GetBoolean());
        string warning = Assert.Single(doc.RootElement.GetProperty("warnings").EnumerateArray()).GetString()!;
        Assert.Contains(NydusTexture.V6BlobId, warning, StringComparison.Ordinal);
        Assert.Contains("4b16fb83ae9f62d8263323b8569535e66ebf21171cf98fd94db9db27b59755ac", warning, StringComparison.Ordinal);
    }

    [Fact]
    public void V6_check_still_fails_on_a_corrupt_chunk()
    {
        string blob = Path.Combine(_t.V6BlobDir, NydusTexture.V6BlobId);
        byte[] bytes = File.ReadAllBytes(blob);
        bytes[100] ^= 0x40;
        File.WriteAllBytes(blob, bytes);
        var (code, output) = Cli.Run("check", _t.V6Bootstrap, "--blob-dir", _t.V6BlobDir, "--json");
        Assert.Equal(1, code);
        using var doc = JsonDocument.Parse(output);
        Assert.False(doc.RootElement.GetProperty("ok").GetBoolean());
        Assert.Contains("digest", doc.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public void V6_inspect_and_unpack()
    {
        var (code, output) = Cli.Run("inspect", _t.V6Bootstrap, "--json");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(output))
        {
            JsonElement r = doc.RootElement;
            Assert.Equal(6, r.GetProperty("version").GetInt32());
            Assert.Equal("zstd", r.GetProperty("compressor").GetString());
            Assert.Equal("blake3", r.GetProperty("digester").GetString());
            Assert.Equal(2, r.GetProperty("files").GetInt64());
            JsonElement blob = Assert.Single(r.GetProperty("blobs").EnumerateArray());
            Assert.Equal(NydusTexture.V6BlobId, blob.GetProperty("id").GetString());
            Assert.Equal(14554, blob.GetProperty("compressed_size").GetInt64());
        }
        string dir = Path.Combine(_t.Root, "unpacked-v6");
        Assert.Equal(0, Cli.Run("unpack", _t.V6Bootstrap, dir, "--blob-dir", _t.V6BlobDir).Code);
        Assert.Equal(NydusTexture.V6Files.Keys.Order(), Directory.GetFiles(dir).Select(Path.GetFileName).Order());
        foreach ((string name, string sha) in NydusTexture.V6Files)
            Assert.Equal(sha, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, name)))));
        Assert.StartsWith("// Copyright (C) 2020 Alibaba Cloud", File.ReadAllText(Path.Combine(dir, "lib.rs")), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("sha256-nocompress-repeatable", "sha256")]
    [InlineData("blake3-lz4_block-non_repeatable", "blake3")]
    public void V5_check_inspect_and_unpack_match_nydus_tree_and_checksums(string bootstrap, string digester)
    {
        string boot = Path.Combine(_t.Root, bootstrap);
        var (code, output) = Cli.Run("check", boot, "--blob-dir", _t.V5BlobDir, "--json");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.True(doc.RootElement.GetProperty("ok").GetBoolean());
            Assert.Empty(doc.RootElement.GetProperty("warnings").EnumerateArray()); // this blob is named by its sha256
        }
        (code, output) = Cli.Run("inspect", boot, "--json");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.Equal(5, doc.RootElement.GetProperty("version").GetInt32());
            Assert.Equal(digester, doc.RootElement.GetProperty("digester").GetString());
            Assert.Equal(NydusTexture.V5BlobId, Assert.Single(doc.RootElement.GetProperty("blobs").EnumerateArray()).GetProperty("id").GetString());
        }

        string dir = Path.Combine(_t.Root, "unpacked-" + digester);
        Assert.Equal(0, Cli.Run("unpack", boot, dir, "--blob-dir", _t.V5BlobDir).Code);
        var expected = _t.ExpectedTree();
        Assert.Equal(53, expected.Count);
        foreach (NydusTexture.Entry e in expected)
        {
            string p = Path.Combine(dir, e.Path);
            var info = new FileInfo(p);
            switch (e.Type)
            {
                case "link":
                    Assert.Equal(e.Target, info.LinkTarget);
                    break;
                case "directory":
                    Assert.True(Directory.Exists(p) && info.LinkTarget is null, e.Path);
                    break;
                default:
                    Assert.True(info.Exists && info.LinkTarget is null, e.Path);
                    break;
            }
        }
        Assert.Equal(expected.Count, CountEntries(dir));
        var md5 = _t.ExpectedMd5();
        Assert.Equal(23, md5.Count);
        foreach ((string path, string sum) in md5)
            Assert.Equal(sum, Convert.ToHexStringLower(MD5.HashData(File.ReadAllBytes(Path.Combine(dir, path)))));
    }

    /// <summary>Entries under <paramref name="dir"/>, not following symlinks (the tree links to "/").</summary>
    private static int CountEntries(string dir)
    {
        int n = 0;
        foreach (string e in Directory.EnumerateFileSystemEntries(dir, "*", new EnumerationOptions { AttributesToSkip = 0 }))
        {
            n++;
            if (new FileInfo(e).LinkTarget is null && Directory.Exists(e)) n += CountEntries(e);
        }
        return n;
    }
}
