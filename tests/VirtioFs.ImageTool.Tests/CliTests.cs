using System.Text.Json;
using VirtioFs.ImageTool;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

public sealed class CliTests
{
    private static string Temp(string tag)
    {
        var d = Path.Combine(Path.GetTempPath(), $"vfs-cli-{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    private static (int Code, string Out) Run(params string[] args)
    {
        var w = new StringWriter();
        try
        {
            return (Program.Run(args, w), w.ToString());
        }
        catch (Program.UsageException)
        {
            return (2, w.ToString());
        }
    }

    private static (string Src, string Out, string Boot) Sample(params string[] extra)
    {
        var src = Temp("src");
        Directory.CreateDirectory(Path.Combine(src, "d"));
        File.WriteAllText(Path.Combine(src, "d/hello.txt"), "hello world\n");
        File.WriteAllBytes(Path.Combine(src, "d/twice1"), new byte[200_000]);
        File.WriteAllBytes(Path.Combine(src, "d/twice2"), new byte[200_000]);
        File.CreateSymbolicLink(Path.Combine(src, "ln"), "d/hello.txt");
        var o = Temp("out");
        var boot = Path.Combine(o, "image.boot");
        var (code, _) = Run(["create", src, "--blob-dir", o, "--bootstrap", boot, "--chunk-size", "0x10000", .. extra]);
        Assert.Equal(0, code);
        return (src, o, boot);
    }

    [Fact]
    public void Unknown_flag_is_a_usage_error_with_exit_code_2()
    {
        Assert.Equal(2, Program.Main(["create", "--frobnicate", "x"]));
        Assert.Equal(2, Program.Main(["nonsense"]));
        Assert.Equal(2, Program.Main(["create", "x", "--blob-dir", "/tmp", "--bootstrap", "/tmp/b", "--chunk-size", "3000"]));
        Assert.Equal(2, Program.Main(["create", "x", "--blob-dir", "/tmp", "--bootstrap", "/tmp/b", "--compressor", "brotli"]));
    }

    [Fact]
    public void Create_reports_counts_dedup_and_root_digest_as_json()
    {
        var src = Temp("src");
        File.WriteAllBytes(Path.Combine(src, "a"), new byte[131072]);
        File.WriteAllBytes(Path.Combine(src, "b"), new byte[131072]);
        var o = Temp("out");
        var (code, text) = Run("create", src, "--blob-dir", o, "--bootstrap", Path.Combine(o, "b"), "--chunk-size", "64K", "--compressor", "lz4_block", "--json");
        Assert.Equal(0, code);
        using var j = JsonDocument.Parse(text);
        Assert.Equal(4, j.RootElement.GetProperty("chunks").GetInt64());
        Assert.Equal(1, j.RootElement.GetProperty("unique_chunks").GetInt64());
        Assert.Equal(4.0, j.RootElement.GetProperty("dedup_ratio").GetDouble());
        Assert.Equal(64, j.RootElement.GetProperty("root_digest").GetString()!.Length);
    }

    [Fact]
    public void Inspect_ls_stat_and_check_agree_with_the_source()
    {
        var (_, o, boot) = Sample("--digester", "sha256", "--compressor", "zstd");
        var (code, text) = Run("inspect", boot, "--json");
        Assert.Equal(0, code);
        using (var j = JsonDocument.Parse(text))
        {
            Assert.Equal("sha256", j.RootElement.GetProperty("digester").GetString());
            Assert.Equal("zstd", j.RootElement.GetProperty("compressor").GetString());
            Assert.Equal(65536, j.RootElement.GetProperty("chunk_size").GetInt32());
            Assert.Equal(1, j.RootElement.GetProperty("blobs").GetArrayLength());
            Assert.Equal(3, j.RootElement.GetProperty("files").GetInt32());
        }
        (code, text) = Run("ls", boot, "/d", "--json");
        Assert.Equal(0, code);
        using (var j = JsonDocument.Parse(text))
        {
            var names = j.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()).ToList();
            Assert.Equal(new[] { "hello.txt", "twice1", "twice2" }, names);
        }
        (code, text) = Run("stat", boot, "/ln", "--json");
        Assert.Equal(0, code);
        using (var j = JsonDocument.Parse(text)) Assert.Equal("d/hello.txt", j.RootElement.GetProperty("target").GetString());
        (code, text) = Run("check", boot, "--blob-dir", o, "--json");
        Assert.Equal(0, code);
        Assert.Contains("\"ok\":true", text);
        Assert.Equal(1, Program.Main(["stat", boot, "/missing"]));
    }

    [Fact]
    public void Unpack_writes_the_tree_back()
    {
        var (src, o, boot) = Sample();
        var dst = Path.Combine(Temp("unpack"), "t");
        Assert.Equal(0, Run("unpack", boot, dst, "--blob-dir", o).Code);
        Assert.Equal(File.ReadAllText(Path.Combine(src, "d/hello.txt")), File.ReadAllText(Path.Combine(dst, "d/hello.txt")));
        Assert.Equal("d/hello.txt", new FileInfo(Path.Combine(dst, "ln")).LinkTarget);
    }

    [Fact]
    public void Sign_and_check_with_trust_key()
    {
        var keys = Temp("keys");
        var key = Path.Combine(keys, "k");
        Assert.Equal(0, Run("keygen", key).Code);
        var (_, o, boot) = Sample("--sign", key);
        Assert.Equal(0, Run("check", boot, "--blob-dir", o, "--trust-key", key + ".pub").Code);
        var other = Path.Combine(keys, "other");
        Assert.Equal(0, Run("keygen", other).Code);
        Assert.Equal(1, Run("check", boot, "--blob-dir", o, "--trust-key", other + ".pub").Code);
    }

    [Fact]
    public void Check_of_a_corrupt_bootstrap_fails_with_exit_code_1()
    {
        var (_, o, boot) = Sample();
        var b = File.ReadAllBytes(boot);
        b[1024] ^= 0xFF;
        File.WriteAllBytes(boot, b);
        var (code, text) = Run("check", boot, "--blob-dir", o, "--json");
        Assert.Equal(1, code);
        Assert.Contains("magic", text);
    }

    [Fact]
    public void Source_date_epoch_makes_builds_reproducible()
    {
        var src = Temp("src");
        File.WriteAllText(Path.Combine(src, "f"), "same");
        Environment.SetEnvironmentVariable("SOURCE_DATE_EPOCH", "1234567890");
        try
        {
            var o1 = Temp("o1");
            var o2 = Temp("o2");
            Assert.Equal(0, Run("create", src, "--blob-dir", o1, "--bootstrap", Path.Combine(o1, "b")).Code);
            Thread.Sleep(1100);
            Assert.Equal(0, Run("create", src, "--blob-dir", o2, "--bootstrap", Path.Combine(o2, "b")).Code);
            Assert.Equal(File.ReadAllBytes(Path.Combine(o1, "b")), File.ReadAllBytes(Path.Combine(o2, "b")));
        }
        finally
        {
            Environment.SetEnvironmentVariable("SOURCE_DATE_EPOCH", null);
        }
    }
}
