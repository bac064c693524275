using System.Diagnostics;

namespace VirtioFs.Passthrough.Tests;

/// <summary>Runs a shell snippet as its own process: ordinary tools make their own syscall mixes against a mount.</summary>
internal static class Shell
{
    /// <summary>Runs <c>/bin/sh -c <paramref name="script"/></c>; its exit code and its stdout followed by its stderr.
    /// A script still running after <paramref name="timeoutSeconds"/> is killed and fails the test.</summary>
    public static (int Code, string Output) Run(string script, int timeoutSeconds = 120)
    {
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var p = Process.Start(psi)!;
        // Both pipes drained at once: a tool that fills stderr while stdout is being read must not stall.
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"tool timed out after {timeoutSeconds} s: {script}");
        }
        return (p.ExitCode, stdout.GetAwaiter().GetResult() + stderr.GetAwaiter().GetResult());
    }
}
