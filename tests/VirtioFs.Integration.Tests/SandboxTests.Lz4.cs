using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// The sandboxed image daemon decodes lz4 chunks with the system liblz4, as the unsandboxed one does: the library is
/// loaded before pivot_root (the shim's preload), since after it Codec's first use could no longer find it and fell
/// back to the managed decoder (a quarter of vfsd's CPU in a guest read-all, by perf).
/// </summary>
public sealed partial class SandboxTests
{
    [SkippableFact]
    public void Sandboxed_image_daemon_has_liblz4_loaded()
    {
        Skip.IfNot(File.Exists("/usr/lib/x86_64-linux-gnu/liblz4.so.1") || File.Exists("/lib/x86_64-linux-gnu/liblz4.so.1"),
            "liblz4.so.1 not installed (apt-get install liblz4-1)");
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("hello.txt"), "hello");
        ws.Build();
        using var vfsd = Vfsd.Start("--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--sandbox", "namespace");
        int daemon = DaemonPid(vfsd, forks: true);
        // Its root holds only the image files, so a mapping of liblz4 can only have come from before pivot_root/chroot.
        Assert.False(Directory.Exists($"/proc/{daemon}/root/usr"));
        Assert.Contains("/liblz4.so.1", File.ReadAllText($"/proc/{daemon}/maps"), StringComparison.Ordinal);
    }

    /// <summary>
    /// The sandboxed daemon has no /sys, so whether this VM reports free pages (and blobs are read in 4 KiB pages,
    /// Storage/PageCacheAdvice.cs) is decided in the host's view and handed down: the child says so at start-up.
    /// </summary>
    [SkippableFact]
    public void Sandboxed_image_daemon_reads_in_small_pages_when_the_host_vm_reports_free_pages()
    {
        Skip.IfNot(VirtioFs.Storage.PageCacheAdvice.Enabled, "this machine's virtio balloon does not report free pages");
        using var ws = new ImageWorkspace();
        File.WriteAllText(ws.S("hello.txt"), "hello");
        ws.Build();
        using var vfsd = Vfsd.Start("--bootstrap", ws.Bootstrap, "--blob-dir", ws.BlobDir, "--sandbox", "namespace", "--log-level", "info");
        int daemon = DaemonPid(vfsd, forks: true);
        Assert.False(Directory.Exists($"/proc/{daemon}/root/sys"));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!vfsd.Process.Output.Contains("serving RAFS", StringComparison.Ordinal) && DateTime.UtcNow < deadline) Thread.Sleep(20);
        Assert.Contains("vfsd.storage[4320] this VM reports free pages", vfsd.Process.Output, StringComparison.Ordinal);
    }
}
