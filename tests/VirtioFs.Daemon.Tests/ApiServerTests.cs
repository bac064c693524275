using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.Tests.Support;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>A scripted daemon: records calls, answers what the test sets.</summary>
internal sealed class FakeDaemonControl : IDaemonControl
{
    public ConcurrentQueue<string> Calls { get; } = new();
    public ConcurrentDictionary<string, MountRequest> Mounts { get; } = new();
    public ApiResult NextMount { get; set; } = ApiResult.Success;
    public ManualResetEventSlim? MountGate { get; set; }
    public int Exits;

    public DaemonInfo GetInfo() => new(
        new BuildInfo("1.2.3", "abc", "today", "release", "dotnet"), "vfsd-1", null, "RUNNING",
        Mounts.ToDictionary(m => m.Key, m => new FsBackendDescriptor(m.Value.FsType == FsBackendType.Rafs ? "Rafs" : "PassthroughFs",
            m.Key, DateTimeOffset.UnixEpoch, null)));

    public ApiResult Mount(MountRequest request)
    {
        Calls.Enqueue($"mount {request.MountPoint} {request.FsType} {request.Source} [{string.Join(',', request.PrefetchFiles)}] {request.Config}");
        MountGate?.Wait(TimeSpan.FromSeconds(30));
        if (!NextMount.Ok) return NextMount;
        if (!Mounts.TryAdd(request.MountPoint, request)) return ApiResult.Fail(ApiErrorKind.BadRequest, "already mounted");
        return ApiResult.Success;
    }

    public ApiResult Remount(MountRequest request)
    {
        Calls.Enqueue($"remount {request.MountPoint}");
        if (!Mounts.ContainsKey(request.MountPoint)) return ApiResult.Fail(ApiErrorKind.BadRequest, "not mounted");
        Mounts[request.MountPoint] = request;
        return ApiResult.Success;
    }

    public ApiResult Umount(string mountPoint)
    {
        Calls.Enqueue($"umount {mountPoint}");
        return Mounts.TryRemove(mountPoint, out _) ? ApiResult.Success : ApiResult.Fail(ApiErrorKind.BadRequest, "not mounted");
    }

    public JsonNode? GetMetrics(MetricsKind kind, string? id) => kind switch
    {
        MetricsKind.Global => new JsonObject { ["fop_hits"] = new JsonArray(1, 2, 3), ["id"] = id },
        MetricsKind.InFlight => new JsonArray(),
        _ => null,
    };

    public void Exit() => Interlocked.Increment(ref Exits);
}

public sealed class ApiServerTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vfs-api-").FullName;
    private readonly FakeDaemonControl _control = new();
    private ApiServer _server = null!;
    private HttpClient _http = null!;

    private string SocketPath => Path.Combine(_dir, "api.sock");

    public Task InitializeAsync()
    {
        _server = new ApiServer(SocketPath, _control, NullLogger.Instance,
            new ApiServerOptions { RequestTimeout = TimeSpan.FromSeconds(5), Limits = new HttpLimits { MaxBodyBytes = 4096 } });
        _server.Start();
        _http = Client(SocketPath);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _server.DisposeAsync();
        Directory.Delete(_dir, true);
    }

    /// <summary>HttpClient over the Unix socket, as Kata's Go client talks to nydusd.</summary>
    private static HttpClient Client(string socketPath) => ApiDaemon.UnixHttpClient(socketPath);

    private static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<(string Code, string Message)> ErrorOf(HttpResponseMessage r)
    {
        using JsonDocument d = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
        return (d.RootElement.GetProperty("code").GetString()!, d.RootElement.GetProperty("message").GetString()!);
    }

    [Fact]
    public async Task Kata_flow_info_mount_passthrough_and_rafs_then_umount()
    {
        using (var info = await _http.GetAsync("/api/v1/daemon"))
        {
            Assert.Equal(HttpStatusCode.OK, info.StatusCode);
            Assert.Equal("Nydus API", info.Headers.Server.ToString());
            using JsonDocument d = JsonDocument.Parse(await info.Content.ReadAsStringAsync());
            Assert.Equal("RUNNING", d.RootElement.GetProperty("state").GetString());
            Assert.Equal("1.2.3", d.RootElement.GetProperty("version").GetProperty("package_ver").GetString());
        }

        using (var r = await _http.PostAsync("/api/v1/mount?mountpoint=/containers",
            Body("""{"source":"/run/kata/shared","fs_type":"passthrough_fs","config":"","prefetch_files":[]}""")))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        string config = JsonSerializer.Serialize("""{"device":{"backend":{"type":"localfs"}}}""");
        using (var r = await _http.PostAsync("/api/v1/mount?mountpoint=%2Frafs%2Fc1%2Flowerdir",
            Body($$"""{"source":"/images/c1/bootstrap","fs_type":"rafs","config":{{config}},"prefetch_files":["/bin","/etc"]}""")))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        Assert.Contains("mount /rafs/c1/lowerdir Rafs /images/c1/bootstrap [/bin,/etc] {\"device\":{\"backend\":{\"type\":\"localfs\"}}}", _control.Calls);

        using (var info = await _http.GetAsync("/api/v1/daemon"))
        {
            using JsonDocument d = JsonDocument.Parse(await info.Content.ReadAsStringAsync());
            JsonElement coll = d.RootElement.GetProperty("backend_collection");
            Assert.Equal("PassthroughFs", coll.GetProperty("/containers").GetProperty("backend_type").GetString());
            Assert.Equal("Rafs", coll.GetProperty("/rafs/c1/lowerdir").GetProperty("backend_type").GetString());
        }

        using (var r = await _http.PutAsync("/api/v1/mount?mountpoint=/rafs/c1/lowerdir", Body("""{"source":"/images/c1/bootstrap2","fs_type":"rafs"}""")))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        using (var r = await _http.DeleteAsync("/api/v1/mount?mountpoint=/rafs/c1/lowerdir"))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        using (var r = await _http.DeleteAsync("/api/v1/mount?mountpoint=/rafs/c1/lowerdir"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            Assert.Equal(("UNDEFINED", "Mount(not mounted)"), await ErrorOf(r));
        }
        Assert.Equal(["/containers"], _control.Mounts.Keys);
    }

    [Theory]
    [InlineData("POST", "/api/v1/mount", "{\"source\":\"/x\"}", 400, "QueryString")]
    [InlineData("POST", "/api/v1/mount?mountpoint=/a", "{not json", 400, "ParseBody")]
    [InlineData("POST", "/api/v1/mount?mountpoint=/a", "{\"fs_type\":\"rafs\"}", 400, "ParseBody")]
    [InlineData("POST", "/api/v1/mount?mountpoint=/a", "{\"source\":\"/x\",\"fs_type\":\"ext4\"}", 400, "InvalidArguments")]
    [InlineData("GET", "/api/v1/mount?mountpoint=/a", null, 400, "BadRequest")]
    [InlineData("POST", "/api/v1/daemon", "{}", 400, "BadRequest")]
    [InlineData("GET", "/api/v1/daemon/exit", null, 400, "BadRequest")]
    [InlineData("GET", "/api/v1/nothing", null, 404, "NoRoute")]
    [InlineData("GET", "/api/v1/metrics/files", null, 404, "NoCounter")]
    [InlineData("DELETE", "/api/v1/metrics", null, 400, "BadRequest")]
    public async Task Errors_look_like_nydusd_errors(string method, string url, string? body, int status, string fragment)
    {
        using var req = new HttpRequestMessage(new HttpMethod(method), url) { Content = body is null ? null : Body(body) };
        using var r = await _http.SendAsync(req);
        Assert.Equal(status, (int)r.StatusCode);
        var (code, message) = await ErrorOf(r);
        Assert.Equal("UNDEFINED", code);
        Assert.Contains(fragment, message, StringComparison.Ordinal);
        Assert.Empty(_control.Mounts);
    }

    [Theory]
    [InlineData(ApiErrorKind.Internal, 500)]
    [InlineData(ApiErrorKind.Unsupported, 501)]
    [InlineData(ApiErrorKind.NotReady, 503)]
    public async Task Control_failures_map_to_status_codes(ApiErrorKind kind, int status)
    {
        _control.NextMount = ApiResult.Fail(kind, "bootstrap unreadable");
        using var r = await _http.PostAsync("/api/v1/mount?mountpoint=/a", Body("""{"source":"/x","fs_type":"rafs"}"""));
        Assert.Equal(status, (int)r.StatusCode);
        Assert.Equal(("UNDEFINED", "Mount(bootstrap unreadable)"), await ErrorOf(r));
    }

    [Fact]
    public async Task Metrics_and_exit()
    {
        using (var r = await _http.GetAsync("/api/v1/metrics?id=/containers"))
        {
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("application/json", r.Content.Headers.ContentType!.MediaType);
            Assert.Equal("""{"fop_hits":[1,2,3],"id":"/containers"}""", await r.Content.ReadAsStringAsync());
        }
        using (var r = await _http.GetAsync("/api/v1/metrics/inflight"))
        {
            Assert.Equal("[]", await r.Content.ReadAsStringAsync());
        }
        using (var r = await _http.PutAsync("/api/v1/daemon/exit", null))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref _control.Exits) == 1, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task A_slow_connection_does_not_block_another_and_keep_alive_reuses_one()
    {
        // A client that sends half a request and stalls.
        using var stalled = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await stalled.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath));
        await stalled.SendAsync("POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"u8.ToArray());
        // A mount that is itself slow holds only its own connection.
        _control.MountGate = new ManualResetEventSlim();
        using var other = Client(SocketPath);
        Task<HttpResponseMessage> slowMount = other.PostAsync("/api/v1/mount?mountpoint=/b", Body("""{"source":"/x","fs_type":"rafs"}"""));
        Assert.True(SpinWait.SpinUntil(() => _control.Calls.Any(c => c.StartsWith("mount /b", StringComparison.Ordinal)), TimeSpan.FromSeconds(10)));

        for (int i = 0; i < 5; i++)
        {
            using var r = await _http.GetAsync("/api/v1/daemon").WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        _control.MountGate.Set();
        using (var done = await slowMount.WaitAsync(TimeSpan.FromSeconds(10)))
        {
            Assert.Equal(HttpStatusCode.NoContent, done.StatusCode);
        }

        // Raw keep-alive: two requests on one connection, two answers, the connection still open.
        using var raw = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await raw.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath));
        await raw.SendAsync("GET /api/v1/metrics/inflight HTTP/1.1\r\n\r\nGET /api/v1/metrics/inflight HTTP/1.1\r\n\r\n"u8.ToArray());
        string text = await ReadUntil(raw, s => CountOf(s, "HTTP/1.1 200 OK") == 2 && s.EndsWith("[]", StringComparison.Ordinal));
        Assert.Equal(2, CountOf(text, "Content-Length: 2\r\n"));
        await raw.SendAsync("GET /api/v1/metrics/inflight HTTP/1.1\r\nConnection: close\r\n\r\n"u8.ToArray());
        text = await ReadUntil(raw, s => s.Contains("Connection: close", StringComparison.Ordinal) && s.EndsWith("[]", StringComparison.Ordinal));
        Assert.Equal(0, await raw.ReceiveAsync(new byte[16], SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(5))); // server closed
    }

    [Fact]
    public async Task Garbage_gets_an_error_and_a_closed_connection_and_the_server_lives_on()
    {
        using var raw = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await raw.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath));
        await raw.SendAsync("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"u8.ToArray());
        string text = await ReadUntil(raw, s => s.Contains('}', StringComparison.Ordinal));
        Assert.StartsWith("HTTP/1.1 501 Not Implemented\r\n", text, StringComparison.Ordinal);
        Assert.Equal(0, await raw.ReceiveAsync(new byte[16], SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(5)));

        using var big = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await big.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath));
        await big.SendAsync(Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nA: " + new string('a', 20_000)));
        text = await ReadUntil(big, s => s.Contains('}', StringComparison.Ordinal));
        Assert.StartsWith("HTTP/1.1 431 ", text, StringComparison.Ordinal);

        using var r = await _http.GetAsync("/api/v1/daemon");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    private static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + 1, StringComparison.Ordinal)) n++;
        return n;
    }

    private static async Task<string> ReadUntil(Socket s, Func<string, bool> done)
    {
        var sb = new StringBuilder();
        var buf = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!done(sb.ToString()))
        {
            int n = await s.ReceiveAsync(buf, SocketFlags.None, cts.Token);
            if (n == 0) break;
            sb.Append(Encoding.ASCII.GetString(buf, 0, n));
        }
        return sb.ToString();
    }
}
