using System.Diagnostics;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// native-shim/seccomp_aarch64.list is seccomp_x86_64.list without the legacy syscalls the asm-generic table
/// (include/uapi/asm-generic/unistd.h) lacks; each has its *at or p* replacement on both lists. The Makefile picks the
/// list by `uname -m`; a name the aarch64 headers do not know would break an aarch64 build, so it is compiled against
/// them here (Debian linux-libc-dev-arm64-cross, installed by tests/setup.sh).
/// </summary>
public class SeccompListTests
{
    /// <summary>x86_64-only syscall and what aarch64 calls instead.</summary>
    private static readonly Dictionary<string, string> Legacy = new(StringComparer.Ordinal)
    {
        ["readlink"] = "readlinkat", ["access"] = "faccessat", ["epoll_wait"] = "epoll_pwait", ["poll"] = "ppoll",
        ["select"] = "pselect6", ["dup2"] = "dup3", ["open"] = "openat", ["stat"] = "newfstatat", ["lstat"] = "newfstatat",
        ["unlink"] = "unlinkat", ["mkdir"] = "mkdirat", ["rename"] = "renameat", ["rmdir"] = "unlinkat", ["chmod"] = "fchmodat",
        ["link"] = "linkat",
    };

    [Fact]
    public void The_aarch64_list_is_the_x86_64_list_without_exactly_the_legacy_calls()
    {
        List<string> x86 = Names("seccomp_x86_64.list");
        List<string> arm = Names("seccomp_aarch64.list");
        Assert.Equal(x86.Count, x86.Distinct().Count());
        Assert.Equal(arm.Count, arm.Distinct().Count());
        Assert.Empty(arm.Except(x86));                                  // nothing aarch64-only yet
        Assert.Equal(Legacy.Keys.Order(), x86.Except(arm).Order());     // dropped: exactly the legacy set
        foreach (string replacement in Legacy.Values)
        {
            Assert.Contains(replacement, arm);
        }
    }

    [SkippableFact]
    public void Every_aarch64_name_is_a_syscall_of_the_aarch64_headers()
    {
        Skip.IfNot(File.Exists("/usr/aarch64-linux-gnu/include/asm/unistd.h"), "no aarch64 UAPI headers (Debian linux-libc-dev-arm64-cross; bash tests/setup.sh)");
        var info = new ProcessStartInfo("make") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "-s", "-C", Path.Combine(RepoRoot(), "native-shim"), "check-aarch64" }) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, output);
    }

    private static List<string> Names(string list) =>
        File.ReadAllLines(Path.Combine(RepoRoot(), "native-shim", list))
            .Select(l => (l.Contains('#', StringComparison.Ordinal) ? l[..l.IndexOf('#', StringComparison.Ordinal)] : l).Trim())
            .Where(l => l.Length > 0).ToList();

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "VirtioFs.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("repository root not found");
    }
}
