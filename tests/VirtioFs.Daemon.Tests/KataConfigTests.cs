using System.Text.RegularExpressions;
using VirtioFs.Daemon.CommandLine;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>The shipped Kata configurations must produce command lines vfsd accepts, in both Kata runtimes' shapes.</summary>
public partial class KataConfigTests
{
    [Theory]
    [InlineData("configuration-qemu-vfsd.toml")]
    [InlineData("configuration-clh-vfsd.toml")]
    public void Kata_configuration_yields_accepted_command_lines(string file)
    {
        string text = File.ReadAllText(Path.Combine(RepoRoot(), "kata-config", file));
        string cache = Quoted(CacheKey().Match(text).Groups[1].Value);
        string[] extra = QuotedItem().Matches(ExtraArgsKey().Match(text).Groups[1].Value).Select(m => m.Groups[1].Value).ToArray();
        Assert.NotEmpty(extra);
        Assert.Equal("/usr/local/bin/vfsd", Quoted(DaemonKey().Match(text).Groups[1].Value));

        // Go runtime (virtiofsd.go): fixed arguments first, then the extra ones.
        var go = OptionParser.Parse(["--syslog", "--cache=" + cache, "--shared-dir=/run/kata-containers/shared/sandboxes/x/shared", "--fd=3", .. extra]);
        Assert.Equal(3, go.ListenFd);
        Assert.Equal(OptionParser.ParseCache(cache), go.Cache);
        Assert.True(go.AnnounceSubmounts);
        Assert.Equal(1, go.ThreadPoolSize);

        // Rust runtime (share_virtio_fs_standalone.rs): space-separated values, extra args, then --xattr.
        var rust = OptionParser.Parse(["--socket-path", "/run/kata/x/vhost-fs.sock", "--shared-dir", "/run/kata/x/shared", "--cache", cache, .. extra, "--xattr"]);
        Assert.True(rust.Xattr);
        Assert.Equal(OptionParser.ParseCache(cache), rust.Cache);
    }

    [Fact]
    public void Kata_nydus_configuration_yields_accepted_command_lines()
    {
        string text = File.ReadAllText(Path.Combine(RepoRoot(), "kata-config", "configuration-qemu-nydus-vfsd.toml"));
        Assert.Contains("shared_fs = \"virtio-fs-nydus\"", text, StringComparison.Ordinal);
        string[] extra = QuotedItem().Matches(ExtraArgsKey().Match(text).Groups[1].Value).Select(m => m.Groups[1].Value).ToArray();
        // Go runtime, src/runtime/virtcontainers/nydusd.go args(): the virtiofs subcommand, then the extra args.
        var go = OptionParser.Parse(["virtiofs", "--log-level", "info", "--apisock", "/run/kata/x/nydusd-api.sock", "--sock", "/run/kata/x/vhost-fs.sock", .. extra]);
        Assert.True(go.NydusVirtiofs);
        Assert.Equal("/run/kata/x/nydusd-api.sock", go.ApiSocket);
        Assert.Equal("/run/kata/x/vhost-fs.sock", go.SocketPath);
        // runtime-rs, share_fs/nydus/nydus_daemon.rs build_args(): adds --hybrid-mode.
        var rust = OptionParser.Parse(["virtiofs", "--hybrid-mode", "--log-level", "debug", "--apisock", "/run/kata/x/nydusd-api.sock", "--sock", "/run/kata/x/virtiofsd.sock", .. extra]);
        Assert.True(rust.HybridMode);
        Assert.Equal("/run/kata/x/virtiofsd.sock", rust.SocketPath);
        // The comment at the top of the file shows the command line the runtimes really build.
        Assert.Contains("virtiofs --log-level", text, StringComparison.Ordinal);
        Assert.Contains("virtiofs --hybrid-mode --log-level", text, StringComparison.Ordinal);
    }

    /// <summary>
    /// kata-config/README.md's table lists, per row, an argument vfsd gets from Kata and whether vfsd honours or refuses
    /// it. Each row is parsed here: an "honoured" argument must be accepted, a "refused" one must be a one-line error.
    /// A row that drifts from the code fails this test.
    /// </summary>
    [Fact]
    public void Readme_flag_table_matches_the_parser()
    {
        string readme = File.ReadAllText(Path.Combine(RepoRoot(), "kata-config", "README.md"));
        var rows = FlagRow().Matches(readme).ToList();
        Assert.True(rows.Count >= 15, $"expected the flag table in kata-config/README.md, found {rows.Count} rows");
        foreach (Match row in rows)
        {
            string[] flag = row.Groups["flag"].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            bool honoured = row.Groups["verdict"].Value == "honoured";
            // --fd replaces --socket-path (exactly one of them is given).
            string[] args = flag[0].StartsWith("--fd", StringComparison.Ordinal) ? ["--shared-dir=/d", .. flag] : ["--socket-path=/s", "--shared-dir=/d", .. flag];
            if (honoured)
            {
                OptionParser.Parse(args);
            }
            else
            {
                var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(args));
                Assert.DoesNotContain('\n', e.Message);
            }
        }
    }

    [GeneratedRegex(@"^\| `(?<flag>[^`]+)` \| (?<verdict>honoured|refused) \|", RegexOptions.Multiline)]
    private static partial Regex FlagRow();

    private static string Quoted(string s) => s.Trim().Trim('"');

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "VirtioFs.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root not found");
    }

    [GeneratedRegex(@"^virtio_fs_cache\s*=\s*(""[^""]*"")", RegexOptions.Multiline)]
    private static partial Regex CacheKey();

    [GeneratedRegex(@"^virtio_fs_daemon\s*=\s*(""[^""]*"")", RegexOptions.Multiline)]
    private static partial Regex DaemonKey();

    [GeneratedRegex(@"^virtio_fs_extra_args\s*=\s*\[([^\]]*)\]", RegexOptions.Multiline)]
    private static partial Regex ExtraArgsKey();

    [GeneratedRegex(@"""([^""]*)""")]
    private static partial Regex QuotedItem();
}
