using BenchmarkDotNet.Running;

namespace VirtioFs.Microbenchmarks;

public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
