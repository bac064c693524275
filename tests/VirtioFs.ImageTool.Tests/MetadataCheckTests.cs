using System.Text.Json;
using VirtioFs.Rafs.Tests.Support;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

/// <summary>`vfs-image check` on a bootstrap whose inode record was edited in place (every digest left as built):
/// exit 1, and the error names the path, the inode number and the field.</summary>
public sealed class MetadataCheckTests
{
    [Theory]
    [InlineData(6, "setuid")]
    [InlineData(6, "uid")]
    [InlineData(6, "rdev")]
    [InlineData(6, "xattr-add")]
    [InlineData(5, "setuid")]
    [InlineData(5, "gid")]
    [InlineData(5, "rdev")]
    [InlineData(5, "xattr-change")]
    public void Check_names_the_inode_and_the_field(int fsVersion, string edit)
    {
        using var mi = new MetadataImage(fsVersion);
        Assert.Equal(0, Cli.Run("check", mi.Bootstrap, "--blob-dir", mi.BlobDir).Code);
        var (path, field) = MetadataImage.Edits[edit];
        var (_, attr) = mi.Find(path);
        mi.Tamper(edit);
        var (code, text) = Cli.Run("check", mi.Bootstrap, "--blob-dir", mi.BlobDir, "--json");
        Assert.Equal(1, code);
        using var doc = JsonDocument.Parse(text);
        Assert.False(doc.RootElement.GetProperty("ok").GetBoolean());
        string error = doc.RootElement.GetProperty("error").GetString()!;
        Assert.StartsWith($"'/{path}' (ino {attr.Ino}): metadata does not match its merkle digest: {field}", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(6)]
    [InlineData(5)]
    public void Inspect_reports_the_merkle_extension_version(int fsVersion)
    {
        using var mi = new MetadataImage(fsVersion);
        var (code, text) = Cli.Run("inspect", mi.Bootstrap, "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(text);
        Assert.Equal(3, doc.RootElement.GetProperty("merkle_version").GetInt32()); // 3: rows carry file digests
        Assert.Equal(Convert.ToHexStringLower(mi.Build.RootDigest), doc.RootElement.GetProperty("root_digest").GetString());
    }
}
