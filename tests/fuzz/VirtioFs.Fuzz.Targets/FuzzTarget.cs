// Namespace overview: VirtioFs.Fuzz holds one fuzz target per kind of untrusted input (issue 9 item 6): vhost-user
// messages and the memory/vring set-up they drive, descriptor chains in guest memory, FUSE requests dispatched to the
// passthrough and to the RAFS image filesystem, RAFS bootstraps, OCI JSON and bootstrap layers, and WWW-Authenticate
// headers. A target turns bytes into calls on the real code and throws when something a hostile peer must never cause
// happens: an exception the layer does not document, a broken reply, a swallowed exception, a leaked fd or a write
// outside the share. The runner adds the allocation cap; afl++ (long runs) and the CI replay add the time limit.
namespace VirtioFs.Fuzz;

/// <summary>One fuzz target: a pure function of its input bytes, plus the valid inputs its mutations start from.</summary>
public interface IFuzzTarget : IDisposable
{
    /// <summary>The name on the command line and of the corpus directory (tests/fuzz/corpus/NAME).</summary>
    string Name { get; }

    /// <summary>Inputs longer than this are cut (afl's -G; the replay's mutator).</summary>
    int MaxInput { get; }

    /// <summary>Valid inputs built the way the unit tests build them (real negotiations, requests, images, documents).</summary>
    IEnumerable<(string Name, byte[] Data)> Seeds();

    /// <summary>Runs one input. Throws <see cref="FuzzFailure"/> or lets an undocumented exception escape on a finding.</summary>
    void Run(ReadOnlySpan<byte> input);
}

/// <summary>A finding that is not an exception of the code under test: a bad reply, a swallowed exception, a leak.</summary>
public sealed class FuzzFailure(string message) : Exception(message);

/// <summary>The targets by name.</summary>
public static class FuzzTargets
{
    public static readonly string[] Names = ["vhost-user", "chain", "fuse-passthrough", "fuse-rafs", "rafs", "oci", "auth"];

    public static IFuzzTarget Create(string name) => name switch
    {
        "vhost-user" => new VhostUserTarget(),
        "chain" => new ChainTarget(),
        "fuse-passthrough" => new FuseTarget(FuseTarget.Backing.Passthrough),
        "fuse-rafs" => new FuseTarget(FuseTarget.Backing.Rafs),
        "rafs" => new RafsBootstrapTarget(),
        "oci" => new OciTarget(),
        "auth" => new AuthChallengeTarget(),
        _ => throw new ArgumentException($"unknown fuzz target '{name}' (known: {string.Join(", ", Names)})", nameof(name)),
    };
}

/// <summary>Runs one input with the checks every target shares.</summary>
public static class FuzzRunner
{
    /// <summary>
    /// Bytes one input may allocate on the running thread. Legitimate work is bounded by the input (a 1 MiB input
    /// never needs more than a few times its size) plus fixed costs (a 16 MiB chunk buffer is the largest a RAFS image
    /// may ask for); an allocation sized by a field an attacker controls blows through this.
    /// </summary>
    public static long AllocationCap(int inputLength) => (48L << 20) + 64L * inputLength;

    public static void RunOne(IFuzzTarget target, ReadOnlySpan<byte> input)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (input.Length > target.MaxInput)
        {
            input = input[..target.MaxInput];
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        target.Run(input);
        long used = GC.GetAllocatedBytesForCurrentThread() - before;
        if (used > AllocationCap(input.Length))
        {
            throw new FuzzFailure($"{target.Name}: one input of {input.Length} bytes allocated {used} bytes (cap {AllocationCap(input.Length)})");
        }
    }
}
