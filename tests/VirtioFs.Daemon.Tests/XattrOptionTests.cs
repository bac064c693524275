using VirtioFs.Daemon.CommandLine;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// --xattrmap, --posix-acl, --security-label, --killpriv-v2 and their -o forms (virtiofsd src/main.rs: the long options
/// and the legacy "-o xattrmap=,posix_acl,no_posix_acl,security_label,no_security_label,killpriv_v2,no_killpriv_v2"
/// table; xattrmap, posix_acl and security_label imply xattr). Kept in their own file, beside OptionParserTests.
/// </summary>
public class XattrOptionTests
{
    private static DaemonOptions Parse(params string[] extra) => OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", .. extra]);

    [Fact]
    public void Xattrmap_is_parsed_implies_xattr_and_reaches_the_passthrough()
    {
        DaemonOptions o = Parse("--xattrmap", ":prefix:all::user.virtiofs.::bad:all:::");
        Assert.NotNull(o.XattrMap);
        Assert.Equal(2, o.XattrMap.Rules.Count);
        Assert.False(o.Xattr);
        Assert.True(o.XattrEnabled);

        DaemonOptions eq = Parse("--xattrmap=:map::user.virtiofs.:");
        Assert.Equal(o.XattrMap.Rules, eq.XattrMap!.Rules);
    }

    [Fact]
    public void Legacy_o_xattrmap_is_parsed()
    {
        // -o values are split at ',' first, so a map given through -o cannot contain one (as with the C virtiofsd).
        DaemonOptions o = OptionParser.Parse(["--socket-path=/s", "-o", "source=/d,xattrmap=/bad/all/security./security./ /ok/all///"]);
        Assert.Equal(2, o.XattrMap!.Rules.Count);
        Assert.Equal(XattrRuleType.Bad, o.XattrMap.Rules[0].Type);
    }

    [Theory]
    [InlineData(":prefix:all::user.virtiofs.:", "--xattrmap: xattrmap: no rule matches every host name")]
    [InlineData(":frob:all:::", "--xattrmap: xattrmap rule 1: type 'frob'")]
    [InlineData(":ok:all::", "--xattrmap: xattrmap rule 1: incomplete rule")]
    public void A_bad_map_is_a_one_line_error(string map, string message)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => Parse("--xattrmap", map));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "-o", $"source=/d,xattrmap={map}"]));
    }

    [Fact]
    public void Posix_acl_flags_and_their_o_forms()
    {
        Assert.True(Parse("--posix-acl").PosixAcl);
        Assert.True(Parse("--posix-acl").XattrEnabled);
        Assert.False(Parse("--posix-acl", "--no-posix-acl").PosixAcl);
        Assert.True(Parse("-o", "posix_acl").PosixAcl);
        Assert.False(Parse("-o", "posix_acl,no_posix_acl").PosixAcl);
        FuseServerOptions s = DaemonHost.ServerOptions(Parse("--posix-acl"));
        Assert.True(s.PosixAcl);
        Assert.True(s.SetxattrExt);
        Assert.False(DaemonHost.ServerOptions(Parse()).PosixAcl);
    }

    [Fact]
    public void Security_label_flag_and_its_o_forms()
    {
        Assert.True(Parse("--security-label").SecurityLabel);
        Assert.True(Parse("--security-label").XattrEnabled);
        Assert.True(Parse("-o", "security_label").SecurityLabel);
        Assert.False(Parse("-o", "security_label,no_security_label").SecurityLabel);
        Assert.True(DaemonHost.ServerOptions(Parse("--security-label")).SecurityLabel);
        Assert.Throws<OptionParser.UsageException>(() => Parse("--security-label=yes"));
    }

    [Fact]
    public void Killpriv_v2_flags_set_handle_killpriv_v2()
    {
        Assert.True(DaemonHost.ServerOptions(Parse("--killpriv-v2")).HandleKillPrivV2);
        Assert.False(DaemonHost.ServerOptions(Parse("--killpriv-v2", "--no-killpriv-v2")).HandleKillPrivV2);
        Assert.True(DaemonHost.ServerOptions(Parse("-o", "killpriv_v2")).HandleKillPrivV2);
        Assert.False(DaemonHost.ServerOptions(Parse("-o", "killpriv_v2,no_killpriv_v2")).HandleKillPrivV2);
        Assert.False(DaemonHost.ServerOptions(Parse()).HandleKillPrivV2); // off by default, as in virtiofsd
        Assert.False(DaemonHost.ServerOptions(Parse("--killpriv-v2", "--readonly")).HandleKillPrivV2); // nothing to clear
        Assert.Throws<OptionParser.UsageException>(() => Parse("--killpriv-v2=1"));
    }

    [Theory]
    [InlineData("--posix-acl")]
    [InlineData("--security-label")]
    [InlineData("--killpriv-v2")]
    [InlineData("--xattrmap=:ok:all:::")]
    public void They_are_refused_where_no_shared_directory_is_served(string flag)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() =>
            OptionParser.Parse(["--socket-path=/s", "--bootstrap=/i", "--blob-dir=/b", flag]));
        Assert.Contains("need --shared-dir", e.Message, StringComparison.Ordinal);
    }
}
