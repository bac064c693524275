using VirtioFs.Fuse;
using VirtioFs.Fuzz;
using Xunit;

namespace VirtioFs.Fuzz.Tests;

/// <summary>
/// Every fuzz target, CI-sized: the committed corpus (tests/fuzz/corpus/TARGET: seeds and every crasher found so
/// far), the target's seeds as built now, and a fixed-seed mutation sweep. Each input runs under the shared checks
/// (FuzzRunner: the target's own reply/leak/escape checks plus the allocation cap) and a time limit; a crash,
/// hang, cap overrun or undocumented exception fails the test and leaves the input in the temp directory to join the
/// corpus.
/// </summary>
[Collection(FuzzCollection.Name)]
public sealed class ReplayTests
{
    /// <summary>Per input; the slowest targets need ~20 ms per input on this 2-core machine.</summary>
    private static readonly TimeSpan InputTimeLimit = TimeSpan.FromSeconds(20);

    public static TheoryData<string> Targets() => new(FuzzTargets.Names);

    /// <summary>Mutations per target: one to seven seconds each on this 2-core machine (the passthrough target makes
    /// and removes a share per input).</summary>
    private static int SweepSize(string target) => target switch
    {
        "chain" => 10_000,
        "auth" or "oci" => 5000,
        "rafs" or "fuse-rafs" => 2000,
        "vhost-user" => 400,
        _ => 250,
    };

    [Theory]
    [MemberData(nameof(Targets))]
    public void Committed_corpus_replays_without_a_finding(string name)
    {
        string dir = Path.Combine(CorpusRoot(), name);
        string[] files = Directory.GetFiles(dir);
        Assert.NotEmpty(files);
        using IFuzzTarget target = FuzzTargets.Create(name);
        foreach (string file in files.Order(StringComparer.Ordinal))
        {
            RunGuarded(target, File.ReadAllBytes(file), Path.GetFileName(file));
        }
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Seeds_run_clean_and_are_in_the_corpus(string name)
    {
        using IFuzzTarget target = FuzzTargets.Create(name);
        string dir = Path.Combine(CorpusRoot(), name);
        foreach (var (seedName, data) in target.Seeds())
        {
            RunGuarded(target, data, seedName);
            // The committed seed files are what afl starts from; they must not drift from what the code builds.
            string file = Path.Combine(dir, "seed-" + seedName);
            Assert.True(File.Exists(file), $"{file} missing: regenerate with `bash tests/fuzz/run.sh {name} --seeds`");
        }
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Fixed_seed_mutation_sweep_finds_nothing(string name)
    {
        using IFuzzTarget target = FuzzTargets.Create(name);
        // Mutations start from the seeds as built now and from every committed input (crashers included).
        var seeds = target.Seeds().Select(s => s.Data).Concat(Directory.GetFiles(Path.Combine(CorpusRoot(), name))
            .Order(StringComparer.Ordinal).Select(File.ReadAllBytes)).ToList();
        var mutator = new Mutator(seed: 20261204);
        int count = SweepSize(name);
        for (int i = 0; i < count; i++)
        {
            RunGuarded(target, mutator.Mutate(seeds, target.MaxInput), $"mutation {i}");
        }
    }

    [Fact]
    public void The_vhost_user_seeds_reach_the_rings()
    {
        using var target = new VhostUserTarget();
        var seeds = target.Seeds().ToDictionary(s => s.Name, s => s.Data);
        // The in-band kick wakes the queue's worker thread while the connection thread goes on to SET_VRING_ENABLE 0,
        // and the worker does not serve a ring that is disabled by the time it runs: on a loaded machine it can lose
        // that race (the last clean CI run saw 0 chains once), as a real front-end's kick followed by a disable can. The seed reaches the ring if one of a few runs serves it.
        int served = 0;
        for (int run = 0; run < 10 && served == 0; run++)
        {
            target.Run(seeds["qemu72-chain"]);
            // Features acknowledged, memory mapped and the ring walked: the chain laid out in guest RAM was served.
            Assert.NotEqual(0UL, target.LastOutcome.Features);
            Assert.InRange(target.LastOutcome.Chains, 0, 1);
            served = target.LastOutcome.Chains;
        }
        Assert.Equal(1, served);
        target.Run(seeds["cloud-hypervisor"]);
        Assert.Equal(17, target.LastOutcome.Replies); // GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM + 14 acks
    }

    [Fact]
    public void A_swallowed_filesystem_exception_is_a_finding()
    {
        // FuseServer.Handle answers EIO for a throwing filesystem; the watch is what turns that into a failure.
        var watch = new ExceptionWatch();
        var server = new FuseServer(new ThrowingFileSystem(), new FuseServerOptions(), watch);
        using var buffers = new FuseRequestBuffers();
        Assert.Equal(0, Send(server, buffers, FuseRequest.Init()));
        watch.ThrowIfSwallowed("init");
        Assert.Equal(-Errno.EIO, Send(server, buffers, FuseRequest.Make(FuseOpcode.Lookup, 1, 2, FuseRequest.Name("x"))));
        Assert.Throws<FuzzFailure>(() => watch.ThrowIfSwallowed("lookup"));
    }

    private static unsafe int Send(FuseServer server, FuseRequestBuffers buffers, byte[] request)
    {
        byte[] reply = new byte[4096];
        fixed (byte* rq = request, rp = reply)
        {
            buffers.Clear();
            buffers.AddReadable(rq, request.Length);
            buffers.AddWritable(rp, reply.Length);
            Assert.True(server.Handle(buffers).HasReply);
        }
        return BitConverter.ToInt32(reply, 4);
    }

    private sealed class ThrowingFileSystem : IFileSystem
    {
        public int Lookup(in FuseContext ctx, ulong parent, ReadOnlySpan<byte> name, out FuseEntry entry) =>
            throw new InvalidOperationException("a filesystem bug");
    }

    /// <summary>Runs one input on its own thread so a hang fails the test instead of stalling it.</summary>
    private static void RunGuarded(IFuzzTarget target, byte[] input, string what)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                FuzzRunner.RunOne(target, input);
            }
#pragma warning disable CA1031 // Any escaping exception is the finding; it is reported below with the input.
            catch (Exception e)
#pragma warning restore CA1031
            {
                failure = e;
            }
        })
        { IsBackground = true };
        thread.Start();
        bool finished = thread.Join(InputTimeLimit);
        if (!finished || failure is not null)
        {
            string saved = Path.Combine(Path.GetTempPath(), $"vfs-fuzz-finding-{target.Name}-{Guid.NewGuid():N}");
            File.WriteAllBytes(saved, input);
            Assert.Fail($"{target.Name}, {what} (saved as {saved}; add it to tests/fuzz/corpus/{target.Name}): "
                + (finished ? failure!.ToString() : $"no result within {InputTimeLimit.TotalSeconds} s"));
        }
    }

    /// <summary>tests/fuzz/corpus, found from the test binary's directory upwards.</summary>
    private static string CorpusRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "fuzz", "corpus");
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new DirectoryNotFoundException("tests/fuzz/corpus not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>The fuzz tests count fds and create shares; they run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FuzzCollection
{
    public const string Name = "fuzz";
}
