using System.Diagnostics;
using VirtioFs.Fuse;

namespace VirtioFs.Passthrough.Tests;

public class LockTests
{
    [SkippableFact]
    public void Posix_locks_conflict_between_processes_not_within_one()
    {
        // Another process must conflict: flock(1) -n is BSD, so a tiny python fcntl probe plays that process.
        string? python = new[] { "/usr/bin/python3", "/bin/python3" }.FirstOrDefault(File.Exists);
        Skip.If(python is null, "python3 is needed as the second lock owner");
        using var m = new MountFixture(threads: 3, serverOptions: new FuseServerOptions { PosixLocks = true, FlockLocks = true });
        File.WriteAllText(m.Src("locked"), "0123456789");
        using var a = new FileStream(m.Mnt("locked"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        using var b = new FileStream(m.Mnt("locked"), FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        a.Lock(0, 5);
        b.Lock(0, 5); // same process = same lock owner: no conflict, as on a local filesystem

        string script = "import fcntl,sys\nf=open(sys.argv[1],'r+')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB,5,0)\n print('got')\nexcept OSError:\n print('busy')";
        string Probe()
        {
            var psi = new ProcessStartInfo(python!) { RedirectStandardOutput = true };
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add(script);
            psi.ArgumentList.Add(m.Mnt("locked"));
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return output;
        }
        Assert.Equal("busy", Probe());
        a.Unlock(0, 5);
        b.Unlock(0, 5);
        Assert.Equal("got", Probe());
    }
}
