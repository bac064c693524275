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
}
