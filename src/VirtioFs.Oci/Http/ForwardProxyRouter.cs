using System.Net;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Oci.Http;

/// <summary>
/// Routes data reads through a mirror or P2P forward proxy (Dragonfly dfdaemon) the way nydusd does
/// (storage/src/backend/connection.rs, call_with_proxy_control): through the proxy while it is healthy; when it fails to
/// connect or answers 5xx, straight to the target if fallback is on, else the failure is the answer. nydusd hands the
/// proxy URL to reqwest as an HTTP forward proxy (build_connection: Proxy::all): requests keep the server's absolute URL
/// and go to the proxy in absolute form (RFC 9112 section 3.2.2), or through a CONNECT tunnel for https. The proxy has a
/// client of its own, because the direct one must never use the proxy (it is the fallback).
/// </summary>
public sealed class ForwardProxyRouter : IDisposable
{
    private readonly HttpRequestPipeline _pipeline;
    private readonly HttpClient _proxyHttp;
    private readonly ProxyHealth _health;

    public ForwardProxyRouter(HttpRequestPipeline pipeline, RegistryProxyOptions options, ILogger logger)
    {
        _pipeline = pipeline;
        _proxyHttp = pipeline.CreateClient(new FixedProxy(new Uri(options.Url)), pipeline.Direct.BaseAddress);
        _health = new ProxyHealth(pipeline, options, logger);
    }

    /// <summary>True while reads go through the proxy.</summary>
    public bool Healthy => _health.Healthy;

    /// <summary>
    /// Sends one read to <paramref name="target"/> with <paramref name="send"/> (given the URL and the client to use):
    /// through the proxy while it is healthy, else (or when it fails) directly with fallback on, or fails at once with
    /// fallback off until the health check sees the proxy answer again.
    /// </summary>
    public async Task<HttpResponseMessage> RouteAsync(Uri target, Func<Uri, HttpClient, CancellationToken, Task<HttpResponseMessage>> send, CancellationToken ct)
    {
        var proxy = _health;
        proxy.Touch();
        if (proxy.Healthy)
        {
            var via = proxy.Rewrite(target);
            string why;
            Exception? inner = null;
            try
            {
                var resp = await send(via, _proxyHttp, ct).ConfigureAwait(false);
                if ((int)resp.StatusCode < 500 || !proxy.Options.Fallback) return resp;
                why = $"HTTP {(int)resp.StatusCode}";
                resp.Dispose();
            }
            catch (RemoteStorageException e) when (e.StatusCode >= 500) { why = e.Message; inner = e; }
            catch (Exception e) when (!ct.IsCancellationRequested
                && e is HttpRequestException or IOException or System.Net.Sockets.SocketException or OperationCanceledException)
            {
                why = e.Message;
                inner = e;
            }
            proxy.MarkDown(why);
            if (!proxy.Options.Fallback)
                throw _pipeline.Error($"proxy {proxy.Base.Authority} failed ({why}) and fallback is off", 502, transient: true, inner);
        }
        else if (!proxy.Options.Fallback)
        {
            throw _pipeline.Error($"proxy {proxy.Base.Authority} is not healthy and fallback is off", 502, transient: true);
        }
        return await send(target, _pipeline.Direct, ct).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _health.Dispose();
        _proxyHttp.Dispose();
    }

    /// <summary>
    /// Health of the proxy, as nydusd keeps it (connection.rs, start_proxy_health_thread): with a ping URL, a timer GETs
    /// it every check interval (straight, never through the proxy; the deadline is the connect timeout) and any 2xx/3xx
    /// marks the proxy healthy, anything else or no answer unhealthy; pings pause while no read has been made for
    /// <see cref="RegistryProxyOptions.CheckPauseElapsed"/>. A failed request also marks it down at once (nydusd keeps
    /// trying a dead proxy on every request until the next ping; this spares reads that cost). Without a ping URL nydusd
    /// never checks; here a proxy marked down is simply tried again one check interval later.
    /// </summary>
    private sealed class ProxyHealth : IDisposable
    {
        private readonly HttpRequestPipeline _pipeline;
        private readonly ILogger _log;
        private readonly ITimer _timer;
        private volatile bool _healthy = true;
        private long _lastActive = Environment.TickCount64;
        private int _checking;

        public ProxyHealth(HttpRequestPipeline pipeline, RegistryProxyOptions options, ILogger logger)
        {
            _pipeline = pipeline;
            _log = logger;
            Options = options;
            Base = new Uri(options.Url);
            Ping = options.PingUrl is { Length: > 0 } pu ? new Uri(pu) : null;
            _timer = TimeProvider.System.CreateTimer(_ => _ = CheckAsync(), null, options.CheckInterval, options.CheckInterval);
        }

        public RegistryProxyOptions Options { get; }
        public Uri Base { get; }
        public Uri? Ping { get; }
        public bool Healthy => _healthy;

        public void Touch() => Volatile.Write(ref _lastActive, Environment.TickCount64);

        /// <summary>The URL sent to the proxy: the target itself, or with <c>use_http</c> its http form, so that a
        /// proxy which cannot intercept a CONNECT tunnel sees (and caches) the request; the proxy speaks https upstream.</summary>
        public Uri Rewrite(Uri target) =>
            Options.UseHttp && target.Scheme == Uri.UriSchemeHttps ? new UriBuilder(target) { Scheme = Uri.UriSchemeHttp, Port = target.Port }.Uri : target;

        public void MarkDown(string why)
        {
            if (!_healthy) return;
            _healthy = false;
            OciLog.ProxyDown(_log, Base.Authority, why);
        }

        private void MarkUp()
        {
            if (_healthy) return;
            _healthy = true;
            OciLog.ProxyUp(_log, Base.Authority);
        }

        private async Task CheckAsync()
        {
            if (Interlocked.Exchange(ref _checking, 1) == 1) return;
            try
            {
                if (Ping is null)
                {
                    MarkUp();   // nothing to ask: give the proxy another chance
                    return;
                }
                if (Environment.TickCount64 - Volatile.Read(ref _lastActive) > (long)Options.CheckPauseElapsed.TotalMilliseconds) return;
                string? failure;
                try
                {
                    using var cts = new CancellationTokenSource(_pipeline.Options.Transport.ConnectTimeout);
                    using var resp = await _pipeline.Direct.GetAsync(Ping, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
                    int code = (int)resp.StatusCode;
                    failure = code is >= 200 and < 400 ? null : $"ping {Ping} answered HTTP {code}";
                }
                catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException or System.Net.Sockets.SocketException)
                {
                    failure = $"ping {Ping}: {e.Message}";
                }
                if (failure is null) MarkUp();
                else MarkDown(failure);
            }
            catch (ObjectDisposedException) { }   // the client was disposed while a ping was on its way
            finally { Volatile.Write(ref _checking, 0); }
        }

        public void Dispose() => _timer.Dispose();
    }

    /// <summary>One proxy for every destination, loopback included (the environment's proxy settings are not consulted).</summary>
    private sealed class FixedProxy(Uri proxy) : IWebProxy
    {
        public ICredentials? Credentials { get; set; }
        public Uri GetProxy(Uri destination) => proxy;
        public bool IsBypassed(Uri host) => false;
    }
}
