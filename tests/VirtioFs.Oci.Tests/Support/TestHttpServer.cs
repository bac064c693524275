using System.Net;
using System.Net.Sockets;
using System.Text;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>One parsed HTTP/1.1 request: the request target exactly as sent (origin form <c>/path?q</c> or, to a
/// forward proxy, absolute form <c>http://host/path</c>; RFC 9112 section 3.2) and its headers.</summary>
public sealed record TestRequest(string Method, string Target, IReadOnlyDictionary<string, string> Headers)
{
    public string? Header(string name) => Headers.TryGetValue(name, out var v) ? v : null;

    /// <summary>The path of the target, whichever form it has.</summary>
    public string Path
    {
        get
        {
            string t = Target;
            if (Uri.TryCreate(t, UriKind.Absolute, out var u) && u.Scheme is "http" or "https") t = u.PathAndQuery;
            int q = t.IndexOf('?', StringComparison.Ordinal);
            return q < 0 ? t : t[..q];
        }
    }

    public string Query
    {
        get
        {
            int q = Target.IndexOf('?', StringComparison.Ordinal);
            return q < 0 ? "" : Target[(q + 1)..];
        }
    }
}

public sealed class TestResponse(int status, byte[]? body = null)
{
    public int Status { get; } = status;
    public byte[] Body { get; } = body ?? [];
    public List<(string Name, string Value)> Headers { get; } = new();

    /// <summary>Send no Content-Length and end the body by closing the connection (RFC 9112 section 6.3, item 8).</summary>
    public bool CloseDelimited { get; init; }

    public TestResponse With(string name, string value)
    {
        Headers.Add((name, value));
        return this;
    }
}

/// <summary>
/// A minimal HTTP/1.1 server on 127.0.0.1 for the tests' stand-ins (a dfdaemon-like proxy, a redirecting front, a
/// storage server). Written on sockets rather than HttpListener because the proxy must see absolute-form request lines,
/// and because <see cref="Stop"/> must also cut the client's pooled keep-alive connections (a dead proxy drops them) and
/// <see cref="Start"/> must listen again on the same port. Requests without bodies only (GET/HEAD); 64 KiB of headers at most.
/// </summary>
public sealed class TestHttpServer : IDisposable
{
    private const int MaxHeaderBytes = 64 * 1024;
    private readonly Func<TestRequest, Task<TestResponse>> _handler;
    private readonly Lock _lock = new();
    private readonly HashSet<Socket> _connections = new();
    private Socket? _listener;
    private CancellationTokenSource? _stop;
    private int _requests;

    public TestHttpServer(Func<TestRequest, Task<TestResponse>> handler)
    {
        _handler = handler;
        Start();
    }

    public int Port { get; private set; }
    public string Authority => $"127.0.0.1:{Port}";
    public string Url => $"http://{Authority}";
    public int Requests => Volatile.Read(ref _requests);
    public bool Running { get { lock (_lock) return _listener is not null; } }

    /// <summary>Listens (again, on the same port after a <see cref="Stop"/>).</summary>
    public void Start()
    {
        lock (_lock)
        {
            if (_listener is not null) return;
            var l = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            l.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            l.Bind(new IPEndPoint(IPAddress.Loopback, Port));
            l.Listen(64);
            Port = ((IPEndPoint)l.LocalEndPoint!).Port;
            _listener = l;
            _stop = new CancellationTokenSource();
            var stop = _stop.Token;
            _ = Task.Run(() => AcceptLoopAsync(l, stop));
        }
    }

    /// <summary>Stops listening and resets every open connection, as a killed process would.</summary>
    public void Stop()
    {
        Socket? l;
        Socket[] open;
        lock (_lock)
        {
            l = _listener;
            _listener = null;
            _stop?.Cancel();
            open = _connections.ToArray();
            _connections.Clear();
        }
        l?.Dispose();
        foreach (var c in open)
        {
            try { c.LingerState = new LingerOption(true, 0); } catch (SocketException) { } catch (ObjectDisposedException) { }
            c.Dispose();
        }
    }

    private async Task AcceptLoopAsync(Socket listener, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Socket c;
            try { c = await listener.AcceptAsync(stop); }
            catch (Exception) { return; }
            lock (_lock)
            {
                if (stop.IsCancellationRequested) { c.Dispose(); return; }
                _connections.Add(c);
            }
            _ = Task.Run(() => ServeAsync(c, stop));
        }
    }

    private async Task ServeAsync(Socket c, CancellationToken stop)
    {
        var buf = new byte[MaxHeaderBytes];
        int filled = 0;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                int end;
                while ((end = buf.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
                {
                    if (filled == buf.Length) return;
                    int n = await c.ReceiveAsync(buf.AsMemory(filled), stop);
                    if (n == 0) return;
                    filled += n;
                }
                var head = Encoding.ASCII.GetString(buf, 0, end).Split("\r\n");
                var line = head[0].Split(' ');
                if (line.Length != 3) return;
                var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                foreach (var h in head.Skip(1))
                {
                    int colon = h.IndexOf(':', StringComparison.Ordinal);
                    if (colon > 0) headers[h[..colon].Trim()] = h[(colon + 1)..].Trim();
                }
                int consumed = end + 4;
                // Bodies are not expected; skip one if a client sends it anyway.
                long bodyLeft = headers.TryGetValue("Content-Length", out var cl) && long.TryParse(cl, out long len) ? len : 0;
                int inBuf = (int)Math.Min(bodyLeft, filled - consumed);
                consumed += inBuf;
                bodyLeft -= inBuf;
                Buffer.BlockCopy(buf, consumed, buf, 0, filled - consumed);
                filled -= consumed;
                while (bodyLeft > 0)
                {
                    int n = await c.ReceiveAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, bodyLeft)), stop);
                    if (n == 0) return;
                    bodyLeft -= n;
                }
                Interlocked.Increment(ref _requests);
                var req = new TestRequest(line[0], line[1], headers);
                TestResponse resp;
                try { resp = await _handler(req); }
                catch (Exception e) { resp = new TestResponse(500, Encoding.UTF8.GetBytes(e.ToString())); }
                bool close = resp.CloseDelimited || string.Equals(req.Header("Connection"), "close", StringComparison.OrdinalIgnoreCase);
                var sb = new StringBuilder();
                sb.Append("HTTP/1.1 ").Append(resp.Status).Append(' ').Append(Reason(resp.Status)).Append("\r\n");
                foreach (var (name, value) in resp.Headers) sb.Append(name).Append(": ").Append(value).Append("\r\n");
                if (!resp.CloseDelimited) sb.Append("Content-Length: ").Append(resp.Body.Length).Append("\r\n");
                if (close) sb.Append("Connection: close\r\n");
                sb.Append("\r\n");
                await c.SendAsync(Encoding.ASCII.GetBytes(sb.ToString()), stop);
                if (req.Method != "HEAD" && resp.Body.Length > 0) await c.SendAsync(resp.Body, stop);
                if (close) return;
            }
        }
        catch (Exception) { }
        finally
        {
            lock (_lock) _connections.Remove(c);
            c.Dispose();
        }
    }

    private static string Reason(int status) => status switch
    {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };

    public void Dispose() => Stop();
}
