using VirtioFs.Fuse;
using Xunit;

namespace VirtioFs.Fuse.Tests;

/// <summary>nydus's own test vectors for its FsIoStats buckets (nydus-utils src/metrics.rs tests), and its counting rules.</summary>
public sealed class FsIoStatsTests
{
    [Theory]
    [InlineData(0x0, 0)]
    [InlineData(0x3ff, 0)]
    [InlineData(0x400, 1)]
    [InlineData(0xfff, 1)]
    [InlineData(0x1000, 2)]
    [InlineData(0x3fff, 2)]
    [InlineData(0x4000, 3)]
    [InlineData(0xffff, 3)]
    [InlineData(0x1_0000, 4)]
    [InlineData(0x1_ffff, 4)]
    [InlineData(0x2_0000, 5)]
    [InlineData(0x7_ffff, 5)]
    [InlineData(0x8_0000, 6)]
    [InlineData(0xf_ffff, 6)]
    [InlineData(0x10_0000, 7)]
    [InlineData(long.MaxValue, 7)]
    public void Request_size_index_matches_nydus(long size, int index) => Assert.Equal(index, FsIoStats.RequestSizeIndex(size));

    [Theory]
    [InlineData(0, 0)]
    [InlineData(200, 0)]
    [InlineData(201, 1)]
    [InlineData(1_000, 1)]
    [InlineData(20_000, 2)]
    [InlineData(50_000, 3)]
    [InlineData(500_000, 4)]
    [InlineData(1_000_000, 5)]
    [InlineData(2_000_000, 6)]
    [InlineData(2_000_001, 7)]
    public void Latency_range_matches_nydus(long micros, int index) => Assert.Equal(index, FsIoStats.LatencyMicrosRangeIndex(micros));

    [Fact]
    public void Counts_follow_nydus_fop_update()
    {
        var s = new FsIoStats();
        s.Record(FuseOpcode.Read, TimeSpan.FromMicroseconds(100), 0, 4000);   // 1K.. bucket, <=200 us
        s.Record(FuseOpcode.Read, TimeSpan.FromMilliseconds(30), 0, 131072); // 128K.. bucket, <=50 ms
        s.Record(FuseOpcode.Read, TimeSpan.FromMicroseconds(10), 5, 0);      // failed: an error, size 0
        s.Record(FuseOpcode.Open, TimeSpan.Zero, 0, 0);
        s.Record(FuseOpcode.Open, TimeSpan.Zero, 0, 0);
        s.Record(FuseOpcode.Release, TimeSpan.Zero, 0, 0);
        s.Record(FuseOpcode.Lookup, TimeSpan.Zero, 2, 0);
        s.Record(FuseOpcode.Write, TimeSpan.Zero, 0, 0);                     // not a StatsFop: not counted
        FsIoStatsSnapshot m = s.Snapshot();
        Assert.Equal(2, m.FopHits[(int)StatsFop.Read]);
        Assert.Equal(1, m.FopErrors[(int)StatsFop.Read]);
        Assert.Equal(4000 + 131072, m.DataRead);
        Assert.Equal([1, 1, 0, 0, 0, 1, 0, 0], m.BlockCountRead);
        Assert.Equal([2, 0, 0, 1, 0, 0, 0, 0], m.ReadLatencyDist);
        Assert.Equal(1, m.NrOpens);
        Assert.Equal(1, m.FopErrors[(int)StatsFop.Lookup]);
        Assert.Equal(5, m.FopHits.Sum()); // read 2, open 2, release 1; the lookup failed
        Assert.Equal(4, (int)StatsFop.Read);
        Assert.Equal(FsIoStats.FopCount, Enum.GetValues<StatsFop>().Length);
    }

    [Fact]
    public void Inflight_lists_requests_between_begin_and_end()
    {
        var s = new FsIoStats();
        Assert.Empty(s.Inflight());
        InflightToken a = s.Begin(FuseOpcode.Read, 10, 3);
        InflightToken b = s.Begin(FuseOpcode.Lookup, 10 + FsIoStats.InflightSlots, 1); // same home slot: probes on
        Assert.Equal([10UL, 10UL + FsIoStats.InflightSlots], s.Inflight().Select(o => o.Unique).Order());
        s.End(FuseOpcode.Read, a, 0, 100);
        InflightOp left = Assert.Single(s.Inflight());
        Assert.Equal((uint)FuseOpcode.Lookup, left.Opcode);
        s.End(FuseOpcode.Lookup, b, 0, 0);
        Assert.Empty(s.Inflight());
        // More requests than slots are still counted, just not listed.
        var tokens = Enumerable.Range(1, FsIoStats.InflightSlots + 5).Select(i => s.Begin(FuseOpcode.GetAttr, (ulong)i, 1)).ToList();
        Assert.Equal(FsIoStats.InflightSlots, s.Inflight().Count);
        foreach (InflightToken t in tokens) s.End(FuseOpcode.GetAttr, t, 0, 0);
        Assert.Empty(s.Inflight());
        Assert.Equal(FsIoStats.InflightSlots + 5, s.Snapshot().FopHits[(int)StatsFop.Getattr]);
    }
}
