using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Sandbox;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// The sandbox options (Rust virtiofsd 1.13 src/main.rs: --sandbox, --seccomp, --modcaps, -o sandbox=) and the rules
/// that pick a sandbox per serving mode. What the kernel then enforces is checked against the published vfsd in
/// VirtioFs.Integration.Tests.SandboxTests.
/// </summary>
public class SandboxPolicyTests
{
    private static ImageFiles LocalImage() => new("/img/bootstrap", "/img/blobs", null, "/var/cache/vfs", Registry: false);
    private static ImageFiles NoImage() => throw new InvalidOperationException("a passthrough reads no image");

    private static SandboxPlan Resolve(string[] args, bool root = true, bool hasSandbox = true, Func<ImageFiles>? image = null) =>
        SandboxPolicy.Resolve(OptionParser.Parse(args), root, hasSandbox, image ?? NoImage);

    [Fact]
    public void Options_parse_as_virtiofsd_spells_them()
    {
        var o = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--sandbox=chroot", "--seccomp", "log", "--modcaps=+sys_admin:-MKNOD:+cap_dac_read_search"]);
        Assert.Equal(SandboxMode.Chroot, o.Sandbox);
        Assert.Equal(SeccompAction.Log, o.Seccomp);
        Assert.Equal([(21, true), (27, false), (2, true)], o.ModCaps);
        // The C virtiofsd's legacy form, as benchmarks/virtiofs-e2e.sh starts it.
        Assert.Equal(SandboxMode.None, OptionParser.Parse(["--socket-path=/s", "-o", "source=/d,sandbox=none"]).Sandbox);
    }

    [Theory]
    [InlineData("--sandbox=jail")]
    [InlineData("--seccomp=allow")]
    [InlineData("--modcaps=sys_admin")]
    [InlineData("--modcaps=+not_a_cap")]
    [InlineData("--modcaps=")]
    public void Bad_values_are_refused(string arg)
    {
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", arg]));
    }

    [Fact]
    public void Passthrough_defaults_to_namespace_seccomp_kill_and_virtiofsds_capabilities()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--shared-dir=/srv/share"]);
        Assert.Equal(SandboxMode.Namespace, plan.Mode);
        Assert.Equal(SeccompAction.Kill, plan.Seccomp);
        Assert.Equal("/srv/share", plan.Root);
        Assert.True(plan.NewNetNamespace);
        Assert.Equal("CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETGID,SETUID,MKNOD,SETFCAP", Capabilities.Describe(plan.KeepCaps!.Value));
        // capability(7) numbering: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, SETGID 6, SETUID 7, MKNOD 27, SETFCAP 31.
        Assert.Equal(0x880000dbUL, plan.KeepCaps);
    }

    [Fact]
    public void Modcaps_change_the_kept_set_in_order()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--shared-dir=/d", "--modcaps=+sys_admin:-mknod:-setfcap:+setfcap"]);
        Assert.Equal("CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETGID,SETUID,SYS_ADMIN,SETFCAP", Capabilities.Describe(plan.KeepCaps!.Value));
    }

    [Fact]
    public void Sandbox_none_with_seccomp_none_is_no_sandbox_only_when_not_root()
    {
        Assert.True(Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=none", "--seccomp=none"], root: false).IsNoop);
        // As root the capabilities are still dropped (virtiofsd does so in every sandbox mode).
        SandboxPlan root = Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=none", "--seccomp=none"]);
        Assert.False(root.IsNoop);
        Assert.Null(root.Root);
    }

    [Fact]
    public void Local_image_gets_a_tmpfs_root_with_only_its_files_parents_first()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--bootstrap=/img/bootstrap", "--blob-dir=/img/blobs", "--cache-dir=/var/cache/vfs",
            "--apisock=/run/vfs/api.sock"], image: LocalImage);
        Assert.Equal(SandboxMode.Namespace, plan.Mode);
        Assert.Null(plan.Root);
        Assert.Equal(0UL, plan.KeepCaps);
        Assert.Equal([("/run/vfs", false), ("/img/blobs", true), ("/var/cache/vfs", false), ("/img/bootstrap", true)], plan.Binds);
    }

    [Fact]
    public void Registry_image_gets_a_tmpfs_root_with_its_cache_and_the_hosts_resolver_and_certificates_but_the_hosts_network()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--image=localhost:5000/app:1", "--cache-dir=/var/cache/vfs"],
            image: () => new ImageFiles(null, null, null, "/var/cache/vfs", Registry: true, ["/etc/resolv.conf", "/etc/ssl/certs", "/root/.docker/config.json"]));
        Assert.Equal(SandboxMode.Namespace, plan.Mode);
        Assert.Null(plan.Root);
        Assert.False(plan.NewNetNamespace);
        Assert.True(plan.PreloadTls);
        Assert.Equal(0UL, plan.KeepCaps);
        Assert.Equal(SeccompAction.Kill, plan.Seccomp);
        Assert.Contains("network", plan.Note, StringComparison.Ordinal);
        Assert.Equal([("/var/cache/vfs", false), ("/etc/ssl/certs", true), ("/etc/resolv.conf", true), ("/root/.docker/config.json", true)], plan.Binds);
        // A local image keeps the network namespace and loads nothing early.
        SandboxPlan local = Resolve(["--socket-path=/s", "--bootstrap=/img/bootstrap", "--blob-dir=/img/blobs"], image: LocalImage);
        Assert.True(local.NewNetNamespace);
        Assert.False(local.PreloadTls);
    }

    [Fact]
    public void A_path_inside_a_directory_already_bound_is_not_bound_again()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--bootstrap=/img/blobs/bootstrap", "--blob-dir=/img/blobs"],
            image: () => new ImageFiles("/img/blobs/bootstrap", "/img/blobs", null, null, false));
        Assert.Equal([("/img/blobs", true)], plan.Binds);
    }

    [Fact]
    public void Modes_that_cannot_be_confined_default_to_none_and_refuse_more()
    {
        // vfsd mount: the mount must appear in the host's mount namespace.
        Assert.True(Resolve(["mount", "--bootstrap=/b", "--blob-dir=/d", "/mnt"], image: LocalImage).IsNoop);
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["mount", "--bootstrap=/b", "--blob-dir=/d", "--sandbox=namespace", "/mnt"]));
        // --apisock: mounts are named by host path at run time.
        SandboxPlan api = Resolve(["--socket-path=/s", "--apisock=/run/api.sock"]);
        Assert.Equal(SandboxMode.None, api.Mode);
        Assert.Equal(SeccompAction.Kill, api.Seccomp);
        Assert.NotNull(api.Note);
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--apisock=/run/api.sock", "--sandbox=chroot"]));
        // chroot needs one directory.
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--image=localhost:5000/app:1", "--cache-dir=/c", "--sandbox=chroot"],
            image: () => new ImageFiles(null, null, null, "/c", Registry: true)));
        // chroot needs one directory.
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--bootstrap=/b", "--blob-dir=/d", "--sandbox=chroot"], image: LocalImage));
    }

    [Fact]
    public void Without_root_or_without_the_sandbox_build_explicit_requests_are_refused()
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=chroot"], root: false));
        Assert.Contains("root", e.Message, StringComparison.Ordinal);
        Assert.True(Resolve(["--socket-path=/s", "--shared-dir=/d"], hasSandbox: false).IsNoop);
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--seccomp=kill"], hasSandbox: false));
    }

    [Fact]
    public void Uid_and_gid_maps_parse_as_virtiofsd_idmap_rs_does()
    {
        // virtiofsd src/main.rs --uid-map/--gid-map ":namespace_uid:host_uid:count:", repeatable; src/idmap.rs takes
        // any non-alphanumeric delimiter, the same at both ends.
        var o = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--uid-map=:0:100000:65536:", "--uid-map", "/65536/1000/1/",
            "--gid-map", ":0:100000:65536:"]);
        Assert.Equal([new NamespaceIdMap(0, 100000, 65536), new NamespaceIdMap(65536, 1000, 1)], o.UidMaps);
        Assert.Equal([new NamespaceIdMap(0, 100000, 65536)], o.GidMaps);
        Assert.Equal("0 100000 65536\n65536 1000 1\n", IdMaps.ToProcText(o.UidMaps));
    }

    [Theory]
    [InlineData("--uid-map=")]
    [InlineData("--uid-map=:0:1000:")]            // two values
    [InlineData("--uid-map=:0:1000:1:2:")]        // four values
    [InlineData("--uid-map=0:1000:1:")]           // does not start with the delimiter
    [InlineData("--uid-map=:0:1000:1/")]          // ends with another one
    [InlineData("--gid-map=x0x1000x1x")]          // alphanumeric delimiter
    [InlineData("--gid-map=:a:1000:1:")]
    [InlineData("--gid-map=:-1:1000:1:")]
    [InlineData("--gid-map=:0:4294967296:1:")]    // not a u32
    [InlineData("--uid-map=:0:1000:0:")]          // an empty range
    [InlineData("--uid-map=:4294967295:0:2:")]    // past 2^32
    [InlineData("--translate-uid=guest:1000:2000")]
    [InlineData("--translate-uid=guest:1000:2000:1:1")]
    [InlineData("--translate-uid=forbid-guest:0:1:1")]
    [InlineData("--translate-uid=user:0:1:1")]
    [InlineData("--translate-gid=guest")]
    [InlineData("--translate-gid=map:0:x:1")]
    [InlineData("--translate-gid=host:0:4294967295:2")]
    public void Malformed_id_maps_are_refused_with_one_line(string arg)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", arg]));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(arg[..arg.IndexOf('=', StringComparison.Ordinal)], e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Translations_parse_as_virtiofsd_soft_idmap_cmdline_rs_does()
    {
        // The type is matched case-insensitively; the separator is the first character not alphanumeric, '-' or '_'.
        var o = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--translate-uid=guest:1000:2000:10", "--translate-uid=HOST/0/1/5",
            "--translate-uid=squash-guest:100000:65534:65536", "--translate-gid=squash-host:5:6:7", "--translate-gid=map:0:100000:65536",
            "--translate-gid=forbid-guest:70000:20"]);
        Assert.Equal([new IdTranslation(IdTranslationKind.Guest, 1000, 2000, 10), new IdTranslation(IdTranslationKind.Host, 0, 1, 5),
            new IdTranslation(IdTranslationKind.SquashGuest, 100000, 65534, 65536)], o.TranslateUid);
        Assert.Equal([new IdTranslation(IdTranslationKind.SquashHost, 5, 6, 7), new IdTranslation(IdTranslationKind.Map, 0, 100000, 65536),
            new IdTranslation(IdTranslationKind.ForbidGuest, 70000, 0, 20)], o.TranslateGid);
        // main.rs: conflicts_with = "posix_acl"; and an image has no ids to translate.
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--posix-acl", "--translate-uid=map:0:1:1"]));
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--bootstrap=/b", "--blob-dir=/d", "--translate-gid=map:0:1:1"]));
    }

    [Fact]
    public void Translations_map_each_direction_as_virtiofsd_soft_idmap_does()
    {
        var o = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--translate-uid=map:1000:0:1", "--translate-uid=squash-guest:2000:65534:100",
            "--translate-uid=forbid-guest:3000:10", "--translate-uid=host:500:7000:5"]);
        VirtioFs.Passthrough.IdTranslator t = IdMaps.ToTranslator("--translate-uid", o.TranslateUid)!;
        Assert.True(t.TryToHost(1000, out uint h) && h == 0);          // map: guest 1000 is host 0 ...
        Assert.Equal(1000u, t.ToGuest(0));                              // ... and back
        Assert.True(t.TryToHost(2099, out h) && h == 65534);           // squash-guest
        Assert.Equal(65534u, t.ToGuest(65534));                         // one-way: not mapped back
        Assert.False(t.TryToHost(3009, out _));                         // forbid-guest: EPERM
        Assert.True(t.TryToHost(3010, out h) && h == 3010);            // outside every range: unchanged
        Assert.Equal(7004u, t.ToGuest(504));                            // host
        Assert.True(t.TryToHost(504, out h) && h == 504);
        Assert.Null(IdMaps.ToTranslator("--translate-gid", o.TranslateGid));
        // Overlapping ranges in one direction are refused (soft_idmap do_push), with one line.
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d",
            "--translate-gid=guest:0:100:10", "--translate-gid=forbid-guest:5:1"]));
        Assert.Contains("intersects", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--translate-gid=guest:0:100:10", "--translate-gid=host:5:1:1"]);
    }

    [Fact]
    public void Unprivileged_namespace_sandbox_is_a_user_namespace_with_the_maps()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--shared-dir=/srv/share", "--sandbox=namespace", "--uid-map=:0:100000:65536:",
            "--gid-map=:0:100000:65536:"], root: false);
        Assert.Equal(SandboxMode.Namespace, plan.Mode);
        Assert.True(plan.UserNamespace);
        Assert.Equal("/srv/share", plan.Root);
        Assert.Equal([new NamespaceIdMap(0, 100000, 65536)], plan.UidMaps);
        Assert.Equal([new NamespaceIdMap(0, 100000, 65536)], plan.GidMaps);
        // Root of its namespace, the daemon holds every capability there: cut to virtiofsd's list like a root daemon's.
        Assert.Equal(0x880000dbUL, plan.KeepCaps);
        // The maps alone ask for the namespace sandbox (virtiofsd's default mode).
        Assert.True(Resolve(["--socket-path=/s", "--shared-dir=/d", "--uid-map=:0:1000:1:"], root: false).UserNamespace);
        // No maps: the caller's own ids (the shim maps them).
        SandboxPlan own = Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=namespace"], root: false);
        Assert.True(own.UserNamespace);
        Assert.Empty(own.UidMaps);
        Assert.False(Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=namespace"]).UserNamespace);
    }

    [Fact]
    public void Unprivileged_default_is_virtiofsds_user_namespace_sandbox()
    {
        // virtiofsd src/main.rs: --sandbox defaults to namespace for every caller; src/sandbox.rs enter_namespace adds
        // CLONE_NEWUSER when geteuid() != 0 and setup_id_mappings maps the caller's own uid/gid when no map is given.
        SandboxPlan user = Resolve(["--socket-path=/s", "--shared-dir=/srv/share"], root: false);
        Assert.Equal(SandboxMode.Namespace, user.Mode);
        Assert.True(user.UserNamespace);
        Assert.Empty(user.UidMaps);
        Assert.Empty(user.GidMaps);
        Assert.Equal("/srv/share", user.Root);
        Assert.True(user.NewNetNamespace);
        Assert.Equal(SeccompAction.Kill, user.Seccomp);
        Assert.Equal(0x880000dbUL, user.KeepCaps);
        Assert.Contains("--sandbox none", user.Note, StringComparison.Ordinal);
        // An image gets the same tmpfs root, inside the user namespace.
        SandboxPlan image = Resolve(["--socket-path=/s", "--bootstrap=/img/bootstrap", "--blob-dir=/img/blobs"], root: false, image: LocalImage);
        Assert.True(image.UserNamespace);
        Assert.Equal(0UL, image.KeepCaps);
        Assert.Contains(("/img/bootstrap", true), image.Binds);
        // --sandbox none: no namespace, capabilities left alone (virtiofsd main.rs drops them only as root).
        SandboxPlan none = Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=none"], root: false);
        Assert.False(none.UserNamespace);
        Assert.Null(none.KeepCaps);
        // Where a mount sandbox cannot work the default steps back for the unprivileged too, with no user namespace.
        Assert.False(Resolve(["--socket-path=/s", "--shared-dir=/d", "--log-file=/tmp/l"], root: false).UserNamespace);
        Assert.False(Resolve(["--socket-path=/s", "--apisock=/a.sock"], root: false).UserNamespace);
    }

    [Fact]
    public void Id_maps_are_refused_where_virtiofsd_refuses_them()
    {
        // virtiofsd sandbox.rs enter(): SandboxModeInvalidUidMap (root, or not namespace) and SandboxModeInvalidUID.
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--uid-map=:0:0:1:"]));
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--gid-map=:0:1000:1:", "--sandbox=none"], root: false));
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=chroot"], root: false));
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["mount", "--bootstrap=/b", "--blob-dir=/d", "--uid-map=:0:1000:1:", "/mnt"], root: false, image: LocalImage));
    }

    [Fact]
    public void Nydus_fuse_mounts_on_the_host_like_vfsd_mount()
    {
        // nydus-snapshotter's dedicated and shared argv (pkg/manager/daemon_adaptor.go): the FUSE mount must be made in,
        // and stay visible from, the host's mount namespace, and mounting takes CAP_SYS_ADMIN.
        Assert.True(Resolve(["fuse", "--thread-num", "4", "--config", "/c.json", "--bootstrap", "/b", "--mountpoint", "/m",
            "--apisock", "/a.sock"], image: LocalImage).IsNoop);
        Assert.True(Resolve(["fuse", "--mountpoint", "/m", "--apisock", "/a.sock"]).IsNoop);
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["fuse", "--mountpoint", "/m", "--apisock", "/a.sock", "--seccomp=kill"]));
    }

    [Fact]
    public void A_log_file_outside_the_new_root_is_not_sandboxed_away()
    {
        SandboxPlan plan = Resolve(["--socket-path=/s", "--shared-dir=/d", "--log-file=/var/log/vfsd.log"]);
        Assert.Equal(SandboxMode.None, plan.Mode);
        Assert.Equal(SeccompAction.Kill, plan.Seccomp);
        Assert.Contains("--log-file", plan.Note, StringComparison.Ordinal);
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--log-file=/l", "--sandbox=namespace"]));
    }
}
