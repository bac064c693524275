using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

namespace VirtioFs.Microbenchmarks;

public static class Program
{
    // Median and the min-max range next to the mean: on a shared machine the median is the figure to compare.
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly)
        .Run(args, DefaultConfig.Instance.AddColumn(StatisticColumn.Median, StatisticColumn.Min, StatisticColumn.Max));
}
