using System.Buffers;
using System.Text;
using VirtioFs.Daemon.Api;
using Xunit;

namespace VirtioFs.Daemon.Tests;

public class ApiParserTests
{
    private static readonly HttpLimits Limits = new() { MaxHeaderBytes = 1024, MaxHeaderCount = 8, MaxBodyBytes = 256 };

    private static HttpParseStatus Parse(byte[] bytes, out HttpRequest? request, out HttpParseError error, out long consumed)
    {
        var seq = new ReadOnlySequence<byte>(bytes);
        HttpParseStatus s = HttpParser.TryParse(seq, Limits, out request, out SequencePosition pos, out error);
        consumed = seq.Slice(0, pos).Length;
        return s;
    }

    /// <summary>A sequence whose segments end at the given offsets (as a socket might deliver them).</summary>
    private static ReadOnlySequence<byte> Segmented(byte[] bytes, params int[] cuts)
    {
        var bounds = cuts.Where(c => c > 0 && c < bytes.Length).Distinct().Order().Append(bytes.Length).ToArray();
        Segment? first = null, last = null;
        int start = 0;
        foreach (int end in bounds)
        {
            var s = new Segment(bytes.AsMemory(start, end - start), last?.RunningIndex + last?.Memory.Length ?? 0);
            if (last is null) first = s;
            else last.SetNext(s);
            last = s;
            start = end;
        }
        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> m, long index)
        {
            Memory = m;
            RunningIndex = index;
        }

        public void SetNext(Segment s) => Next = s;
    }

    private const string Mount = "POST /api/v1/mount?mountpoint=%2Frafs%2Fc1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 17\r\n\r\n{\"source\":\"/bs\"}X";

    [Fact]
    public void Parses_a_request_with_query_and_body_and_stops_at_its_end()
    {
        byte[] b = Encoding.ASCII.GetBytes(Mount);
        Assert.Equal(HttpParseStatus.Complete, Parse(b, out var r, out _, out long consumed));
        Assert.Equal("POST", r!.Method);
        Assert.Equal("/api/v1/mount", r.Path);
        Assert.Equal("/rafs/c1", r.QueryParameter("mountpoint"));
        Assert.Null(r.QueryParameter("id"));
        Assert.Equal("{\"source\":\"/bs\"}X"[..17], Encoding.ASCII.GetString(r.Body));
        Assert.Equal(b.Length, consumed);
        Assert.True(r.KeepAlive);
        Assert.Equal("localhost", r.Header("host"));
    }

    [Fact]
    public void A_request_split_at_every_byte_is_incomplete_until_its_last_byte()
    {
        byte[] b = Encoding.ASCII.GetBytes(Mount);
        for (int n = 0; n < b.Length; n++)
        {
            Assert.Equal(HttpParseStatus.Incomplete, Parse(b[..n], out _, out _, out long consumed));
            Assert.Equal(0, consumed);
        }
        // And the whole request cut into two segments at every offset parses the same.
        for (int cut = 1; cut < b.Length; cut++)
        {
            var seq = Segmented(b, cut, cut / 2);
            Assert.Equal(HttpParseStatus.Complete, HttpParser.TryParse(seq, Limits, out var r, out var pos, out _));
            Assert.Equal(17, r!.Body.Length);
            Assert.Equal(b.Length, seq.Slice(0, pos).Length);
        }
    }

    [Fact]
    public void Pipelined_requests_are_parsed_one_at_a_time()
    {
        byte[] b = Encoding.ASCII.GetBytes("GET /api/v1/daemon HTTP/1.1\r\n\r\nGET /api/v1/metrics HTTP/1.0\r\n\r\n");
        var seq = new ReadOnlySequence<byte>(b);
        Assert.Equal(HttpParseStatus.Complete, HttpParser.TryParse(seq, Limits, out var r1, out var pos, out _));
        Assert.Equal("/api/v1/daemon", r1!.Path);
        seq = seq.Slice(pos);
        Assert.Equal(HttpParseStatus.Complete, HttpParser.TryParse(seq, Limits, out var r2, out pos, out _));
        Assert.Equal("/api/v1/metrics", r2!.Path);
        Assert.False(r2.KeepAlive); // HTTP/1.0 without keep-alive
        Assert.True(seq.Slice(pos).IsEmpty);
    }

    [Theory]
    [InlineData("GET http://localhost/api/v1/daemon?x=1 HTTP/1.1\r\n\r\n", "/api/v1/daemon", "x=1")]
    [InlineData("GET /api/v1/daemon/ HTTP/1.1\r\n\r\n", "/api/v1/daemon/", "")]
    [InlineData("DELETE /api/v1/mount?mountpoint=/a+b&x HTTP/1.1\r\nConnection: close\r\n\r\n", "/api/v1/mount", "mountpoint=/a+b&x")]
    [InlineData("GET / HTTP/1.1\r\nX-Empty:\r\nX-Pad:   v  \r\n\r\n", "/", "")]
    public void Accepts(string text, string path, string query)
    {
        Assert.Equal(HttpParseStatus.Complete, Parse(Encoding.ASCII.GetBytes(text), out var r, out _, out _));
        Assert.Equal(path, r!.Path);
        Assert.Equal(query, r.Query);
    }

    [Theory]
    [InlineData("GET\r\n\r\n", 400)]
    [InlineData("GET /x\r\n\r\n", 400)]
    [InlineData(" GET /x HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET  /x HTTP/1.1\r\n\r\n", 400)]
    [InlineData("G(T /x HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET x HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET /x HTTP/2.0\r\n\r\n", 505)]
    [InlineData("GET /x FOO/1.1\r\n\r\n", 400)]
    [InlineData("GET /\x01 HTTP/1.1\r\n\r\n", 400)]
    [InlineData("GET /x HTTP/1.1\nHost: a\r\n\r\n", 400)]
    [InlineData("GET /x HTTP/1.1\r\nHost : a\r\n\r\n", 400)]
    [InlineData("GET /x HTTP/1.1\r\nNoColon\r\n\r\n", 400)]
    [InlineData("GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400)]
    [InlineData("GET /x HTTP/1.1\r\nA: b\nc\r\n\r\n", 400)]
    [InlineData("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400)]
    [InlineData("POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400)]
    [InlineData("POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400)]
    [InlineData("POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400)]
    [InlineData("POST /x HTTP/1.1\r\nContent-Length: 257\r\n\r\n", 413)]
    [InlineData("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501)]
    [InlineData("GET /x HTTP/1.1\r\nA: 1\r\nA: 2\r\nA: 3\r\nA: 4\r\nA: 5\r\nA: 6\r\nA: 7\r\nA: 8\r\nA: 9\r\n\r\n", 431)]
    public void Refuses(string text, int status)
    {
        Assert.Equal(HttpParseStatus.Error, Parse(Encoding.Latin1.GetBytes(text), out _, out HttpParseError e, out _));
        Assert.Equal(status, e.StatusCode);
    }

    [Fact]
    public void Oversized_heads_are_refused_even_before_they_end()
    {
        byte[] endless = Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nA: " + new string('a', 2000));
        Assert.Equal(HttpParseStatus.Error, Parse(endless, out _, out var e, out _));
        Assert.Equal(431, e.StatusCode);
        byte[] complete = Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nA: " + new string('a', 1010) + "\r\n\r\n");
        Assert.Equal(HttpParseStatus.Error, Parse(complete, out _, out e, out _));
        Assert.Equal(431, e.StatusCode);
        // Just under the cap is fine.
        byte[] fits = Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nA: " + new string('a', 980) + "\r\n\r\n");
        Assert.Equal(HttpParseStatus.Complete, Parse(fits, out _, out _, out _));
    }

    [Fact]
    public void Random_bytes_never_throw_and_never_overrun()
    {
        var rng = new Random(1234);
        string[] seeds = [Mount, "GET /api/v1/daemon HTTP/1.1\r\n\r\n", "PUT /api/v1/daemon/exit HTTP/1.1\r\nContent-Length: 0\r\n\r\n"];
        for (int i = 0; i < 20_000; i++)
        {
            byte[] b;
            if (i % 2 == 0)
            {
                b = new byte[rng.Next(0, 300)];
                rng.NextBytes(b);
            }
            else
            {
                // Mutate a valid request: flip, insert or truncate bytes.
                b = Encoding.ASCII.GetBytes(seeds[rng.Next(seeds.Length)]);
                for (int m = rng.Next(1, 4); m > 0; m--) b[rng.Next(b.Length)] = (byte)rng.Next(256);
                b = b[..rng.Next(b.Length + 1)];
            }
            var seq = Segmented(b, rng.Next(b.Length + 1), rng.Next(b.Length + 1));
            HttpParseStatus s = HttpParser.TryParse(seq, Limits, out var r, out var pos, out var e);
            long consumed = seq.Slice(0, pos).Length;
            Assert.InRange(consumed, 0, b.Length);
            if (s == HttpParseStatus.Complete) Assert.NotNull(r);
            if (s == HttpParseStatus.Error) Assert.InRange(e.StatusCode, 400, 599);
            if (s != HttpParseStatus.Complete) Assert.Equal(0, consumed);
        }
    }
}
