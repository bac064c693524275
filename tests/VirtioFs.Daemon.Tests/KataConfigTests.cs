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
    public void Kata_nydus_configuration_yields_an_accepted_command_line()
    {
        string text = File.ReadAllText(Path.Combine(RepoRoot(), "kata-config", "configuration-qemu-nydus-vfsd.toml"));
        Assert.Contains("shared_fs = \"virtio-fs-nydus\"", text, StringComparison.Ordinal);
        string[] extra = QuotedItem().Matches(ExtraArgsKey().Match(text).Groups[1].Value).Select(m => m.Groups[1].Value).ToArray();
        // nydusd.go: --log-level, --apisock, --sock, then the extra args.
        var o = OptionParser.Parse(["--log-level", "info", "--apisock", "/run/kata/x/nydusd-api.sock", "--sock", "/run/kata/x/vhost-user-fs.sock", .. extra]);
        Assert.Equal("/run/kata/x/nydusd-api.sock", o.ApiSocket);
        Assert.Equal("/run/kata/x/vhost-user-fs.sock", o.SocketPath);
    }

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
