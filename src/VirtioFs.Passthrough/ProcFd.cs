namespace VirtioFs.Passthrough;

/// <summary>
/// Where this process reaches its /proc/self/fd directory. vfsd's sandbox (native-shim/sandbox.c) makes the shared
/// directory the root, where an absolute "/proc/self/fd" would resolve to whatever the guest put there, and leaves the
/// working directory on the sandbox's own /proc/self/fd instead. A separate class so that setting it never runs
/// <see cref="PassthroughFileSystem"/>'s static initializer, which opens the directory, before it is set.
/// </summary>
public static class ProcFd
{
    /// <summary>Set once at start-up, before any <see cref="PassthroughFileSystem"/> exists.</summary>
    public static bool IsWorkingDirectory { get; set; }
}
