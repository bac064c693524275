using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Failover and hot upgrade of a /dev/fuse mount, driven as nydus-snapshotter drives nydusd, with the supervisor of
/// <see cref="TestSupervisor"/> (pkg/supervisor/supervisor.go):
/// - start (pkg/manager/daemon_adaptor.go StartDaemon): wait for the API socket, poll GET /api/v1/daemon until RUNNING,
///   then SendStates: the supervisor listens and PUT /api/v1/daemon/fuse/sendfd (pkg/daemon/daemon.go SendStates);
/// - failover (pkg/manager/daemon_event.go doDaemonFailover): the daemon dies; the supervisor offers the states
///   (SendStatesTimeout 10 s), the same argv is started again, waits until INIT, PUT /api/v1/daemon/fuse/takeover,
///   PUT /api/v1/daemon/start;
/// - hot upgrade (daemon_event.go DoDaemonUpgrade): SendStatesTimeout, a new daemon with --upgrade on the next API
///   socket (buildNextAPISocket: api1.sock), INIT, takeover, READY, the old one's PUT /api/v1/daemon/exit (the mount
///   stays), start, RUNNING.
/// While that happens a host reader streams a large file with O_DIRECT reads (each one a FUSE READ) and a lister walks a
/// tree; every byte must be right and no call may fail. The time the mount stalls is printed.
/// </summary>
public sealed partial class FailoverTests(ITestOutputHelper output)
{
    private const int BigFileBytes = 64 << 20;
    private const int ReadSize = 256 << 10;

    private sealed class Setup : IDisposable
    {
        public readonly ImageWorkspace Ws = new();
        public readonly string MountPoint;
        public readonly string Api;
        public readonly TestSupervisor Supervisor;
        public readonly byte[] BigSha;
        public readonly int TreeEntries;
        public readonly List<ProcessRunner> Daemons = [];

        public Setup()
        {
            var data = new byte[BigFileBytes];
            new Random(8).NextBytes(data);
            File.WriteAllBytes(Ws.S("big.bin"), data);
            BigSha = SHA256.HashData(data);
            for (int d = 0; d < 20; d++)
            {
                string dir = Directory.CreateDirectory(Ws.S($"tree/d{d:D2}")).FullName;
                for (int f = 0; f < 25; f++) File.WriteAllText(Path.Combine(dir, $"f{f:D2}"), $"{d}/{f}");
            }
            TreeEntries = 20 + 20 * 25;
            Ws.Build("--compressor", "zstd");
            MountPoint = Ws.NewMountPoint();
            Directory.CreateDirectory(Path.Combine(Ws.Root, "run"));
            Api = Path.Combine(Ws.Root, "run", "api.sock");
            Supervisor = new TestSupervisor(Path.Combine(Ws.Root, "run", "supervisor.sock"));
            // The nydusd config the snapshotter writes for a dedicated daemon (pkg/daemon/config: backend + blobcache).
            Config = Path.Combine(Ws.Root, "run", "config.json");
            File.WriteAllText(Config, "{\"device\":{\"backend\":{\"type\":\"localfs\",\"config\":{\"dir\":\"" + Ws.BlobDir
                + "\"}},\"cache\":{\"type\":\"blobcache\",\"config\":{\"work_dir\":\"" + Ws.CacheDir
                + "\"}}},\"mode\":\"direct\",\"digest_validate\":false}");
        }

        public readonly string Config;

        /// <summary>The daemon's argv as nydus-snapshotter builds it for a dedicated fusedev daemon with
        /// recover_policy = "failover" (pkg/manager/daemon_adaptor.go BuildDaemonCommand; field order of
        /// pkg/daemon/command/command.go DaemonCommand: mode, upgrade, thread-num, id, config, bootstrap, mountpoint,
        /// apisock, log-level, supervisor, failover-policy).</summary>
        public string[] Argv(string api, bool upgrade, string policy = "resend") =>
            ["fuse", .. upgrade ? new[] { "--upgrade" } : [], "--thread-num", "4", "--id", "failover-test", "--config", Config,
             "--bootstrap", Ws.Bootstrap, "--mountpoint", MountPoint, "--apisock", api, "--log-level", "info",
             "--supervisor", Supervisor.Path, "--failover-policy", policy];

        public ProcessRunner StartDaemon(string[] argv)
        {
            var p = ProcessRunner.Start(Repo.Vfsd, argv);
            Daemons.Add(p);
            return p;
        }

        public void Dispose()
        {
            foreach (var d in Daemons) d.Dispose();
            Supervisor.Dispose(); // closing the last fd of the connection lets the lazy unmount below finish
            ImageWorkspace.umount2(MountPoint, 2);
            Ws.Dispose();
        }
    }

    [Fact]
    public async Task A_killed_daemon_is_taken_over_by_the_same_argv_and_the_reader_sees_every_byte()
    {
        using var s = new Setup();
        ProcessRunner first = s.StartDaemon(s.Argv(s.Api, upgrade: false));
        await WaitUntilState(s.Api, "RUNNING", first);
        await s.Supervisor.FetchDaemonStates(() => Put(s.Api, "daemon/fuse/sendfd"));
        Assert.True(s.Supervisor.HoldsFd && s.Supervisor.StateBytes > 0);

        using var reader = new StreamReader(Path.Combine(s.MountPoint, "big.bin"));
        using var load = new StreamReader(Path.Combine(s.MountPoint, "big.bin"), pauseMs: 0, loop: true);
        using var lister = new TreeLister(Path.Combine(s.MountPoint, "tree"), s.TreeEntries);
        reader.WaitForProgress(BigFileBytes / 5);
        (long killedAt, int attempts) = KillWhileHoldingRequest(first.Id);
        long progressAtKill = reader.Progress;
        output.WriteLine($"SIGKILL landed while a reader thread of the daemon held a request (attempt {attempts})");
        first.WaitForExit(TimeSpan.FromSeconds(30));
        Assert.InRange(progressAtKill, 1, BigFileBytes - 1);
        Assert.True(ImageWorkspace.IsMounted(s.MountPoint), "the mount outlives its daemon: the supervisor holds the connection");

        // doDaemonFailover: SendStatesTimeout, StartDaemon (same argv), WaitUntilState(INIT), TakeOver, Start.
        Task offered = s.Supervisor.SendStatesTimeout(TimeSpan.FromSeconds(10));
        ProcessRunner second = s.StartDaemon(s.Argv(s.Api, upgrade: false));
        await WaitUntilState(s.Api, "INIT", second);
        long initAt = Stopwatch.GetTimestamp();
        Assert.Contains("a previous daemon crashed", second.Output, StringComparison.Ordinal);
        await Put(s.Api, "daemon/fuse/takeover");
        await offered;
        Assert.Equal("READY", await State(s.Api));
        long readyAt = Stopwatch.GetTimestamp();
        output.WriteLine($"requests waiting on the connection before start: {Waiting(s.MountPoint)}");
        await Put(s.Api, "daemon/start");
        long startedAt = Stopwatch.GetTimestamp();
        Assert.Equal("RUNNING", await State(s.Api));

        byte[] sha = reader.Finish(TimeSpan.FromMinutes(3));
        Assert.Equal(s.BigSha, load.Finish(TimeSpan.FromMinutes(3)));
        lister.Finish(TimeSpan.FromMinutes(1), minimumAfter: killedAt);
        Assert.Equal(s.BigSha, sha);
        double stall = reader.GapAroundMs(killedAt);
        output.WriteLine($"killed at {progressAtKill >> 20} MiB of {BigFileBytes >> 20} MiB; {load.Passes} passes of the loading reader");
        output.WriteLine($"failover: stall {stall:F0} ms (last read before SIGKILL to first read served after start; " +
            $"first read {reader.FirstReadAfterMs(killedAt):F0} ms after the kill) " +
            $"(daemon restart to INIT {Ms(killedAt, initAt):F0} ms, takeover {Ms(initAt, readyAt):F0} ms, start {Ms(readyAt, startedAt):F0} ms); " +
            $"longest gap between reads {reader.LongestGapMs:F0} ms; {lister.Walks} tree walks");
        await Task.Delay(2500);
        Match resent = Regex.Match(second.Output, @"(\d+) requests the predecessor had read and never answered were resent.*");
        output.WriteLine(resent.Value);
        // With the loading reader the daemon always holds a READ when it dies: the test exercises the replay.
        Assert.True(resent.Success && long.Parse(resent.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0, second.Output);

        // The successor serves new lookups and opens too.
        Assert.Equal("3/4", File.ReadAllText(Path.Combine(s.MountPoint, "tree", "d03", "f04")));
    }

    [Fact]
    public async Task A_planned_upgrade_hands_the_mount_to_a_new_daemon_and_the_old_ones_exit_leaves_it_mounted()
    {
        using var s = new Setup();
        ProcessRunner old = s.StartDaemon(s.Argv(s.Api, upgrade: false));
        await WaitUntilState(s.Api, "RUNNING", old);
        await s.Supervisor.FetchDaemonStates(() => Put(s.Api, "daemon/fuse/sendfd"));

        using var reader = new StreamReader(Path.Combine(s.MountPoint, "big.bin"));
        using var lister = new TreeLister(Path.Combine(s.MountPoint, "tree"), s.TreeEntries);
        reader.WaitForProgress(BigFileBytes / 5);
        Assert.InRange(reader.Progress, 1, BigFileBytes - 1);

        // DoDaemonUpgrade.
        string nextApi = Path.Combine(Path.GetDirectoryName(s.Api)!, "api1.sock");
        Task offered = s.Supervisor.SendStatesTimeout(TimeSpan.FromSeconds(10));
        ProcessRunner next = s.StartDaemon(s.Argv(nextApi, upgrade: true));
        await WaitUntilState(nextApi, "INIT", next);
        await Put(nextApi, "daemon/fuse/takeover");
        await offered;
        Assert.Equal("READY", await State(nextApi));
        Assert.Equal("RUNNING", await State(s.Api)); // the old one still serves until it exits

        long exitAt = Stopwatch.GetTimestamp();
        Assert.InRange(reader.Progress, 1, BigFileBytes - 1);
        await Put(s.Api, "daemon/exit");
        Assert.Equal(0, old.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.True(ImageWorkspace.IsMounted(s.MountPoint), "the old daemon's exit must leave the mount to its successor");
        Assert.Contains("leaving", old.Output, StringComparison.Ordinal);
        long startAt = Stopwatch.GetTimestamp();
        await Put(nextApi, "daemon/start");
        Assert.Equal("RUNNING", await State(nextApi));

        byte[] sha = reader.Finish(TimeSpan.FromMinutes(3));
        lister.Finish(TimeSpan.FromMinutes(1), minimumAfter: exitAt);
        Assert.Equal(s.BigSha, sha);
        output.WriteLine($"upgrade: stall {reader.GapAroundMs(startAt):F0} ms (last read served by the old daemon to first served by the new one; " +
            $"exit to start {Ms(exitAt, startAt):F0} ms); " +
            $"longest gap between reads {reader.LongestGapMs:F0} ms; {lister.Walks} tree walks");

        // A new generation can be handed over again.
        await s.Supervisor.FetchDaemonStates(() => Put(nextApi, "daemon/fuse/sendfd"));
        Assert.Equal("3/4", File.ReadAllText(Path.Combine(s.MountPoint, "tree", "d03", "f04")));
    }

    /// <summary>nydusd's flush policy (service/src/fusedev.rs drain_fuse_requests): the requests the dead daemon held
    /// fail instead of being served again. Mainline kernels have no fusectl "flush" file, so vfsd resends and answers
    /// each resent request with EIO: the one reader gets EIO, nothing hangs, and the mount serves on.</summary>
    [Fact]
    public async Task With_the_flush_policy_the_request_a_killed_daemon_held_fails_with_EIO_and_nothing_hangs()
    {
        using var s = new Setup();
        ProcessRunner first = s.StartDaemon(s.Argv(s.Api, upgrade: false, policy: "flush"));
        await WaitUntilState(s.Api, "RUNNING", first);
        await s.Supervisor.FetchDaemonStates(() => Put(s.Api, "daemon/fuse/sendfd"));
        using var reader = new StreamReader(Path.Combine(s.MountPoint, "big.bin"), pauseMs: 0, loop: true);
        Thread.Sleep(300);
        KillWhileHoldingRequest(first.Id);
        first.WaitForExit(TimeSpan.FromSeconds(30));

        Task offered = s.Supervisor.SendStatesTimeout(TimeSpan.FromSeconds(10));
        ProcessRunner second = s.StartDaemon(s.Argv(s.Api, upgrade: false, policy: "flush"));
        await WaitUntilState(s.Api, "INIT", second);
        await Put(s.Api, "daemon/fuse/takeover");
        await offered;
        await Put(s.Api, "daemon/start");
        Assert.True(reader.Join(TimeSpan.FromMinutes(2)), "the reader hangs");
        Assert.Contains("errno 5", reader.Error?.Message ?? "(no error)", StringComparison.Ordinal);
        await Task.Delay(2500);
        Assert.Matches(@"[1-9]\d* requests the predecessor had read and never answered were resent by the kernel \(flush", second.Output);
        Assert.Equal("3/4", File.ReadAllText(Path.Combine(s.MountPoint, "tree", "d03", "f04")));
    }

    [Fact]
    public async Task A_successor_with_another_image_refuses_the_takeover_and_stays_in_init()
    {
        using var s = new Setup();
        ProcessRunner first = s.StartDaemon(s.Argv(s.Api, upgrade: false));
        await WaitUntilState(s.Api, "RUNNING", first);
        await s.Supervisor.FetchDaemonStates(() => Put(s.Api, "daemon/fuse/sendfd"));
        first.Kill();

        // Same mount point, another bootstrap: the kernel's node ids would name other files.
        File.WriteAllText(s.Ws.S("extra"), "changes the bootstrap");
        string other = Path.Combine(s.Ws.Root, "other.boot");
        using (var p = ProcessRunner.Start(Repo.VfsImage, ["create", "--bootstrap", other, "--blob-dir", s.Ws.BlobDir, s.Ws.Src]))
            Assert.Equal(0, p.WaitForExit(TimeSpan.FromMinutes(5)));
        string[] argv = s.Argv(s.Api, upgrade: false);
        argv[Array.IndexOf(argv, s.Ws.Bootstrap)] = other;
        Task offered = s.Supervisor.SendStatesTimeout(TimeSpan.FromSeconds(10));
        ProcessRunner second = s.StartDaemon(argv);
        await WaitUntilState(s.Api, "INIT", second);
        using var http = VfsdApi.Client(s.Api);
        using var refused = await http.PutAsync(new Uri("http://vfsd/api/v1/daemon/fuse/takeover"), null);
        string body = await refused.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.InternalServerError, refused.StatusCode);
        Assert.Contains("sha256", body, StringComparison.Ordinal);
        Assert.Equal("INIT", await State(s.Api));
        await offered;
    }

    // ---- helpers ------------------------------------------------------------------------------------------------------

    private static double Ms(long from, long to) => Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int signal);

    private static async Task<string?> State(string api)
    {
        using var http = VfsdApi.Client(api);
        return (string?)JsonNode.Parse(await http.GetStringAsync(new Uri("http://vfsd/api/v1/daemon")))!["state"];
    }

    /// <summary>pkg/daemon/client.go: PUT with no body; 204 or 200 is success.</summary>
    private static async Task Put(string api, string endpoint)
    {
        using var http = VfsdApi.Client(api);
        using var r = await http.PutAsync(new Uri($"http://vfsd/api/v1/{endpoint}"), null);
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode is HttpStatusCode.NoContent or HttpStatusCode.OK, $"PUT {endpoint}: {(int)r.StatusCode} {body}");
    }

    /// <summary>WaitUntilSocketExisted then WaitUntilState, polling every 20 ms (the snapshotter polls every 100 ms).</summary>
    private static async Task WaitUntilState(string api, string state, ProcessRunner daemon)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            if (daemon.HasExited) throw new InvalidOperationException($"vfsd exited; output:\n{daemon.Output}");
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"vfsd never reached {state}; output:\n{daemon.Output}");
            try
            {
                if (File.Exists(api) && await State(api) == state) return;
            }
            catch (HttpRequestException)
            {
            }
            await Task.Delay(20);
        }
    }

    private static string Waiting(string mountPoint)
    {
        string? dev = File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).FirstOrDefault(f => f.Length > 4 && f[4] == mountPoint)?[2];
        string waiting = $"/sys/fs/fuse/connections/{dev?.Split(':')[1]}/waiting";
        return File.Exists(waiting) ? File.ReadAllText(waiting).Trim() : "(no fusectl)";
    }

    /// <summary>
    /// SIGKILLs the daemon at a moment one of its /dev/fuse reader threads ("fuse-dev-N") holds a request it has read
    /// and not answered, so the test exercises what FUSE_NOTIFY_RESEND replays: the daemon is stopped (SIGSTOP), and
    /// killed if such a thread is reading the chunk cache for a READ (/proc/PID/task/TID/syscall); otherwise it is
    /// continued and tried again.
    /// </summary>
    private static (long KilledAt, int Attempts) KillWhileHoldingRequest(int pid)
    {
        for (int attempt = 1; ; attempt++)
        {
            Assert.Equal(0, kill(pid, 19)); // SIGSTOP
            while (!File.ReadLines($"/proc/{pid}/status").Any(l => l.StartsWith("State:\tT", StringComparison.Ordinal))) Thread.Sleep(1);
            bool holding = false;
            foreach (string task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                if (!File.ReadAllText(Path.Combine(task, "comm")).StartsWith("fuse-dev", StringComparison.Ordinal)) continue;
                string call = File.ReadAllText(Path.Combine(task, "syscall")).Split(' ')[0].Trim();
                // pread64, readv, preadv: reading the chunk cache for a READ it has taken. (Other syscalls are
                // ambiguous: poll and its restart, read and write of the device sit between requests, futex may be GC.)
                holding |= call is "17" or "19" or "295";
            }
            if (holding || attempt == 5000)
            {
                long at = Stopwatch.GetTimestamp();
                Assert.Equal(0, kill(pid, 9)); // SIGKILL
                return (at, attempt);
            }
            Assert.Equal(0, kill(pid, 18)); // SIGCONT
            Thread.Sleep(1);
        }
    }

    /// <summary>Streams a file with O_DIRECT reads (each one a FUSE READ that reaches the daemon), hashing as it goes
    /// and timing each read; records the first error.</summary>
    private sealed unsafe partial class StreamReader : IDisposable
    {
        private readonly Thread _thread;
        private readonly List<long> _done = [];
        private long _bytes;
        private Exception? _error;
        private byte[]? _sha;

        private readonly int _pauseMs;
        private readonly bool _loop;
        private volatile bool _stop;
        private int _passes;

        /// <summary>One pass with a pause after each read (the streaming reader), or passes back to back until
        /// <see cref="Finish"/> (the load that keeps READs in flight).</summary>
        public StreamReader(string path, int pauseMs = 12, bool loop = false)
        {
            _pauseMs = pauseMs;
            _loop = loop;
            _thread = new Thread(() => { do Run(path); while (_loop && !_stop && _error is null); }) { IsBackground = true, Name = "failover-reader" };
            _thread.Start();
        }

        public long Progress => Interlocked.Read(ref _bytes);

        public Exception? Error => _error;

        public bool Join(TimeSpan timeout) => _thread.Join(timeout);

        public int Passes => Volatile.Read(ref _passes);

        private void Run(string path)
        {
            byte* buffer = (byte*)NativeMemory.AlignedAlloc(ReadSize, 4096);
            try
            {
                int fd = open(path, 0x4000 /* O_DIRECT */);
                if (fd < 0) throw new IOException($"open {path}: errno {Marshal.GetLastPInvokeError()}");
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                long offset = 0;
                while (true)
                {
                    long n = pread(fd, buffer, ReadSize, offset);
                    if (n < 0) throw new IOException($"pread at {offset}: errno {Marshal.GetLastPInvokeError()}");
                    if (n == 0) break; // at EOF the kernel answers from i_size, without the daemon
                    lock (_done) _done.Add(Stopwatch.GetTimestamp());
                    hash.AppendData(new ReadOnlySpan<byte>(buffer, (int)n));
                    offset += n;
                    if (!_loop) Interlocked.Exchange(ref _bytes, offset);
                    if (_pauseMs > 0) Thread.Sleep(_pauseMs); // a steady stream rather than a burst: the file takes seconds
                }
                close(fd);
                byte[] sha = hash.GetHashAndReset();
                if (_sha is not null && !_sha.AsSpan().SequenceEqual(sha)) throw new InvalidDataException($"pass {_passes} read other bytes");
                _sha = sha;
                Interlocked.Increment(ref _passes);
            }
            catch (Exception e)
            {
                _error = e;
            }
            finally
            {
                NativeMemory.AlignedFree(buffer);
            }
        }

        public void WaitForProgress(long bytes)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            while (Interlocked.Read(ref _bytes) < bytes && _thread.IsAlive && DateTime.UtcNow < deadline) Thread.Sleep(5);
            Assert.True(_thread.IsAlive, $"the reader finished (or failed: {_error?.Message}) before the daemon was replaced; make the file larger");
        }

        public byte[] Finish(TimeSpan timeout)
        {
            _stop = true;
            Assert.True(_thread.Join(timeout), "the reader hangs");
            Assert.Null(_error);
            return _sha!;
        }

        public double FirstReadAfterMs(long t)
        {
            lock (_done) return Ms(t, _done.First(d => d > t));
        }

        /// <summary>How long the stream stood still across <paramref name="t"/>: from the last read completed before it
        /// to the first completed after (includes up to one pause of the reader).</summary>
        public double GapAroundMs(long t)
        {
            lock (_done) return Ms(_done.Last(d => d <= t), _done.First(d => d > t));
        }

        public double LongestGapMs
        {
            get
            {
                lock (_done) return _done.Zip(_done.Skip(1)).Max(p => Ms(p.First, p.Second));
            }
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join(TimeSpan.FromSeconds(1));
        }

        [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        private static partial int open(string path, int flags);

        [LibraryImport("libc", SetLastError = true)]
        private static partial long pread(int fd, byte* buffer, nint count, long offset);

        [LibraryImport("libc")]
        private static partial int close(int fd);
    }

    /// <summary>Walks a tree over and over (readdir, stat and read of every file) until told to stop; each walk must see
    /// every entry with the right contents.</summary>
    private sealed class TreeLister : IDisposable
    {
        private readonly Thread _thread;
        private readonly List<long> _walksDone = [];
        private volatile bool _stop;
        private Exception? _error;

        public TreeLister(string root, int entries)
        {
            _thread = new Thread(() =>
            {
                try
                {
                    while (!_stop)
                    {
                        int seen = 0;
                        foreach (string e in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
                        {
                            seen++;
                            if (File.Exists(e))
                            {
                                string rel = Path.GetRelativePath(root, e);
                                string want = $"{int.Parse(rel[1..3], System.Globalization.CultureInfo.InvariantCulture)}/{int.Parse(rel[5..], System.Globalization.CultureInfo.InvariantCulture)}";
                                if (File.ReadAllText(e) != want) throw new InvalidDataException($"{rel} reads wrong");
                            }
                        }
                        if (seen != entries) throw new InvalidDataException($"a walk saw {seen} entries, not {entries}");
                        lock (_walksDone) _walksDone.Add(Stopwatch.GetTimestamp());
                        Thread.Sleep(20);
                    }
                }
                catch (Exception e)
                {
                    _error = e;
                }
            })
            { IsBackground = true, Name = "failover-lister" };
            _thread.Start();
        }

        public int Walks
        {
            get
            {
                lock (_walksDone) return _walksDone.Count;
            }
        }

        public void Finish(TimeSpan timeout, long minimumAfter)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (DateTime.UtcNow < deadline && _error is null)
            {
                lock (_walksDone)
                {
                    if (_walksDone.Any(t => t > minimumAfter)) break;
                }
                Thread.Sleep(20);
            }
            _stop = true;
            Assert.True(_thread.Join(timeout), "the lister hangs");
            Assert.Null(_error);
            lock (_walksDone) Assert.Contains(_walksDone, t => t > minimumAfter);
        }

        public void Dispose()
        {
            _stop = true;
            _thread.Join(TimeSpan.FromSeconds(1));
        }
    }
}
