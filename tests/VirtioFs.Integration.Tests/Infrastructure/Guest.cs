using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>What a guest run printed: its console, the "@@" result lines, and the script's exit code.</summary>
internal sealed record GuestResult(int? ExitCode, string Console)
{
    /// <summary>Lines the guest script printed as "@@KEY rest", in order, with the key stripped.</summary>
    public IReadOnlyList<string> Lines(string key)
    {
        string prefix = "@@" + key + " ";
        return Console.Split('\n')
            .Select(l => l.TrimEnd('\r'))
            .Where(l => l.StartsWith(prefix, StringComparison.Ordinal))
            .Select(l => l[prefix.Length..])
            .ToList();
    }

    public string Single(string key) => Lines(key) is [var one] ? one : throw new InvalidOperationException($"expected one @@{key} line in:\n{Console}");

    /// <summary>Asserts the script ran to its end: exit status 0 and its last line, <c>echo "@@DONE ok"</c>.</summary>
    public GuestResult AssertDone()
    {
        Xunit.Assert.Equal(0, ExitCode);
        Xunit.Assert.Equal("ok", Single("DONE"));
        return this;
    }
}

/// <summary>
/// Runs a shell script inside a QEMU guest (tests/guest/run-guest.sh) with the given vhost-user-fs sockets
/// mounted at /mnt/TAG, and returns what it printed.
/// </summary>
internal static class Guest
{
    /// <summary>Script lines that give the guest root and a user and group 1000 (u1000, g1000), so that
    /// <c>su u1000 -c ...</c> acts as a non-owner; the guest's initramfs has no /etc/passwd of its own.</summary>
    public const string AddUser1000 = """
        echo 'root:x:0:0::/tmp:/bin/sh' > /etc/passwd; echo 'u1000:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd
        echo 'root:x:0:' > /etc/group; echo 'g1000:x:1000:' >> /etc/group
        """;

    public static GuestResult Run(string script, IReadOnlyList<(string Tag, string Socket)> devices, ITestOutputHelper? log = null, int timeoutSeconds = 600)
    {
        string scriptPath = Path.Combine(Path.GetTempPath(), $"vfs-guest-script-{Guid.NewGuid():N}.sh");
        File.WriteAllText(scriptPath, script.Replace("\r\n", "\n", StringComparison.Ordinal));
        try
        {
            var args = new List<string> { "--script", scriptPath, "--timeout", timeoutSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) };
            foreach (var (tag, socket) in devices)
            {
                args.Add("--fs");
                args.Add($"{tag}={socket}");
            }
            using var qemu = ProcessRunner.Start("bash", [Repo.RunGuest, .. args]);
            int? code = qemu.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds + 30));
            log?.WriteLine(Tail(qemu.Output, 200));
            return new GuestResult(code, qemu.Output);
        }
        finally
        {
            File.Delete(scriptPath);
        }
    }

    private static string Tail(string text, int lines)
    {
        string[] all = text.Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }
}
