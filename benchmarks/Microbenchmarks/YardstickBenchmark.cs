using BenchmarkDotNet.Attributes;

namespace VirtioFs.Microbenchmarks;

/// <summary>
/// Code of ours that no change touches: a 4 KiB copy and a 16 KiB byte sum. On a shared machine every other figure is
/// read as a ratio to these, measured in the same run, so two runs taken under different load can be compared.
/// </summary>
public class YardstickBenchmark
{
    private readonly byte[] _source = new byte[16384];
    private readonly byte[] _destination = new byte[4096];

    [GlobalSetup]
    public void Setup() => new Random(2).NextBytes(_source);

    [Benchmark(Baseline = true, Description = "yardstick: copy 4 KiB")]
    public int Copy4K()
    {
        _source.AsSpan(0, 4096).CopyTo(_destination);
        return _destination[4095];
    }

    [Benchmark(Description = "yardstick: sum 16 KiB byte by byte")]
    public int Sum16K()
    {
        int sum = 0;
        foreach (byte b in _source)
        {
            sum += b;
        }
        return sum;
    }
}
