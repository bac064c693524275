using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.CommandLine;
using Xunit;

namespace VirtioFs.Daemon.Tests;

public class OptionParserTests
{
    [Fact]
    public void Kata_go_runtime_command_line_is_accepted_unchanged()
    {
        // src/runtime/virtcontainers/virtiofsd.go: args, then virtio_fs_extra_args (default below).
        var o = OptionParser.Parse(["--syslog", "--cache=auto", "--shared-dir=/run/kata/shared", "--fd=3",
            "--thread-pool-size=1", "--announce-submounts"]);
        Assert.True(o.Syslog);
        Assert.Equal(CacheMode.Auto, o.Cache);
        Assert.Equal("/run/kata/shared", o.SharedDir);
        Assert.Equal(3, o.ListenFd);
        Assert.Null(o.SocketPath);
        Assert.Equal(1, o.ThreadPoolSize);
        Assert.True(o.AnnounceSubmounts);
    }

    [Fact]
    public void Kata_rust_runtime_command_line_is_accepted_unchanged()
    {
        // runtime-rs share_virtio_fs_standalone.rs: space-separated values, -o announce_submounts, --xattr.
        var o = OptionParser.Parse(["--socket-path", "/run/vc/vm/x/vhost-fs.sock", "--shared-dir", "/run/kata/x/shared",
            "--cache", "never", "--thread-pool-size=1", "-o", "announce_submounts", "--xattr"]);
        Assert.Equal("/run/vc/vm/x/vhost-fs.sock", o.SocketPath);
        Assert.Equal(CacheMode.Never, o.Cache);
        Assert.True(o.AnnounceSubmounts);
        Assert.True(o.Xattr);
    }

    [Theory]
    [InlineData("--id", "d7f1b2c3")]
    [InlineData("--id=d7f1b2c3", null)]
    public void Daemon_id_is_taken_in_both_forms(string flag, string? value)
    {
        // nydusd --id (src/bin/nydusd/main.rs, on every subcommand); nydus-snapshotter passes its daemon id
        // (pkg/daemon/command/command.go) and finds it again as "id" in GET /api/v1/daemon.
        string[] args = value is null ? ["--apisock", "/run/api.sock", "--sock", "/run/vhost.sock", flag] : ["--apisock", "/run/api.sock", "--sock", "/run/vhost.sock", flag, value];
        Assert.Equal("d7f1b2c3", OptionParser.Parse(args).DaemonId);
        Assert.Null(OptionParser.Parse(["--apisock", "/run/api.sock", "--sock", "/run/vhost.sock"]).DaemonId);
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--apisock", "/run/api.sock", "--sock", "/run/vhost.sock", "--id"]));
    }

    [Fact]
    public void Legacy_o_options_are_accepted()
    {
        var o = OptionParser.Parse(["--socket-path=/tmp/s", "-o", "source=/srv,cache=always,xattr,no_posix_lock,flock", "-f"]);
        Assert.Equal("/srv", o.SharedDir);
        Assert.Equal(CacheMode.Always, o.Cache);
        Assert.True(o.Xattr);
        Assert.False(o.PosixLock);
        Assert.True(o.Flock);
    }

    [Theory]
    [InlineData("none", CacheMode.Never)]
    [InlineData("never", CacheMode.Never)]
    [InlineData("metadata", CacheMode.Metadata)]
    public void Cache_modes_parse(string value, CacheMode expected) =>
        Assert.Equal(expected, OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--cache=" + value]).Cache);

    [Theory]
    [InlineData("--bogus")]
    [InlineData("--cache=sometimes")]
    [InlineData("--thread-pool-size=-1")]
    [InlineData("--thread-pool-size=lots")]
    [InlineData("-o", "cache=auto,frobnicate")]
    [InlineData("--tag=0123456789012345678901234567890123456")]
    [InlineData("--xattr=yes")]
    [InlineData("stray")]
    public void Bad_arguments_are_one_line_errors(params string[] extra)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", .. extra]));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Socket_and_directory_are_required_unless_only_asking()
    {
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--shared-dir=/d"]));
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s"]));
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--socket-path=/s", "--fd=3", "--shared-dir=/d"]));
        Assert.True(OptionParser.Parse(["--print-capabilities"]).PrintCapabilities);
        Assert.True(OptionParser.Parse(["--help"]).ShowHelp);
    }

    [Fact]
    public void Log_level_and_debug()
    {
        Assert.Equal(LogLevel.Warning, OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--log-level", "warn"]).LogLevel);
        Assert.Equal(LogLevel.Debug, OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "-d"]).LogLevel);
        Assert.Equal(LogLevel.Error, OptionParser.Parse(["--socket-path=/s", "-o", "source=/d,log_level=err"]).LogLevel);
    }

    [Fact]
    public void Server_options_follow_virtiofsd_cache_rules()
    {
        var never = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--cache=never"]);
        Assert.False(DaemonHost.ServerOptions(never).ReadDirPlus);
        var auto = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--writeback"]);
        Assert.True(DaemonHost.ServerOptions(auto).ReadDirPlus);
        Assert.True(DaemonHost.ServerOptions(auto).WritebackCache);
        var ro = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--writeback", "--readonly"]);
        Assert.False(DaemonHost.ServerOptions(ro).WritebackCache);
    }

    [Fact]
    public void Image_over_virtio_fs_takes_bootstrap_blob_dir_and_storage_flags()
    {
        var o = OptionParser.Parse(["--bootstrap", "/img/bootstrap", "--blob-dir=/img/blobs", "--socket-path", "/s",
            "--cache-dir", "/c", "--verify=always", "--prefetch-files", "/list", "--root-digest", new string('a', 64), "--trust-key", "/k.pub"]);
        Assert.Equal(DaemonMode.VhostUser, o.Mode);
        Assert.True(o.ServesImage);
        Assert.Equal("/img/bootstrap", o.Bootstrap);
        Assert.Equal("/img/blobs", o.BlobDir);
        Assert.Equal("/c", o.CacheDir);
        Assert.Equal(VerifyOption.Always, o.Verify);
        Assert.Equal("/list", o.PrefetchFilesList);
        Assert.Equal(Enumerable.Repeat((byte)0xAA, 32), o.RootDigest);
        Assert.Equal("/k.pub", o.TrustKeyFile);
        Assert.Null(o.SharedDir);
    }

    [Fact]
    public void Mount_subcommand_takes_a_mount_point()
    {
        var o = OptionParser.Parse(["mount", "--bootstrap", "/b", "--blob-dir", "/d", "--prefetch-all", "/mnt/x"]);
        Assert.Equal(DaemonMode.FuseMount, o.Mode);
        Assert.Equal("/mnt/x", o.MountPoint);
        Assert.True(o.PrefetchAll);
        var c = OptionParser.Parse(["mount", "--bootstrap", "/b", "--config", "/nydusd.json", "/mnt/x"]);
        Assert.Equal("/nydusd.json", c.ConfigFile);
        Assert.Null(c.BlobDir);
    }

    [Theory]
    [InlineData("mount", "--bootstrap", "/b", "--blob-dir", "/d")]                                   // no mount point
    [InlineData("mount", "--blob-dir", "/d", "/mnt")]                                                // no bootstrap
    [InlineData("mount", "--bootstrap", "/b", "--blob-dir", "/d", "/mnt", "/other")]                // two mount points
    [InlineData("mount", "--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "/mnt")]   // socket in mount mode
    [InlineData("--bootstrap", "/b", "--blob-dir", "/d", "--shared-dir", "/x", "--socket-path", "/s")]
    [InlineData("--bootstrap", "/b", "--socket-path", "/s")]                                         // no blobs
    [InlineData("--shared-dir", "/x", "--socket-path", "/s", "--cache-dir", "/c")]                   // image flag without image
    [InlineData("--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "--verify", "sometimes")]
    [InlineData("--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "--root-digest", "abc")]
    [InlineData("--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "--prefetch-all", "--no-prefetch")]
    [InlineData("--shared-dir", "/x", "--socket-path", "/s", "--no-prefetch-libs")]                   // nothing to prefetch for
    public void Bad_image_command_lines_are_one_line_errors(params string[] args)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(args));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void No_prefetch_libs_turns_the_library_prefetch_off_and_it_is_on_by_default()
    {
        var on = OptionParser.Parse(["--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s"]);
        Assert.Equal(VirtioFs.RafsFs.DependencyPrefetch.Remote, VirtioFs.Daemon.Images.ImageOptions.From(on).PrefetchLibraries);
        var off = OptionParser.Parse(["--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "--no-prefetch-libs"]);
        Assert.True(off.NoPrefetchLibraries);
        Assert.Equal(VirtioFs.RafsFs.DependencyPrefetch.Off, VirtioFs.Daemon.Images.ImageOptions.From(off).PrefetchLibraries);
    }

    [Fact]
    public void Image_server_offers_no_writeback_or_locks()
    {
        var o = OptionParser.Parse(["--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "--writeback"]);
        var s = DaemonHost.ImageServerOptions(o);
        Assert.False(s.WritebackCache);
        Assert.False(s.PosixLocks);
        Assert.True(s.ReadDirPlus);
    }
}

public class ApiSocketOptionTests
{
    [Fact]
    public void Nydusd_style_command_line_needs_no_directory()
    {
        var o = OptionParser.Parse(["--apisock", "/run/nydusd/api.sock", "--sock", "/run/vhost-fs.sock"]);
        Assert.Equal("/run/nydusd/api.sock", o.ApiSocket);
        Assert.Equal("/run/vhost-fs.sock", o.SocketPath);
    }

    [Fact]
    public void Api_mode_refuses_a_fixed_directory_or_image()
    {
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--apisock=/a", "--sock=/s", "--shared-dir=/d"]));
        Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["--apisock=/a"]));
    }
}

/// <summary>
/// The launch forms of Kata's nydusd mode and the virtiofsd 1.13 flags a Kata user may put in virtio_fs_extra_args:
/// each is honoured (and the option it sets is checked) or refused with a one-line error, never silently ignored.
/// </summary>
public class LaunchFormOptionTests
{
    private static readonly string[] Base = ["--socket-path=/s", "--shared-dir=/d"];

    private static void Refused(string expectedFragment, params string[] args)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(args));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(expectedFragment, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Nydusd_virtiofs_subcommand_of_the_go_runtime()
    {
        // kata-containers src/runtime/virtcontainers/nydusd.go, nydusd.args().
        var o = OptionParser.Parse(["virtiofs", "--log-level", "info", "--apisock", "/run/vc/x/nydusd-api.sock", "--sock", "/run/vc/x/vhost-fs.sock"]);
        Assert.True(o.NydusVirtiofs);
        Assert.False(o.HybridMode);
        Assert.Equal(LogLevel.Information, o.LogLevel);
        Assert.Equal("/run/vc/x/nydusd-api.sock", o.ApiSocket);
        Assert.Equal("/run/vc/x/vhost-fs.sock", o.SocketPath);
        Assert.Equal(DaemonMode.VhostUser, o.Mode);
    }

    [Fact]
    public void Nydusd_virtiofs_subcommand_of_runtime_rs_with_hybrid_mode_and_equals_forms()
    {
        // kata-containers src/runtime-rs/crates/resource/src/share_fs/nydus/nydus_daemon.rs, build_args(); clap in
        // nydus src/bin/nydusd/main.rs takes --flag=value as well as --flag value.
        var o = OptionParser.Parse(["virtiofs", "--hybrid-mode", "--log-level=debug", "--apisock=/a.sock", "--sock=/s.sock"]);
        Assert.True(o.HybridMode);
        Assert.Equal(LogLevel.Debug, o.LogLevel);
        Assert.Equal("/a.sock", o.ApiSocket);
        Assert.Equal("/s.sock", o.SocketPath);
    }

    [Fact]
    public void Nydusd_forms_that_are_not_built_are_refused_by_name()
    {
        Refused("virtiofs", "--hybrid-mode", "--apisock", "/a", "--sock", "/s");          // only under `virtiofs`
        Refused("--hybrid-mode", "virtiofs", "--hybrid-mode=yes", "--apisock", "/a", "--sock", "/s");
        Refused("--sock", "virtiofs", "--apisock", "/a", "--fd=3");                        // nydusd's virtiofs has no --fd
        Refused("EROFS over fscache", "singleton", "--fscache", "/var/lib/nydus/cache", "--apisock", "/a");
        Refused("EROFS over fscache", "singleton", "--fscache=/var/lib/nydus/cache");
        Refused("singleton", "singleton", "--apisock", "/a");
    }

    [Fact]
    public void Virtiofsd_flags_that_are_honoured_set_their_option()
    {
        var o = OptionParser.Parse([.. Base, "--cache=never", "--allow-mmap", "--allow-direct-io", "--preserve-noatime",
            "--announce-submounts", "--no-announce-submounts", "--socket-group", "kvm", "--inode-file-handles=never", "-f"]);
        Assert.True(o.AllowMmap);
        Assert.True(DaemonHost.ServerOptions(o).DirectIoAllowMmap);
        Assert.True(o.AllowDirectIo);
        Assert.True(o.PreserveNoatime);
        Assert.False(o.AnnounceSubmounts);
        Assert.Equal("kvm", o.SocketGroup);
        Assert.False(DaemonHost.ServerOptions(OptionParser.Parse(Base)).DirectIoAllowMmap);
        Assert.Equal("/old", OptionParser.Parse(["--socket=/old", "--shared-dir=/d"]).SocketPath); // virtiofsd's deprecated name
    }

    [Fact]
    public void Legacy_o_options_are_honoured_or_refused()
    {
        var o = OptionParser.Parse(["--socket-path=/s", "-o", "source=/d,readonly,rw,allow_direct_io,loglevel=debug"]);
        Assert.False(o.ReadOnly);
        Assert.True(o.AllowDirectIo);
        Assert.Equal(LogLevel.Debug, o.LogLevel);
        Assert.False(OptionParser.Parse(["--socket-path=/s", "-o", "source=/d,allow_direct_io,no_allow_direct_io"]).AllowDirectIo);
        Refused("--thread-pool-size", "--socket-path=/s", "-o", "source=/d,max_idle_threads=4");
        Refused("--cache", "--socket-path=/s", "-o", "source=/d,timeout=5");
    }

    [Theory]
    [InlineData("live migration", "--migration-mode=find-paths")]
    [InlineData("live migration", "--migration-mode", "file-handles")]
    [InlineData("live migration", "--migration-on-error=guest-error")]
    [InlineData("live migration", "--migration-verify-handles")]
    [InlineData("live migration", "--migration-confirm-paths")]
    [InlineData("foreground", "--daemonize")]
    [InlineData("O_PATH", "--inode-file-handles=prefer")]
    [InlineData("O_PATH", "--inode-file-handles=mandatory")]
    [InlineData("O_PATH", "--inode-file-handles=fallback")]
    [InlineData("not one of", "--inode-file-handles=sometimes")]
    [InlineData("takes no value", "--allow-mmap=yes")]
    [InlineData("takes no value", "--preserve-noatime=1")]
    public void Virtiofsd_flags_that_are_not_built_are_refused(string expectedFragment, params string[] extra) =>
        Refused(expectedFragment, [.. Base, .. extra]);

    [Fact]
    public void Socket_group_needs_a_socket_path()
    {
        // virtiofsd: --socket-group conflicts_with --fd.
        Refused("--socket-path", "--fd=3", "--shared-dir=/d", "--socket-group=kvm");
    }
}

/// <summary>
/// <c>vfsd fuse</c>: nydusd's fuse subcommand as nydus-snapshotter builds it (pkg/manager/daemon_adaptor.go
/// BuildDaemonCommand, pkg/daemon/command/command.go BuildCommand: "--name value" pairs, subcommand first), with the
/// flag semantics of nydusd's clap parser (dragonflyoss/nydus src/bin/nydusd/main.rs).
/// </summary>
public class FuseSubcommandOptionTests
{
    [Fact]
    public void Snapshotter_dedicated_daemon_command_line_is_accepted()
    {
        // daemon_adaptor.go, dedicated: mode, mountpoint, thread-num, config, bootstrap, prefetch-files, log-level,
        // apisock, log-rotation-size, log-file (in DaemonCommand field order; failover flags belong to another change).
        var o = OptionParser.Parse(["fuse", "--thread-num", "4", "--config", "/var/lib/nydus/config/d1/config.json",
            "--bootstrap", "/var/lib/nydus/snapshots/7/fs/image/image.boot", "--mountpoint", "/var/lib/nydus/snapshots/7/mnt",
            "--apisock", "/var/lib/nydus/socket/d1/api.sock", "--log-level", "info", "--log-rotation-size", "100",
            "--log-file", "/var/lib/nydus/logs/d1/nydusd.log", "--prefetch-files", "/var/lib/nydus/prefetch.list"]);
        Assert.Equal(DaemonMode.NydusFuse, o.Mode);
        Assert.Equal(4, o.FuseThreads);
        Assert.Equal("/var/lib/nydus/config/d1/config.json", o.ConfigFile);
        Assert.Equal("/var/lib/nydus/snapshots/7/fs/image/image.boot", o.Bootstrap);
        Assert.Equal("/var/lib/nydus/snapshots/7/mnt", o.MountPoint);
        Assert.Equal("/var/lib/nydus/socket/d1/api.sock", o.ApiSocket);
        Assert.Equal(LogLevel.Information, o.LogLevel);
        Assert.Equal(100UL, o.LogRotationSizeMiB);
        Assert.Equal("/var/lib/nydus/logs/d1/nydusd.log", o.LogFile);
        Assert.Equal("/var/lib/nydus/prefetch.list", o.PrefetchFilesList);
        Assert.True(o.ServesImage);
    }

    [Fact]
    public void Snapshotter_shared_daemon_command_line_is_accepted()
    {
        // daemon_adaptor.go, shared: no config, no bootstrap; images come through POST /api/v1/mount.
        var o = OptionParser.Parse(["fuse", "--thread-num", "8", "--mountpoint", "/var/lib/nydus/mnt",
            "--log-level", "warn", "--apisock", "/var/lib/nydus/socket/shared/api.sock"]);
        Assert.Equal(DaemonMode.NydusFuse, o.Mode);
        Assert.False(o.ServesImage);
        Assert.Equal(8, o.FuseThreads);
        Assert.Equal(LogLevel.Warning, o.LogLevel);
        Assert.Null(o.LogFile);
        Assert.Equal(0UL, o.LogRotationSizeMiB);
    }

    [Fact]
    public void Equals_form_short_options_and_aliases_work_as_in_clap()
    {
        var a = OptionParser.Parse(["fuse", "--thread-num=2", "--mountpoint=/m", "--apisock=/a.sock", "--log-file=/l/x.log", "--log-rotation-size=5"]);
        Assert.Equal((2, "/m", "/a.sock", "/l/x.log", 5UL), (a.FuseThreads, a.MountPoint, a.ApiSocket, a.LogFile, a.LogRotationSizeMiB));
        // nydusd names the flag fuse-threads, thread-num being its alias; short forms -M -A -B -C -D -l -L (clap: -M v, -Mv, -M=v).
        var b = OptionParser.Parse(["fuse", "--fuse-threads", "3", "-M", "/m", "-A=/a.sock", "-B/boot", "-C", "/c.json", "-l", "debug", "-L/l.log"]);
        Assert.Equal((3, "/m", "/a.sock", "/boot", "/c.json", LogLevel.Debug, "/l.log"),
            (b.FuseThreads, b.MountPoint, b.ApiSocket, b.Bootstrap, b.ConfigFile, b.LogLevel, b.LogFile));
        var c = OptionParser.Parse(["fuse", "-M", "/m", "-B", "/boot", "-D", "/blobs", "-m", "/"]);
        Assert.Equal("/blobs", c.BlobDir);
    }

    [Fact]
    public void Thread_num_defaults_to_four_as_in_nydusd()
    {
        Assert.Equal(4, OptionParser.Parse(["fuse", "--mountpoint", "/m", "--apisock", "/a"]).FuseThreads);
        Assert.Equal(1024, OptionParser.Parse(["fuse", "--mountpoint", "/m", "--apisock", "/a", "--thread-num", "1024"]).FuseThreads);
    }

    [Fact]
    public void Log_file_and_rotation_are_global_flags()
    {
        // nydusd declares them global(true): they work with any mode.
        var o = OptionParser.Parse(["--socket-path=/s", "--shared-dir=/d", "--log-file", "/tmp/v.log", "--log-rotation-size", "0"]);
        Assert.Equal("/tmp/v.log", o.LogFile);
        Assert.Equal(0UL, o.LogRotationSizeMiB);
    }

    [Theory]
    // Each a one-line UsageException, so vfsd exits 2 with the reason.
    [InlineData("fuse", "--apisock", "/a")]                                                   // clap: --mountpoint is required
    [InlineData("fuse", "--mountpoint", "/m")]                                                 // neither an image nor an API to mount one through
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--thread-num", "0")]         // validate_threads_configuration: 1-1024
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--thread-num", "1025")]
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--thread-num", "four")]
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--log-rotation-size", "-1")]
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--log-rotation-size", "17592186044416")] // N MiB must fit 64 bits
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--log-file", "")]
    [InlineData("fuse", "--mountpoint", "/m", "--bootstrap", "/b", "--config", "/c", "--backend-source", "http://127.0.0.1:8080/api/v1/daemons/d1/backend")]
    [InlineData("fuse", "--mountpoint", "/m", "--bootstrap", "/b", "--config", "/c", "--writable")]
    [InlineData("fuse", "--mountpoint", "/m", "--bootstrap", "/b", "--config", "/c", "--virtual-mountpoint", "/sub")]
    [InlineData("fuse", "--mountpoint", "/m", "--bootstrap", "/b", "--config", "/c", "--localfs-dir", "/blobs")] // clap conflicts_with
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--prefetch-files", "/p")]   // clap requires("bootstrap")
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--config", "/c")]           // a shared daemon takes configs per mount
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--sock", "/vhost.sock")]    // vhost-user is the virtiofs subcommand's
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "--shared-dir", "/d")]
    [InlineData("fuse", "--mountpoint", "/m", "--apisock", "/a", "/extra")]
    [InlineData("fuse", "--mountpoint")]
    [InlineData("--socket-path=/s", "--shared-dir=/d", "--mountpoint", "/m")]                 // fuse flags outside vfsd fuse
    [InlineData("--socket-path=/s", "--shared-dir=/d", "--thread-num", "4")]
    [InlineData("--socket-path=/s", "--shared-dir=/d", "--syslog", "--log-file", "/l.log")]      // one log destination
    [InlineData("mount", "--bootstrap", "/b", "--blob-dir", "/d", "-M", "/m", "/mnt")]         // nydusd short options only in vfsd fuse
    public void Bad_fuse_command_lines_are_one_line_errors(params string[] args)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(args));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Backend_source_refusal_says_why()
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["fuse", "--mountpoint", "/m", "--bootstrap", "/b",
            "--config", "/c", "--backend-source", "http://x/api/v1/daemons/d/backend"]));
        Assert.Contains("--backend-source", e.Message, StringComparison.Ordinal);
        Assert.Contains("enable_backend_source", e.Message, StringComparison.Ordinal);
    }
}

/// <summary>The failover flags on nydus-snapshotter's fuse argv (pkg/manager/daemon_adaptor.go adds --supervisor and
/// --id with recover_policy failover, and --failover-policy to every fusedev daemon, shared ones included).</summary>
public class FuseFailoverOptionTests
{
    [Fact]
    public void A_dedicated_daemon_takes_the_failover_flags()
    {
        var o = OptionParser.Parse(["fuse", "--upgrade", "--thread-num", "4", "--id", "d1", "--config", "/c.json", "--bootstrap", "/b",
            "--mountpoint", "/m", "--apisock", "/a.sock", "--log-level", "info", "--supervisor", "/s.sock", "--failover-policy", "flush"]);
        Assert.True(o.Upgrade);
        Assert.Equal("/s.sock", o.Supervisor);
        Assert.Equal(FailoverPolicy.Flush, o.FailoverPolicy);
        Assert.Equal("d1", o.DaemonId);
    }

    [Fact]
    public void A_shared_daemon_takes_the_policy_but_refuses_a_supervisor()
    {
        var o = OptionParser.Parse(["fuse", "--thread-num", "4", "--mountpoint", "/m", "--apisock", "/a.sock", "--failover-policy", "resend"]);
        Assert.Equal(FailoverPolicy.Resend, o.FailoverPolicy);
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(["fuse", "--mountpoint", "/m", "--apisock", "/a.sock",
            "--supervisor", "/s.sock", "--id", "shared", "--failover-policy", "resend"]));
        Assert.Contains("dedicated", e.Message, StringComparison.Ordinal);
    }
}
