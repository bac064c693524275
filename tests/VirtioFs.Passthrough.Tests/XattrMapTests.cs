using System.Text;

namespace VirtioFs.Passthrough.Tests;

/// <summary>
/// The --xattrmap parser and mapping against every example of virtiofsd doc/xattr-mapping.md (the rule table and
/// "Mapping examples" 1 to 3) and the error cases of src/passthrough/xattrmap.rs.
/// </summary>
public class XattrMapTests
{
    private static XattrMap Map(string text)
    {
        Assert.True(XattrMap.TryParse(text, out XattrMap? map, out string error), error);
        return map;
    }

    private static string Client(XattrMap map, string guestName)
    {
        Span<byte> buf = stackalloc byte[255];
        return map.MapClient(Encoding.UTF8.GetBytes(guestName), buf, out int n) switch
        {
            XattrMapResult.Pass => Encoding.UTF8.GetString(buf[..n]),
            XattrMapResult.Deny => "EPERM",
            XattrMapResult.Unsupported => "ENOTSUP",
            _ => "ERANGE",
        };
    }

    /// <summary>What the guest sees of a host listxattr result (names given without their NULs).</summary>
    private static string[] Server(XattrMap map, params string[] hostNames)
    {
        byte[] list = hostNames.SelectMany(n => Encoding.UTF8.GetBytes(n).Append((byte)0)).ToArray();
        int len = map.MapServerList(list, list.Length);
        return Encoding.UTF8.GetString(list, 0, len).Split('\0', StringSplitOptions.RemoveEmptyEntries);
    }

    private static XattrRule R(XattrRuleType t, XattrScope s, string key, string prepend) =>
        new(t, s, Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(prepend));

    // ---- the rule table of doc/xattr-mapping.md, each rule followed by a terminator so it forms a valid map ----------

    [Fact]
    public void Table_prefix_client_prefixes_trusted_names_from_the_guest()
    {
        XattrMap m = Map(":prefix:client:trusted.:user.virtiofs.: :ok:all:::");
        Assert.Equal("user.virtiofs.trusted.x", Client(m, "trusted.x"));
        Assert.Equal("user.y", Client(m, "user.y"));
        // client-only: host names are not stripped
        Assert.Equal(["user.virtiofs.trusted.x"], Server(m, "user.virtiofs.trusted.x"));
    }

    [Fact]
    public void Table_prefix_server_strips_the_prefix_from_host_names()
    {
        XattrMap m = Map(":prefix:server::user.virtiofs.: :ok:all:::");
        Assert.Equal(["trusted.x", "user.plain"], Server(m, "user.virtiofs.trusted.x", "user.plain"));
        Assert.Equal("trusted.x", Client(m, "trusted.x")); // server-only: guest names pass the ok rule unchanged
    }

    [Fact]
    public void Table_prefix_all_combines_both_directions()
    {
        XattrMap m = Map(":prefix:all:trusted.:user.virtiofs.: :ok:all:::");
        Assert.Equal("user.virtiofs.trusted.x", Client(m, "trusted.x"));
        Assert.Equal(["trusted.x"], Server(m, "user.virtiofs.trusted.x"));
    }

    [Fact]
    public void Table_ok_client_user_passes_user_names_and_stops_there()
    {
        XattrMap m = Map(":ok:client:user.:: :bad:all:::");
        Assert.Equal("user.a", Client(m, "user.a"));
        Assert.Equal("EPERM", Client(m, "trusted.a"));
    }

    [Fact]
    public void Table_ok_server_security_lists_security_names()
    {
        XattrMap m = Map(":ok:server::security.: :bad:all:::");
        Assert.Equal(["security.selinux"], Server(m, "security.selinux", "user.a", "trusted.b"));
    }

    [Fact]
    public void Table_ok_all_passes_everything()
    {
        XattrMap m = Map(":ok:all:::");
        Assert.Equal("trusted.a", Client(m, "trusted.a"));
        Assert.Equal(["security.a", "user.b"], Server(m, "security.a", "user.b"));
    }

    [Fact]
    public void Table_bad_server_security_hides_security_names()
    {
        XattrMap m = Map(":bad:server::security.: :ok:all:::");
        Assert.Equal(["user.b"], Server(m, "security.a", "user.b", "security.selinux"));
    }

    // ---- "Mapping examples" ------------------------------------------------------------------------------------------

    [Fact]
    public void Example1_prefix_all_names_and_hide_the_unprefixed_ones()
    {
        XattrMap m = Map(":prefix:all::user.virtiofs.::bad:all:::");
        Assert.Equal(
            [R(XattrRuleType.Prefix, XattrScope.All, "", "user.virtiofs."), R(XattrRuleType.Bad, XattrScope.All, "", "")],
            m.Rules);
        Assert.Equal("user.virtiofs.user.a", Client(m, "user.a"));
        Assert.Equal("user.virtiofs.trusted.a", Client(m, "trusted.a"));
        Assert.Equal("user.virtiofs.security.selinux", Client(m, "security.selinux"));
        Assert.Equal(["user.a", "trusted.a"], Server(m, "user.virtiofs.user.a", "security.selinux", "user.plain", "user.virtiofs.trusted.a"));
    }

    [Fact]
    public void Example1_map_form_is_the_same_rules()
    {
        Assert.Equal(Map(":prefix:all::user.virtiofs.::bad:all:::").Rules, Map(":map::user.virtiofs.:").Rules);
    }

    private const string Example2 = """
        /prefix/all/trusted./user.virtiofs./
                    /bad/server//trusted./
                    /bad/client/user.virtiofs.//
                    /ok/all///
        """;

    [Fact]
    public void Example2_prefix_trusted_and_let_the_rest_through()
    {
        XattrMap m = Map(Example2);
        Assert.Equal(4, m.Rules.Count);
        Assert.Equal("user.virtiofs.trusted.a", Client(m, "trusted.a"));
        Assert.Equal("EPERM", Client(m, "user.virtiofs.trusted.a")); // no bypass of the guest's trusted.* rules
        Assert.Equal("user.b", Client(m, "user.b"));
        Assert.Equal("security.selinux", Client(m, "security.selinux"));
        // The host's own trusted.* is hidden; the guest's (stored prefixed) comes back under its name.
        Assert.Equal(["trusted.a", "user.b"], Server(m, "trusted.host", "user.virtiofs.trusted.a", "user.b"));
    }

    [Fact]
    public void Example2_map_form_expands_to_the_four_rules()
    {
        XattrMap m = Map("/map/trusted./user.virtiofs./");
        Assert.Equal(
        [
            R(XattrRuleType.Prefix, XattrScope.All, "trusted.", "user.virtiofs."),
            R(XattrRuleType.Bad, XattrScope.All, "user.virtiofs.", "trusted."),
            R(XattrRuleType.Ok, XattrScope.All, "", ""),
        ], m.Rules);
        // It behaves as the long form on every name the long form distinguishes.
        XattrMap longForm = Map(Example2);
        foreach (string name in new[] { "trusted.a", "user.virtiofs.x", "user.b", "security.c" })
        {
            Assert.Equal(Client(longForm, name), Client(m, name));
        }
        Assert.Equal(Server(longForm, "trusted.host", "user.virtiofs.trusted.a", "user.b"), Server(m, "trusted.host", "user.virtiofs.trusted.a", "user.b"));
    }

    [Fact]
    public void Example3_hides_security_names_both_ways()
    {
        XattrMap m = Map("""
            /bad/all/security./security./
                        /ok/all///
            """);
        Assert.Equal("EPERM", Client(m, "security.selinux"));
        Assert.Equal("EPERM", Client(m, "security.capability"));
        Assert.Equal("user.a", Client(m, "user.a"));
        Assert.Equal(["user.a", "trusted.b"], Server(m, "security.selinux", "user.a", "trusted.b", "security.capability"));
    }

    [Fact]
    public void Unsupported_refuses_with_enotsup_and_hides()
    {
        XattrMap m = Map(":unsupported:all:trusted.:trusted.: :ok:all:::");
        Assert.Equal("ENOTSUP", Client(m, "trusted.a"));
        Assert.Equal(["user.a"], Server(m, "trusted.a", "user.a"));
    }

    [Fact]
    public void Different_separators_per_rule_and_surrounding_blanks_are_accepted()
    {
        XattrMap m = Map("  \n :prefix:client:trusted.:user.vm.:\t|ok|all||| \n");
        Assert.Equal(2, m.Rules.Count);
        Assert.Equal("user.vm.trusted.x", Client(m, "trusted.x"));
    }

    [Fact]
    public void A_mapped_name_longer_than_xattr_name_max_is_erange()
    {
        XattrMap m = Map(":map::user.virtiofs.:");
        Span<byte> buf = stackalloc byte[255];
        Assert.Equal(XattrMapResult.TooLong, m.MapClient(Encoding.UTF8.GetBytes("user." + new string('a', 240)), buf, out _));
    }

    [Fact]
    public void The_first_matching_rule_wins()
    {
        XattrMap m = Map(":bad:client:user.secret.:: :ok:all:::");
        Assert.Equal("EPERM", Client(m, "user.secret.x"));
        Assert.Equal("user.public", Client(m, "user.public"));
    }

    // ---- errors: one clear line each --------------------------------------------------------------------------------

    [Theory]
    [InlineData("", "no rules")]
    [InlineData("   ", "no rules")]
    [InlineData(":prefix:all:trusted.:user.vm.", "rule 1: incomplete rule")]
    [InlineData(":ok:all:::  :bad", "rule 2: incomplete rule")]
    [InlineData(":frob:all:::", "rule 1: type 'frob' is not one of prefix, ok, bad, unsupported, map")]
    [InlineData(":ok:everywhere:::", "rule 1: scope 'everywhere' is not one of all, client, server")]
    [InlineData(":map::user.a.: :ok:all:::", "rule 2: a 'map' rule must be the only map rule and the last rule")]
    [InlineData(":map::user.a.: :map::user.b.:", "rule 2: a 'map' rule")]
    [InlineData(":prefix:client:trusted.:user.virtiofs.:", "no rule matches every guest name")]
    [InlineData(":prefix:all::user.virtiofs.:", "no rule matches every host name")]
    [InlineData(":ok:client::: :bad:server::security.:", "no rule matches every host name")]
    public void Bad_maps_are_refused_with_the_reason(string text, string reason)
    {
        Assert.False(XattrMap.TryParse(text, out XattrMap? map, out string error));
        Assert.Null(map);
        Assert.Contains(reason, error, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error);
        Assert.Throws<FormatException>(() => XattrMap.Parse(text));
    }

    [Fact]
    public void Random_text_never_throws()
    {
        var rng = new Random(1234);
        const string alphabet = ":/ \n\tabcdeklmnoprstuvxy.";
        for (int i = 0; i < 5000; i++)
        {
            var chars = new char[rng.Next(0, 40)];
            for (int j = 0; j < chars.Length; j++) chars[j] = alphabet[rng.Next(alphabet.Length)];
            string text = new(chars);
            if (XattrMap.TryParse(text, out XattrMap? m, out _))
            {
                Client(m, "user.x");
                Server(m, "user.x", "security.y");
            }
        }
    }
}
