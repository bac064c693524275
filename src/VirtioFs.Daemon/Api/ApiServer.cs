using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.Api;

public sealed class ApiServerOptions
{
    public HttpLimits Limits { get; init; } = new();
    /// <summary>Connections served at once; more are accepted and closed at once.</summary>
    public int MaxConnections { get; init; } = 64;
    /// <summary>
    /// How long a connection may stay idle between requests. Infinite by default: nydus-snapshotter's liveness monitor
    /// (pkg/manager/monitor.go) holds an idle connection for the daemon's whole life and takes a hang-up for its death,
    /// and nydusd never closes one. The HTTP clients close their own idle connections (Go's IdleConnTimeout, 10 s).
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = Timeout.InfiniteTimeSpan;
    /// <summary>
    /// Once the first byte of a request has arrived, the whole request must arrive within this (slow-loris
    /// protection); a connection that has sent nothing is never closed by it.
    /// </summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// HTTP/1.1 over a Unix socket (nydusd --apisock): one task per connection reading through a <see cref="PipeReader"/>,
/// so a slow or idle client never blocks another; keep-alive; every limit enforced by <see cref="HttpParser"/>.
/// </summary>
public sealed class ApiServer : IAsyncDisposable
{
    private readonly string _path;
    private readonly ApiRouter _router;
    private readonly ApiServerOptions _options;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly HashSet<Socket> _connections = [];
    private Socket? _listener;
    private Task _acceptLoop = Task.CompletedTask;

    public ApiServer(string socketPath, IDaemonControl control, ILogger logger, ApiServerOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        ArgumentNullException.ThrowIfNull(control);
        ArgumentNullException.ThrowIfNull(logger);
        _path = socketPath;
        _router = new ApiRouter(control);
        _options = options ?? new ApiServerOptions();
        _logger = logger;
    }

    public string SocketPath => _path;

    /// <summary>Binds the socket (replacing a stale socket file, as nydusd does) and starts accepting.</summary>
    public void Start()
    {
        // A socket file left by a previous run would make bind fail with EADDRINUSE.
        if (File.Exists(_path))
        {
            File.Delete(_path);
        }
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(_path));
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _listener = listener;
        ApiLog.Listening(_logger, _path);
        _acceptLoop = AcceptLoopAsync(listener);
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (_stop.IsCancellationRequested) return;
                ApiLog.AcceptFailed(_logger, ex.Message);
                await Task.Delay(100).ConfigureAwait(false);
                continue;
            }
            lock (_lock)
            {
                if (_connections.Count >= _options.MaxConnections)
                {
                    ApiLog.TooManyConnections(_logger, _options.MaxConnections);
                    client.Dispose();
                    continue;
                }
                _connections.Add(client);
            }
            // Off the accept loop: a request already buffered would otherwise run (and a slow mount block) inline here.
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        await using var stream = new NetworkStream(socket, ownsSocket: true);
        PipeReader reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        PipeWriter writer = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
        try
        {
            bool open = true;
            long requestBegan = 0; // timestamp of the first byte of a request not yet complete; 0 between requests
            while (open && !_stop.IsCancellationRequested)
            {
                ReadResult read;
                TimeSpan wait = requestBegan == 0 ? _options.IdleTimeout : _options.RequestTimeout - Stopwatch.GetElapsedTime(requestBegan);
                if (wait != Timeout.InfiniteTimeSpan && wait <= TimeSpan.Zero) break;
                if (wait == Timeout.InfiniteTimeSpan)
                {
                    read = await reader.ReadAsync(_stop.Token).ConfigureAwait(false);
                }
                else
                {
                    using var deadline = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                    deadline.CancelAfter(wait);
                    read = await reader.ReadAsync(deadline.Token).ConfigureAwait(false);
                }
                ReadOnlySequence<byte> buffer = read.Buffer;
                // Serve every complete request already buffered (pipelining), then wait for more.
                while (open)
                {
                    HttpParseStatus status = HttpParser.TryParse(buffer, _options.Limits, out HttpRequest? request,
                        out SequencePosition consumed, out HttpParseError error);
                    if (status == HttpParseStatus.Incomplete) break;
                    if (status == HttpParseStatus.Error)
                    {
                        ApiLog.BadRequest(_logger, error.StatusCode, error.Reason);
                        await WriteAsync(writer, ApiRouter.Error(error.StatusCode, error.Reason), keepAlive: false).ConfigureAwait(false);
                        open = false;
                        break;
                    }
                    buffer = buffer.Slice(consumed);
                    HttpResponse response = _router.Handle(request!);
                    ApiLog.Request(_logger, request!.Method, request.Path, response.StatusCode);
                    await WriteAsync(writer, response, request.KeepAlive).ConfigureAwait(false);
                    response.AfterSent?.Invoke();
                    open = request.KeepAlive;
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                if (read.IsCompleted) break;
                // A request has begun and is not complete yet: its deadline runs from its first byte.
                if (buffer.IsEmpty) requestBegan = 0;
                else if (requestBegan == 0) requestBegan = Stopwatch.GetTimestamp();
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
            // A request too slow to arrive, shutdown, or the client went away: just close.
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
            await writer.CompleteAsync().ConfigureAwait(false);
            lock (_lock)
            {
                _connections.Remove(socket);
            }
        }
    }

    private static async ValueTask WriteAsync(PipeWriter writer, HttpResponse r, bool keepAlive)
    {
        var head = new StringBuilder(160);
        head.Append("HTTP/1.1 ").Append(r.StatusCode).Append(' ').Append(HttpResponse.ReasonPhrase(r.StatusCode)).Append("\r\n");
        head.Append("Server: Nydus API\r\nContent-Type: ").Append(r.ContentType).Append("\r\n");
        if (r.StatusCode != 204) head.Append("Content-Length: ").Append(r.Body.Length).Append("\r\n");
        if (!keepAlive) head.Append("Connection: close\r\n");
        head.Append("\r\n");
        writer.Write(Encoding.ASCII.GetBytes(head.ToString()));
        if (r.StatusCode != 204) writer.Write(r.Body);
        await writer.FlushAsync().ConfigureAwait(false);
    }

    /// <summary>Stops accepting, closes every connection and removes the socket file.</summary>
    public async Task StopAsync()
    {
        if (_stop.IsCancellationRequested) return;
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener?.Dispose();
        lock (_lock)
        {
            foreach (Socket s in _connections)
            {
                try
                {
                    s.Shutdown(SocketShutdown.Both);
                }
                catch (SocketException)
                {
                }
                catch (ObjectDisposedException)
                {
                }
            }
        }
        await _acceptLoop.ConfigureAwait(false);
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}
