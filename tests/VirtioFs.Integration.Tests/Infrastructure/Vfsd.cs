namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>A running out/vfsd listening on a fresh socket; the guest connects to <see cref="SocketPath"/>.</summary>
internal sealed class Vfsd : IDisposable
{
    private readonly ProcessRunner _process;

    private Vfsd(ProcessRunner process, string socketPath)
    {
        _process = process;
        SocketPath = socketPath;
    }

    public string SocketPath { get; }

    public ProcessRunner Process => _process;

    /// <summary>Starts vfsd with <c>--socket-path</c> plus <paramref name="args"/> and waits for its socket.</summary>
    public static Vfsd Start(params string[] args) => StartWithEnvironment(null, args);

    /// <summary>As <see cref="Start"/>, with extra environment variables for vfsd (e.g. DOCKER_CONFIG).</summary>
    public static Vfsd StartWithEnvironment(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        string socket = Path.Combine(Path.GetTempPath(), $"vfsd-{Guid.NewGuid():N}.sock");
        var process = Environment.GetEnvironmentVariable("VFS_TEST_PEER") == "virtiofsd"
            ? ProcessRunner.Start(PeerVirtiofsd, PeerArguments(socket, args))
            : ProcessRunner.Start(Repo.Vfsd, ["--socket-path", socket, .. args], environment: environment);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!File.Exists(socket))
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                string output = process.Output;
                process.Dispose();
                throw new InvalidOperationException($"vfsd did not create its socket; output:\n{output}");
            }
            Thread.Sleep(20);
        }
        return new Vfsd(process, socket);
    }

    /// <summary>Starts out/vfsd through <paramref name="launcher"/> (e.g. setpriv as another user) with
    /// <c>--socket-path <paramref name="socket"/></c> plus <paramref name="args"/>, and waits for the socket.</summary>
    public static Vfsd StartAs(IReadOnlyList<string> launcher, string socket, params string[] args)
    {
        var process = ProcessRunner.Start(launcher[0], [.. launcher.Skip(1), Repo.Vfsd, "--socket-path", socket, .. args]);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!File.Exists(socket))
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                string output = process.Output;
                process.Dispose();
                throw new InvalidOperationException($"vfsd did not create its socket; output:\n{output}");
            }
            Thread.Sleep(20);
        }
        return new Vfsd(process, socket);
    }

    /// <summary>The C virtiofsd Debian's QEMU ships: run the same tests against it with VFS_TEST_PEER=virtiofsd.</summary>
    public const string PeerVirtiofsd = "/usr/lib/qemu/virtiofsd";

    /// <summary>Translates vfsd arguments into the C virtiofsd's (it takes only --socket-path=, -o source=, -o cache=).</summary>
    public static List<string> PeerArguments(string socket, IReadOnlyList<string> args)
    {
        var result = new List<string> { $"--socket-path={socket}" };
        for (int i = 0; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "--shared-dir": result.Add("-o"); result.Add("source=" + args[++i]); break;
                case "--cache": result.Add("-o"); result.Add("cache=" + (args[++i] == "never" ? "none" : args[i])); break;
                case "--xattr": result.Add("-o"); result.Add("xattr"); break;
                case "--tag" or "--thread-pool-size": i++; break;
                default: break;
            }
        }
        return result;
    }

    /// <summary>After the guest powered off the front-end is gone and vfsd must exit by itself with status 0.</summary>
    public int? WaitForExit(TimeSpan timeout) => _process.WaitForExit(timeout);

    public void Dispose()
    {
        _process.Dispose();
        File.Delete(SocketPath);
        File.Delete(SocketPath + ".pid");
    }
}
