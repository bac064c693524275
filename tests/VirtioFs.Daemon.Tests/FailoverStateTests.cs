using System.Buffers.Binary;
using System.Security.Cryptography;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Failover;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// The state a daemon hands to nydus-snapshotter's supervisor (src/VirtioFs.Daemon/Failover/STATE-FORMAT.md): it must
/// round-trip exactly, and a successor must refuse another version, a truncated or altered state, and counts over the
/// caps, with an error that says which, before allocating by them.
/// </summary>
public sealed class FailoverStateTests
{
    private static FailoverState Sample(int nodes = 3, int handles = 2) => new(
        FuseInitFlags.AsyncRead | FuseInitFlags.DoReaddirplus | FuseInitFlags.InitExt,
        1 << 20,
        57,
        [
            new FailoverMount("/run/nydus/m1", "rafs", "/var/lib/nydus/boot", """{"device":{}}""", "/blobs", "/cache",
                SHA256.HashData("bootstrap"u8),
                [.. Enumerable.Range(0, nodes).Select(i => new RafsFileSystem.HeldNode((ulong)i + 2, (ulong)i + 1, (ulong)i * 7, 0x81A4))],
                [.. Enumerable.Range(0, handles).Select(i => new RafsFileSystem.HeldHandle((ulong)i + 1, (ulong)i + 2))],
                (ulong)handles + 1),
        ]);

    [Fact]
    public void State_round_trips_every_field()
    {
        FailoverState s = Sample();
        FailoverState back = FailoverState.Decode(s.Encode());
        Assert.Equal(s.InitFlags, back.InitFlags);
        Assert.Equal(s.MaxWrite, back.MaxWrite);
        Assert.Equal(s.ConnectionId, back.ConnectionId);
        FailoverMount m = Assert.Single(back.Mounts), o = s.Mounts[0];
        Assert.Equal((o.MountPoint, o.FsType, o.Source, o.Config, o.BlobDir, o.CacheDir, o.NextHandle),
            (m.MountPoint, m.FsType, m.Source, m.Config, m.BlobDir, m.CacheDir, m.NextHandle));
        Assert.Equal(o.BootstrapSha256, m.BootstrapSha256);
        Assert.Equal(o.Nodes, m.Nodes);
        Assert.Equal(o.Handles, m.Handles);
    }

    [Fact]
    public void Another_version_is_refused_by_name()
    {
        byte[] bytes = Sample().Encode();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), 2);
        var e = Assert.Throws<FailoverStateException>(() => FailoverState.Decode(bytes));
        Assert.Contains("version 2 is not supported", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Foreign_bytes_are_refused()
    {
        var e = Assert.Throws<FailoverStateException>(() => FailoverState.Decode("not a state at all"u8));
        Assert.Contains("bad magic", e.Message, StringComparison.Ordinal);
        Assert.Throws<FailoverStateException>(() => FailoverState.Decode([]));
    }

    [Fact]
    public void Every_truncation_and_every_flipped_byte_is_refused()
    {
        byte[] bytes = Sample().Encode();
        for (int len = 0; len < bytes.Length; len++)
        {
            Assert.Throws<FailoverStateException>(() => FailoverState.Decode(bytes.AsSpan(0, len)));
        }
        for (int i = 0; i < bytes.Length; i++)
        {
            byte[] bad = (byte[])bytes.Clone();
            bad[i] ^= 0x40;
            Assert.Throws<FailoverStateException>(() => FailoverState.Decode(bad));
        }
    }

    /// <summary>A state whose checksum is right (a hostile supervisor can compute it) but whose counts lie.</summary>
    [Theory]
    [InlineData(0xFFFF_FFFFu, "at most")]
    [InlineData((uint)FailoverState.MaxNodes, "truncated")]
    [InlineData(1000u, "truncated")]
    public void A_node_count_beyond_the_cap_or_the_bytes_left_is_refused_before_allocating(uint count, string expected)
    {
        byte[] bytes = Sample(nodes: 1, handles: 0).Encode();
        byte[] body = bytes[..^32];
        // The node count follows the bootstrap digest; find it by its known value (1) right after the digest.
        int at = IndexOfDigest(body, SHA256.HashData("bootstrap"u8)) + 32;
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(at)));
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(at), count);
        var e = Assert.Throws<FailoverStateException>(() => FailoverState.Decode([.. body, .. SHA256.HashData(body)]));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Over_long_strings_and_too_many_mounts_are_refused()
    {
        var longPath = new FailoverState(0, 4096, 0, [Sample().Mounts[0] with { Source = new string('a', FailoverState.MaxPath + 1) }]);
        Assert.Throws<FailoverStateException>(() => longPath.Encode());
        var many = new FailoverState(0, 4096, 0, [.. Enumerable.Repeat(Sample().Mounts[0], FailoverState.MaxMounts + 1)]);
        Assert.Throws<FailoverStateException>(() => many.Encode());

        // A hand-made state claiming 2^32-1 mounts, with a valid checksum.
        byte[] body = Sample().Encode()[..^32];
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(8 + 4 + 4 + 8 + 4 + 8), 0xFFFF_FFFF);
        var e = Assert.Throws<FailoverStateException>(() => FailoverState.Decode([.. body, .. SHA256.HashData(body)]));
        Assert.Contains("mounts; at most", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_large_table_round_trips()
    {
        FailoverState s = Sample(nodes: 200_000, handles: 50_000);
        byte[] bytes = s.Encode();
        FailoverState back = FailoverState.Decode(bytes);
        Assert.Equal(200_000, back.Mounts[0].Nodes.Count);
        Assert.Equal(s.Mounts[0].Handles[^1], back.Mounts[0].Handles[^1]);
    }

    // nydus-snapshotter passes --failover-policy and --supervisor as separate words (pkg/daemon/command/command.go
    // BuildCommand); nydusd's clap also takes --flag=value.
    [Theory]
    [InlineData("--failover-policy", "flush", FailoverPolicy.Flush)]
    [InlineData("--failover-policy=resend", null, FailoverPolicy.Resend)]
    [InlineData("--failover-policy=none", null, FailoverPolicy.None)]
    public void Failover_flags_parse_in_both_forms(string flag, string? value, FailoverPolicy expected)
    {
        string[] args = value is null
            ? ["mount", "--bootstrap", "/b", "--blob-dir", "/d", "--apisock", "/a", "--supervisor=/s", "--upgrade", flag, "/m"]
            : ["mount", "--bootstrap", "/b", "--blob-dir", "/d", "--apisock", "/a", "--supervisor", "/s", "--upgrade", flag, value, "/m"];
        DaemonOptions o = OptionParser.Parse(args);
        Assert.Equal(("/s", true, expected), (o.Supervisor, o.Upgrade, o.FailoverPolicy));
        Assert.Equal(FailoverPolicy.Resend, OptionParser.Parse(["mount", "--bootstrap", "/b", "--blob-dir", "/d", "/m"]).FailoverPolicy); // nydusd's default
    }

    [Theory]
    [InlineData("is not one of resend, flush, none", "mount", "--bootstrap", "/b", "--blob-dir", "/d", "--failover-policy", "later", "/m")]
    [InlineData("--upgrade needs --supervisor", "mount", "--bootstrap", "/b", "--blob-dir", "/d", "--upgrade", "/m")]
    [InlineData("apply to the /dev/fuse mount", "--bootstrap", "/b", "--blob-dir", "/d", "--socket-path", "/s", "--supervisor", "/x")]
    public void Failover_flags_are_refused_where_they_cannot_work(string expected, params string[] args)
    {
        var e = Assert.Throws<OptionParser.UsageException>(() => OptionParser.Parse(args));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    private static int IndexOfDigest(byte[] body, byte[] digest) => body.AsSpan().IndexOf(digest);
}
