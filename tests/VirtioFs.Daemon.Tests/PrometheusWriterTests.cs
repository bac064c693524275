using VirtioFs.Daemon.Api;
using VirtioFs.Storage.Backend;
using Xunit;

namespace VirtioFs.Daemon.Tests;

public sealed class PrometheusWriterTests
{
    [Fact]
    public void Writes_help_type_samples_and_a_cumulative_histogram()
    {
        var w = new PrometheusWriter();
        w.Family("vfsd_x_total", "counter", "Things.\nMore \\ things.");
        w.Sample(new Labels("mountpoint", "/a"), 3L);
        w.Sample(new Labels("mountpoint", "/b"), 0.5);
        w.Family("vfsd_lat_seconds", "histogram", "Latency.");
        w.Histogram(new Labels("mountpoint", "/a"), [0.001, 0.01], [2, 0, 5], 0.25);
        Assert.Equal(
            "# HELP vfsd_x_total Things.\\nMore \\\\ things.\n# TYPE vfsd_x_total counter\n" +
            "vfsd_x_total{mountpoint=\"/a\"} 3\nvfsd_x_total{mountpoint=\"/b\"} 0.5\n" +
            "# HELP vfsd_lat_seconds Latency.\n# TYPE vfsd_lat_seconds histogram\n" +
            "vfsd_lat_seconds_bucket{mountpoint=\"/a\",le=\"0.001\"} 2\n" +
            "vfsd_lat_seconds_bucket{mountpoint=\"/a\",le=\"0.01\"} 2\n" +
            "vfsd_lat_seconds_bucket{mountpoint=\"/a\",le=\"+Inf\"} 7\n" +
            "vfsd_lat_seconds_sum{mountpoint=\"/a\"} 0.25\n" +
            "vfsd_lat_seconds_count{mountpoint=\"/a\"} 7\n",
            w.ToString());
        Assert.Equal(7, PrometheusText.Parse(w.ToString()).Value("vfsd_lat_seconds_count"));
    }

    [Theory]
    [InlineData("/rafs/c1/lowerdir")]
    [InlineData("/rafs/\"quoted\"/x")]
    [InlineData("C:\\back\\slash\\")]
    [InlineData("two\nlines")]
    [InlineData("all \\\" \n \\n mixed")]
    [InlineData("ünïcødé ✓")]
    public void Label_values_are_escaped_and_read_back_unchanged(string value)
    {
        var w = new PrometheusWriter();
        w.Family("vfsd_mounted", "gauge", "x");
        w.Sample(new Labels("mountpoint", value), 1L);
        string text = w.ToString();
        Assert.Single(text.TrimEnd('\n').Split('\n'), l => l.StartsWith("vfsd_mounted{", StringComparison.Ordinal)); // no raw newline
        PromSample s = Assert.Single(PrometheusText.Parse(text));
        Assert.Equal(value, s.Label("mountpoint"));
    }

    [Fact]
    public void Programming_errors_are_refused_rather_than_emitted()
    {
        var w = new PrometheusWriter();
        Assert.Throws<InvalidOperationException>(() => w.Sample(Labels.None, 1L));
        Assert.Throws<ArgumentException>(() => w.Family("1bad", "counter", ""));
        Assert.Throws<ArgumentException>(() => w.Family("vfsd_ok", "meter", ""));
        Assert.Throws<ArgumentException>(() => new Labels("bad-label", "v"));
        Assert.Throws<ArgumentException>(() => new Labels("__reserved", "v"));
        w.Family("vfsd_ok", "counter", "");
        Assert.Throws<InvalidOperationException>(() => w.Family("vfsd_ok", "counter", ""));
        Assert.Throws<InvalidOperationException>(() => w.Histogram(Labels.None, [1.0], [1, 1], 1));
        w.Family("vfsd_h", "histogram", "");
        Assert.Throws<ArgumentException>(() => w.Histogram(Labels.None, [1.0, 2.0], [1, 1], 1));
        Assert.Throws<ArgumentException>(() => w.Histogram(Labels.None, [2.0, 1.0], [1, 1, 1], 1));
    }

    [Theory]
    [InlineData("vfsd_a 1\n", "no TYPE")]
    [InlineData("# TYPE vfsd_a counter\nvfsd_a 1", "newline")]
    [InlineData("# TYPE vfsd_a counter\nvfsd_a{x=\"a\\q\"} 1\n", "bad escape")]
    [InlineData("# TYPE vfsd_a counter\nvfsd_a{x=\"a} 1\n", "unterminated")]
    [InlineData("# TYPE vfsd_a counter\nvfsd_a one\n", "bad value")]
    [InlineData("# TYPE vfsd_a counter\nvfsd_a 1\nvfsd_a 2\n", "duplicate")]
    [InlineData("# TYPE vfsd_a counter\n# TYPE vfsd_b gauge\nvfsd_a 1\nvfsd_b 1\nvfsd_a{x=\"1\"} 1\n", "contiguous")]
    [InlineData("# TYPE vfsd_h histogram\nvfsd_h_bucket{le=\"1\"} 3\nvfsd_h_bucket{le=\"+Inf\"} 2\nvfsd_h_sum 1\nvfsd_h_count 2\n", "cumulative")]
    [InlineData("# TYPE vfsd_h histogram\nvfsd_h_bucket{le=\"1\"} 3\nvfsd_h_sum 1\nvfsd_h_count 3\n", "+Inf")]
    [InlineData("# TYPE vfsd_h histogram\nvfsd_h_bucket{le=\"+Inf\"} 3\nvfsd_h_sum 1\nvfsd_h_count 4\n", "_count")]
    [InlineData("# TYPE vfsd_h histogram\nvfsd_h_bucket{le=\"2\"} 1\nvfsd_h_bucket{le=\"1\"} 1\nvfsd_h_bucket{le=\"+Inf\"} 1\nvfsd_h_sum 1\nvfsd_h_count 1\n", "ascend")]
    public void The_validator_rejects_what_a_scraper_would(string text, string why)
    {
        var e = Assert.Throws<FormatException>(() => PrometheusText.Parse(text));
        Assert.Contains(why, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Backend_counters_fill_size_classes_and_latency_buckets()
    {
        var c = new BackendCounters();
        c.Complete(BackendCounters.Start(), 512, ok: true);
        c.Complete(BackendCounters.Start(), 64 << 10, ok: true);
        c.Complete(BackendCounters.Start(), 4 << 20, ok: false);
        // A request that took about 30 ms (timestamp taken that long ago).
        long start = BackendCounters.Start() - (long)(0.030 * System.Diagnostics.Stopwatch.Frequency);
        c.Complete(start, 4096, ok: true);
        BackendMetrics m = c.Snapshot();
        Assert.Equal(4, m.Requests);
        Assert.Equal(1, m.Errors);
        Assert.Equal(512 + (64 << 10) + 4096, m.Bytes);
        Assert.Equal([1L, 0, 1, 0, 1, 0, 0, 1], m.RequestsPerSizeClass());
        long[] buckets = m.LatencyBuckets();
        Assert.Equal(4, buckets.Sum());
        int b30 = BackendMetrics.LatencyBoundsMicros.ToList().FindIndex(us => us >= 30_000);
        Assert.True(buckets.Skip(b30).Sum() >= 1, "the 30 ms request lands at or above the 50 ms bucket");
        Assert.True(m.MaxLatency >= TimeSpan.FromMilliseconds(30));
        Assert.True(m.Quantile(1.0) >= TimeSpan.FromMilliseconds(20));
        Assert.True(m.Quantile(0.25) < TimeSpan.FromMilliseconds(20));
        Assert.Equal(TimeSpan.Zero, new BackendCounters().Snapshot().Quantile(0.5));
        Assert.Equal(4, BackendMetrics.SizeClassOf(64 << 10));
        Assert.Equal(3, BackendMetrics.SizeClassOf((64 << 10) - 1));
        Assert.Equal(7, BackendMetrics.SizeClassOf(long.MaxValue));
    }
}
