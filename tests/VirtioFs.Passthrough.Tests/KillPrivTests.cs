using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;
using static VirtioFs.Passthrough.Tests.TestInterop;

namespace VirtioFs.Passthrough.Tests;

/// <summary>
/// FUSE_HANDLE_KILLPRIV_V2 (fuse.h: "suid is always killed; sgid only if the file has group execute permission", on
/// write with FUSE_WRITE_KILL_SUIDGID, truncate and chown with FATTR_KILL_SUIDGID, open with O_TRUNC and
/// FUSE_OPEN_KILL_SUIDGID) and SGID inheritance on create (kernel inode_init_owner; CVE-2022-0358).
/// The daemon runs as root here, with CAP_FSETID: without our clearing the host kernel would keep every bit.
/// </summary>
public sealed class KillPrivTests : IDisposable
{
    private const ulong Root = FuseConstants.RootId;
    private static readonly FuseContext RootCtx = new(0, 0, 1, 1);
    /// <summary>A guest user who is not in group 0 (the daemon's own group and supplementary group here).</summary>
    private static readonly FuseContext UserCtx = new(1000, 1000, 2, 2);
    private const uint SUID = 0x800, SGID = 0x400;
    private readonly DirectoryInfo _tmp;
    private readonly PassthroughFileSystem _fs;

    public KillPrivTests()
    {
        _tmp = Directory.CreateTempSubdirectory("vfs-killpriv-");
        chmod(_tmp.FullName, 0x1FF);
        _fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _tmp.FullName }, NullLogger.Instance);
        _fs.Init(FuseInitFlags.HandleKillprivV2);
    }

    public void Dispose()
    {
        _fs.Dispose();
        _tmp.Delete(true);
    }

    private static byte[] N(string s) => Encoding.UTF8.GetBytes(s);
    private string P(string name) => Path.Combine(_tmp.FullName, name);
    private uint Mode(string name) => Lstat(P(name)).stx_mode & 0xFFFu;

    private ulong HostFile(string name, uint mode)
    {
        File.WriteAllText(P(name), "data");
        Assert.Equal(0, chmod(P(name), mode));
        Assert.Equal(mode, Mode(name));
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N(name), out FuseEntry e));
        return e.NodeId;
    }

    private unsafe int WriteOne(ulong node, uint writeFlags)
    {
        Assert.Equal(0, _fs.Open(UserCtx, node, (uint)O_WRONLY, 0, out FuseOpenResult h));
        byte[] data = N("x");
        fixed (byte* p = data)
        {
            IoSegment[] src = [new IoSegment(p, 1)];
            int rc = _fs.Write(UserCtx, node, h.Handle, 0, src, writeFlags, 0, out _);
            _fs.Release(UserCtx, node, h.Handle, 0, 0, 0);
            return rc;
        }
    }

    [Fact]
    public void A_write_with_kill_suidgid_clears_suid_and_executable_sgid()
    {
        ulong f = HostFile("f", SUID | SGID | 0x1ED); // 06755
        Assert.Equal(0, WriteOne(f, FuseConstants.FUSE_WRITE_KILL_SUIDGID));
        Assert.Equal(0x1EDu, Mode("f"));
    }

    [Fact]
    public void A_write_without_the_flag_keeps_the_bits()
    {
        // The guest sends no flag when its writer has CAP_FSETID (the owner's root, say): the bits stay, as on a host.
        ulong f = HostFile("f", SUID | SGID | 0x1ED);
        Assert.Equal(0, WriteOne(f, 0));
        Assert.Equal(SUID | SGID | 0x1ED, Mode("f"));
    }

    [Fact]
    public void Sgid_without_group_exec_is_kept_as_the_kernel_does()
    {
        // S_ISGID without S_IXGRP marks mandatory locking, not a set-group-ID program: should_remove_suid leaves it.
        ulong f = HostFile("f", SUID | SGID | 0x1E4); // 06744
        Assert.Equal(0, WriteOne(f, FuseConstants.FUSE_WRITE_KILL_SUIDGID));
        Assert.Equal(SGID | 0x1E4, Mode("f"));
    }

    [Fact]
    public void Truncate_with_kill_suidgid_clears()
    {
        ulong f = HostFile("f", SUID | SGID | 0x1ED);
        var s = new FuseSetattrIn { valid = FuseConstants.FATTR_SIZE | FuseConstants.FATTR_KILL_SUIDGID, size = 1 };
        Assert.Equal(0, _fs.SetAttr(UserCtx, f, s, out FuseAttr attr, out _));
        Assert.Equal(0x1EDu, attr.mode & 0xFFF);
        Assert.Equal(1L, new FileInfo(P("f")).Length);
    }

    [Fact]
    public void Chown_clears_suid_and_executable_sgid()
    {
        ulong f = HostFile("f", SUID | SGID | 0x1ED);
        var s = new FuseSetattrIn
        {
            valid = FuseConstants.FATTR_UID | FuseConstants.FATTR_GID | FuseConstants.FATTR_KILL_SUIDGID, uid = 1000, gid = 1000,
        };
        Assert.Equal(0, _fs.SetAttr(RootCtx, f, s, out FuseAttr attr, out _));
        Assert.Equal(0x1EDu, attr.mode & 0xFFF);
        Assert.Equal(1000u, Lstat(P("f")).stx_uid);
    }

    [Fact]
    public void Open_with_o_trunc_and_kill_suidgid_clears()
    {
        ulong f = HostFile("f", SUID | SGID | 0x1ED);
        Assert.Equal(0, _fs.Open(UserCtx, f, (uint)(O_WRONLY | O_TRUNC), FuseConstants.FUSE_OPEN_KILL_SUIDGID, out FuseOpenResult h));
        _fs.Release(UserCtx, f, h.Handle, 0, 0, 0);
        Assert.Equal(0x1EDu, Mode("f"));
        Assert.Equal(0L, new FileInfo(P("f")).Length);
    }

    [Fact]
    public void Nothing_is_cleared_when_killpriv_v2_was_not_negotiated()
    {
        // The guest kernel clears the bits itself then (a SETATTR of the mode); a stray flag must not act.
        using var fs = new PassthroughFileSystem(new PassthroughOptions { SharedDir = _tmp.FullName }, NullLogger.Instance);
        fs.Init(FuseInitFlags.None);
        File.WriteAllText(P("g"), "data");
        chmod(P("g"), SUID | SGID | 0x1ED);
        Assert.Equal(0, fs.Lookup(RootCtx, Root, N("g"), out FuseEntry e));
        var s = new FuseSetattrIn { valid = FuseConstants.FATTR_SIZE | FuseConstants.FATTR_KILL_SUIDGID, size = 0 };
        Assert.Equal(0, fs.SetAttr(UserCtx, e.NodeId, s, out _, out _));
        Assert.Equal(SUID | SGID | 0x1ED, Mode("g"));
    }

    // ---- SGID inheritance on create ------------------------------------------------------------------------------

    private ulong SgidDir(string name)
    {
        Directory.CreateDirectory(P(name));
        Assert.Equal(0, chown(P(name), 0, 0));
        Assert.Equal(0, chmod(P(name), SGID | 0x1FF)); // 02777 root:root
        Assert.Equal(0, _fs.Lookup(RootCtx, Root, N(name), out FuseEntry e));
        return e.NodeId;
    }

    /// <summary>
    /// Gives this test thread supplementary groups, as a daemon started from a root login shell has (this container
    /// runs with none, which would hide the bug); the raw system call changes only this thread. Restored on dispose.
    /// </summary>
    private sealed unsafe class ThreadGroups : IDisposable
    {
        private readonly uint[] _saved;

        public ThreadGroups(params uint[] groups)
        {
            int n = getgroups(0, null);
            _saved = new uint[Math.Max(n, 0)];
            fixed (uint* s = _saved) getgroups(_saved.Length, s);
            fixed (uint* g = groups) Assert.Equal(0, syscall(SysSetgroups, groups.Length, g));
        }

        public void Dispose()
        {
            fixed (uint* s = _saved) syscall(SysSetgroups, _saved.Length, s);
        }
    }

    [Fact]
    public void A_non_member_creating_in_an_sgid_directory_does_not_get_an_sgid_file()
    {
        // CVE-2022-0358: the daemon's supplementary group 0 must not make guest user 1000 a member of group 0.
        using var groups = new ThreadGroups(0, 4);
        ulong d = SgidDir("shared");
        Assert.Equal(0, _fs.Create(UserCtx, d, N("f"), SGID | 0x1ED, (uint)O_RDWR, 0, 0, out _, out FuseOpenResult h));
        _fs.Release(UserCtx, 0, h.Handle, 0, 0, 0);
        var st = Lstat(P("shared/f"));
        Assert.Equal(0u, st.stx_gid); // the directory's group is inherited...
        Assert.Equal(0x1EDu, st.stx_mode & 0xFFFu); // ...but not the SGID bit the caller asked for
        Assert.Equal(1000u, st.stx_uid);

        Assert.Equal(0, _fs.MkNod(UserCtx, d, N("n"), 0x8000 | SGID | 0x1ED, 0, 0, out _));
        Assert.Equal(0x1EDu, Mode("shared/n"));
    }

    [Fact]
    public void Members_and_root_keep_sgid_and_subdirectories_inherit_it()
    {
        ulong d = SgidDir("shared");
        var member = new FuseContext(1000, 0, 3, 3); // primary group 0: a member
        Assert.Equal(0, _fs.Create(member, d, N("m"), SGID | 0x1ED, (uint)O_RDWR, 0, 0, out _, out FuseOpenResult h1));
        _fs.Release(member, 0, h1.Handle, 0, 0, 0);
        Assert.Equal(SGID | 0x1ED, Mode("shared/m"));

        Assert.Equal(0, _fs.Create(RootCtx, d, N("r"), SGID | 0x1ED, (uint)O_RDWR, 0, 0, out _, out FuseOpenResult h2));
        _fs.Release(RootCtx, 0, h2.Handle, 0, 0, 0);
        Assert.Equal(SGID | 0x1ED, Mode("shared/r"));

        // A directory made in an SGID directory is SGID too, whoever makes it.
        Assert.Equal(0, _fs.MkDir(UserCtx, d, N("sub"), 0x1ED, 0, out _));
        Assert.Equal(SGID | 0x1ED, Mode("shared/sub"));
        Assert.Equal(0u, Lstat(P("shared/sub")).stx_gid);
    }

    [Fact]
    public void The_daemon_keeps_its_supplementary_groups_after_a_create()
    {
        using var groups = new ThreadGroups(0, 4);
        string before = File.ReadAllLines("/proc/thread-self/status").Single(l => l.StartsWith("Groups:", StringComparison.Ordinal));
        Assert.Contains("0 4", before, StringComparison.Ordinal);
        ulong d = SgidDir("shared");
        Assert.Equal(0, _fs.MkDir(UserCtx, d, N("x"), 0x1ED, 0, out _));
        string after = File.ReadAllLines("/proc/thread-self/status").Single(l => l.StartsWith("Groups:", StringComparison.Ordinal));
        Assert.Equal(before, after);
    }
}
