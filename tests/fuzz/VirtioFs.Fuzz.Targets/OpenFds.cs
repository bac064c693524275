namespace VirtioFs.Fuzz;

/// <summary>
/// This process's open fds, for the leak checks. Only fds of the kinds the code under test opens are counted (files
/// in the share, memfds, eventfds, sockets): the runtime opens others by itself at any moment (assembly mappings,
/// its epoll and signal pipes), and counting those would make the check flaky.
/// </summary>
public static class OpenFds
{
    public static int Count(Func<string, bool> kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        return Targets().Count(t => kind(t.Target));
    }

    public static string Describe(Func<string, bool> kind) =>
        string.Join(", ", Targets().Where(t => kind(t.Target)).Select(t => $"{t.Fd}->{t.Target}"));

    private static IEnumerable<(string Fd, string Target)> Targets()
    {
        foreach (string fd in Directory.GetFiles("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(fd).LinkTarget;
            }
            catch (IOException)
            {
                continue; // closed between listing and reading
            }
            yield return (Path.GetFileName(fd), target ?? "");
        }
    }
}
