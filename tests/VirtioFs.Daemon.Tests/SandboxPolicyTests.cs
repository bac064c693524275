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
        // A registry backend needs the host's network and TLS library.
        SandboxPlan registry = Resolve(["--socket-path=/s", "--image=localhost:5000/app:1", "--cache-dir=/c"],
            image: () => new ImageFiles(null, null, null, "/c", Registry: true));
        Assert.Equal(SandboxMode.None, registry.Mode);
        Assert.Contains("network", registry.Note, StringComparison.Ordinal);
        // chroot needs one directory.
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--bootstrap=/b", "--blob-dir=/d", "--sandbox=chroot"], image: LocalImage));
    }

    [Fact]
    public void Without_root_or_without_the_sandbox_build_explicit_requests_are_refused()
    {
        SandboxPlan user = Resolve(["--socket-path=/s", "--shared-dir=/d"], root: false);
        Assert.Equal(SandboxMode.None, user.Mode);
        Assert.Null(user.KeepCaps);
        Assert.Equal(SeccompAction.Kill, user.Seccomp);
        var e = Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--sandbox=namespace"], root: false));
        Assert.Contains("root", e.Message, StringComparison.Ordinal);
        Assert.True(Resolve(["--socket-path=/s", "--shared-dir=/d"], hasSandbox: false).IsNoop);
        Assert.Throws<OptionParser.UsageException>(() => Resolve(["--socket-path=/s", "--shared-dir=/d", "--seccomp=kill"], hasSandbox: false));
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
