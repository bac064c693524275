using System.Net;
using System.Net.Sockets;
using System.Text;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>What the <see cref="FaultProxy"/> does to traffic. Faults apply per read on live connections too, so a
/// pooled keep-alive connection cannot dodge them.</summary>
public enum Fault { None, Drop, Http500, Http429, Slow, Truncate, Refuse, Http503SlowDown }

/// <summary>
/// A TCP proxy on loopback between a client and the registry that injects network faults: dropped connections,
/// canned 500/429 answers, slow responses, bodies cut short, refused connections. <see cref="FaultsLeft"/> limits how
/// many requests are hit (negative = every one) so tests can model transient and persistent failures.
/// </summary>
public sealed class FaultProxy : IDisposable
{
    private readonly TcpListener _listener;
    private readonly IPEndPoint _upstream;
    private readonly CancellationTokenSource _stop = new();
    private int _faultsLeft = -1;
    private int _hits;

    public FaultProxy(int upstreamPort)
    {
        _upstream = new IPEndPoint(IPAddress.Loopback, upstreamPort);
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        _ = Task.Run(AcceptLoopAsync);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
    public string Host => $"127.0.0.1:{Port}";
    public volatile Fault Mode;
    public TimeSpan SlowDelay { get; set; } = TimeSpan.FromSeconds(3);
    public int TruncateAfter { get; set; } = 300;
    /// <summary>Requests that still get the fault (negative: all).</summary>
    public int FaultsLeft { get => Volatile.Read(ref _faultsLeft); set => Volatile.Write(ref _faultsLeft, value); }
    public int Hits => Volatile.Read(ref _hits);

    /// <summary>Bytes the server sent back to clients through this proxy (headers included): what a read moved.</summary>
    public long BytesToClient => Interlocked.Read(ref _bytesToClient);
    private long _bytesToClient;

    public void Set(Fault mode, int count = -1)
    {
        FaultsLeft = count;
        Mode = mode;
    }

    /// <summary>True when this request should be faulted (consumes one from <see cref="FaultsLeft"/>).</summary>
    private bool TakeFault()
    {
        if (Mode == Fault.None) return false;
        while (true)
        {
            int left = Volatile.Read(ref _faultsLeft);
            if (left == 0) return false;
            if (left < 0 || Interlocked.CompareExchange(ref _faultsLeft, left - 1, left) == left)
            {
                Interlocked.Increment(ref _hits);
                return true;
            }
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptSocketAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using var c = client;
        if (Mode == Fault.Refuse && TakeFault()) { c.Close(0); return; }
        using var up = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try { await up.ConnectAsync(_upstream, _stop.Token); }
        catch (Exception) { return; }
        // A request/response pair is in flight when the client has sent bytes; the fault decided for it governs the reply.
        Fault current = Fault.None;
        int sentBack = 0;
        var lockObj = new Lock();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        var toServer = Task.Run(async () =>
        {
            var buf = new byte[65536];
            while (true)
            {
                int n = await c.ReceiveAsync(buf, cts.Token);
                if (n == 0) break;
                Fault f = TakeFault() ? Mode : Fault.None;
                lock (lockObj) { current = f; sentBack = 0; }
                switch (f)
                {
                    case Fault.Drop:
                        c.Close(0);
                        return;
                    case Fault.Http500:
                    case Fault.Http429:
                    case Fault.Http503SlowDown:
                        var code = f switch { Fault.Http500 => "500 Internal Server Error", Fault.Http429 => "429 Too Many Requests", _ => "503 Slow Down" };
                        // S3 throttles with 503 and an XML error document whose code is SlowDown (S3 API "Error responses").
                        var (type, body) = f == Fault.Http503SlowDown
                            ? ("application/xml", "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
                            : ("application/json", "{\"errors\":[{\"code\":\"INJECTED\"}]}");
                        await c.SendAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 {code}\r\nContent-Type: {type}\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}"), cts.Token);
                        c.Shutdown(SocketShutdown.Both);
                        return;
                }
                await up.SendAsync(buf.AsMemory(0, n), cts.Token);
            }
        });
        var toClient = Task.Run(async () =>
        {
            var buf = new byte[65536];
            while (true)
            {
                int n = await up.ReceiveAsync(buf, cts.Token);
                if (n == 0) break;
                Fault f;
                lock (lockObj) f = current;
                if (f == Fault.Slow) await Task.Delay(SlowDelay, cts.Token);
                if (f == Fault.Truncate)
                {
                    int allowed;
                    lock (lockObj) { allowed = Math.Max(0, TruncateAfter - sentBack); sentBack += n; }
                    if (allowed < n)
                    {
                        await c.SendAsync(buf.AsMemory(0, allowed), cts.Token);
                        c.Close(0);
                        return;
                    }
                }
                // Counted before it is sent: a client that has its bytes may return, and its test read the count,
                // before this continuation runs (a CI run saw "moved 0" after a read had been answered).
                Interlocked.Add(ref _bytesToClient, n);
                await c.SendAsync(buf.AsMemory(0, n), cts.Token);
            }
        });
        try { await Task.WhenAny(toServer, toClient); }
        catch (Exception) { }
        await cts.CancelAsync();
        try { await Task.WhenAll(toServer, toClient); } catch (Exception) { }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        _stop.Dispose();
    }
}
