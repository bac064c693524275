using System.Text.Json;
using VirtioFs.ImageTool;
using Xunit;

namespace VirtioFs.ImageTool.Tests;

public sealed class CliTests
{


    private static (string Src, string Out, string Boot) Sample(params string[] extra)
    {
        var src = Cli.Temp("src");
        Directory.CreateDirectory(Path.Combine(src, "d"));
        File.WriteAllText(Path.Combine(src, "d/hello.txt"), "hello world\n");
        File.WriteAllBytes(Path.Combine(src, "d/twice1"), new byte[200_000]);
        File.WriteAllBytes(Path.Combine(src, "d/twice2"), new byte[200_000]);
        File.CreateSymbolicLink(Path.Combine(src, "ln"), "d/hello.txt");
        var o = Cli.Temp("out");
        var boot = Path.Combine(o, "image.boot");
        var (code, _) = Cli.Run(["create", src, "--blob-dir", o, "--bootstrap", boot, "--chunk-size", "0x10000", .. extra]);
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
        var src = Cli.Temp("src");
        File.WriteAllBytes(Path.Combine(src, "a"), new byte[131072]);
        File.WriteAllBytes(Path.Combine(src, "b"), new byte[131072]);
        var o = Cli.Temp("out");
        var (code, text) = Cli.Run("create", src, "--blob-dir", o, "--bootstrap", Path.Combine(o, "b"), "--chunk-size", "64K", "--compressor", "lz4_block", "--json");
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
        var (code, text) = Cli.Run("inspect", boot, "--json");
        Assert.Equal(0, code);
        using (var j = JsonDocument.Parse(text))
        {
            Assert.Equal("sha256", j.RootElement.GetProperty("digester").GetString());
            Assert.Equal("zstd", j.RootElement.GetProperty("compressor").GetString());
            Assert.Equal(65536, j.RootElement.GetProperty("chunk_size").GetInt32());
            Assert.Equal(1, j.RootElement.GetProperty("blobs").GetArrayLength());
            Assert.Equal(3, j.RootElement.GetProperty("files").GetInt32());
        }
        (code, text) = Cli.Run("ls", boot, "/d", "--json");
        Assert.Equal(0, code);
        using (var j = JsonDocument.Parse(text))
        {
            var names = j.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()).ToList();
            Assert.Equal(new[] { "hello.txt", "twice1", "twice2" }, names);
        }
        (code, text) = Cli.Run("stat", boot, "/ln", "--json");
        Assert.Equal(0, code);
        using (var j = JsonDocument.Parse(text)) Assert.Equal("d/hello.txt", j.RootElement.GetProperty("target").GetString());
        (code, text) = Cli.Run("check", boot, "--blob-dir", o, "--json");
        Assert.Equal(0, code);
        Assert.Contains("\"ok\":true", text);
        Assert.Equal(1, Program.Main(["stat", boot, "/missing"]));
    }

    [Fact]
    public void Cat_prints_file_content_including_holes()
    {
        var (src, o, boot) = Sample();
        var ms = new MemoryStream();
        Assert.Equal(0, Program.Run(["cat", boot, "/d/twice1", "--blob-dir", o], new StringWriter(), ms));
        Assert.Equal(File.ReadAllBytes(Path.Combine(src, "d/twice1")), ms.ToArray());
        ms = new MemoryStream();
        Assert.Equal(0, Program.Run(["cat", boot, "/d/hello.txt"], new StringWriter(), ms));   // blob dir defaults to the bootstrap's
        Assert.Equal("hello world\n"u8.ToArray(), ms.ToArray());
    }

    [Fact]
    public void Fs_version_5_builds_and_checks()
    {
        var (_, o, boot) = Sample("--fs-version", "5", "--compressor", "none");
        var (code, text) = Cli.Run("inspect", boot, "--json");
        Assert.Equal(0, code);
        using var j = JsonDocument.Parse(text);
        Assert.Equal(5, j.RootElement.GetProperty("version").GetInt32());
        Assert.Equal(0, Cli.Run("check", boot, "--blob-dir", o).Code);
    }

    [Fact]
    public void Oci_layer_files_are_flattened_by_create()
    {
        var dir = Cli.Temp("layers");
        string Layer(string name, params (string Path, string Content)[] files)
        {
            var p = Path.Combine(dir, name);
            using var fs = File.Create(p);
            using var w = new System.Formats.Tar.TarWriter(fs);
            foreach (var (path, content) in files)
            {
                var e = new System.Formats.Tar.PaxTarEntry(System.Formats.Tar.TarEntryType.RegularFile, path) { DataStream = new MemoryStream(System.Text.Encoding.UTF8.GetBytes(content)) };
                w.WriteEntry(e);
            }
            return p;
        }
        var l1 = Layer("l1.tar", ("a", "1"), ("b", "2"));
        var l2 = Layer("l2.tar", (".wh.a", ""), ("c", "3"));
        var o = Cli.Temp("out");
        var boot = Path.Combine(o, "b");
        Assert.Equal(0, Cli.Run("create", l1, l2, "--blob-dir", o, "--bootstrap", boot).Code);
        var (code, text) = Cli.Run("ls", boot, "/", "--json");
        Assert.Equal(0, code);
        using var j = JsonDocument.Parse(text);
        Assert.Equal(new[] { "b", "c" }, j.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()));
    }

    [Fact]
    public void Unpack_writes_the_tree_back()
    {
        var (src, o, boot) = Sample();
        var dst = Path.Combine(Cli.Temp("unpack"), "t");
        Assert.Equal(0, Cli.Run("unpack", boot, dst, "--blob-dir", o).Code);
        Assert.Equal(File.ReadAllText(Path.Combine(src, "d/hello.txt")), File.ReadAllText(Path.Combine(dst, "d/hello.txt")));
        Assert.Equal("d/hello.txt", new FileInfo(Path.Combine(dst, "ln")).LinkTarget);
    }

    [Fact]
    public void Sign_and_check_with_trust_key()
    {
        var keys = Cli.Temp("keys");
        var key = Path.Combine(keys, "k");
        Assert.Equal(0, Cli.Run("keygen", key).Code);
        var (_, o, boot) = Sample("--sign", key);
        Assert.Equal(0, Cli.Run("check", boot, "--blob-dir", o, "--trust-key", key + ".pub").Code);
        var other = Path.Combine(keys, "other");
        Assert.Equal(0, Cli.Run("keygen", other).Code);
        Assert.Equal(1, Cli.Run("check", boot, "--blob-dir", o, "--trust-key", other + ".pub").Code);
    }

    [Fact]
    public void Check_of_a_corrupt_bootstrap_fails_with_exit_code_1()
    {
        var (_, o, boot) = Sample();
        var b = File.ReadAllBytes(boot);
        b[1024] ^= 0xFF;
        File.WriteAllBytes(boot, b);
        var (code, text) = Cli.Run("check", boot, "--blob-dir", o, "--json");
        Assert.Equal(1, code);
        Assert.Contains("magic", text);
    }

    [Fact]
    public void Source_date_epoch_makes_builds_reproducible()
    {
        var src = Cli.Temp("src");
        File.WriteAllText(Path.Combine(src, "f"), "same");
        Environment.SetEnvironmentVariable("SOURCE_DATE_EPOCH", "1234567890");
        try
        {
            var o1 = Cli.Temp("o1");
            var o2 = Cli.Temp("o2");
            Assert.Equal(0, Cli.Run("create", src, "--blob-dir", o1, "--bootstrap", Path.Combine(o1, "b")).Code);
            Thread.Sleep(1100);
            Assert.Equal(0, Cli.Run("create", src, "--blob-dir", o2, "--bootstrap", Path.Combine(o2, "b")).Code);
            Assert.Equal(File.ReadAllBytes(Path.Combine(o1, "b")), File.ReadAllBytes(Path.Combine(o2, "b")));
        }
        finally
        {
            Environment.SetEnvironmentVariable("SOURCE_DATE_EPOCH", null);
        }
    }
}
