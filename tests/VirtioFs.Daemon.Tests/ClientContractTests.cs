using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Daemon.Tests.Support;
using VirtioFs.Fuse;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Builder;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// A contract test per client of nydusd's HTTP API: the daemon pieces of <c>vfsd --apisock</c> (the Vfs, its
/// DaemonControl, the API server and a FUSE server counting into the same statistics, mounted through /dev/fuse as
/// nydus-snapshotter's shared daemon is), driven with each client's exact calls (method, path, query encoding, headers,
/// body) and answered into each client's own types.
/// </summary>
public sealed class ClientContractTests : IAsyncLifetime
{
    private const string DaemonId = "d7f1b2c3a4e5"; // the snapshotter passes --id <its daemon id> (pkg/manager/daemon_adaptor.go)
    private const string SnapshotId = "42";

    private readonly string _root = Directory.CreateTempSubdirectory("vfs-contract-").FullName;
    private readonly byte[] _data = new byte[300_000];
    private readonly FsIoStats _stats = new();
    private string _blobId = null!;
    private ApiDaemon _daemon = null!;

    private string P(string rel) => Path.Combine(_root, rel);
    private string Mnt => _daemon.MountPoint;

    public Task InitializeAsync()
    {
        string src = Directory.CreateDirectory(P("src")).FullName;
        new Random(8).NextBytes(_data);
        File.WriteAllBytes(Path.Combine(src, "data.bin"), _data);
        Directory.CreateDirectory(P("blobs"));
        BuildResult built = ImageBuilder.Build(DirectorySource.Load(src), new BuildOptions
        {
            BlobDir = P("blobs"), Bootstrap = P("bootstrap"), FsVersion = 5, Compressor = Compressor.Zstd, BuildTime = 1_700_000_000,
        });
        _blobId = built.Blob!.BlobId;
        Directory.CreateDirectory(P("shared"));
        File.WriteAllText(P("shared/hello"), "hello\n");

        _daemon = new ApiDaemon(_root, new DaemonOptions { DaemonId = DaemonId }, new FuseServerOptions { Stats = _stats }, _stats);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _daemon.DisposeAsync();

    /// <summary>Go's net/http over a Unix socket, as both Go clients build it (DialContext "unix").</summary>
    private HttpClient GoClient() => _daemon.Client("http://unix");

    private static T Decode<T>(string json) => ClientJson.Decode<T>(json);

    private static async Task<T> DecodeOk<T>(HttpResponseMessage r)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.OK, $"{(int)r.StatusCode}: {body}");
        return Decode<T>(body);
    }

    /// <summary>The body nydus-snapshotter's Mount sends: json.Marshal(types.NewMountRequest(bootstrap, config)).</summary>
    private static StringContent GoMountBody(string fsType, string source, string config) =>
        new(new JsonObject { ["fs_type"] = fsType, ["source"] = source, ["config"] = config }.ToJsonString(), Encoding.UTF8, "application/json");

    /// <summary>A daemon config as nydus-snapshotter writes one per instance (misc/snapshotter/nydusd-config.fusedev.json,
    /// backend and cache work_dir filled in).</summary>
    private string SnapshotterConfig(JsonObject backend, string cacheDir) => new JsonObject
    {
        ["device"] = new JsonObject
        {
            ["backend"] = backend,
            ["cache"] = new JsonObject { ["type"] = "blobcache", ["config"] = new JsonObject { ["work_dir"] = P(cacheDir) } },
        },
        ["mode"] = "direct",
        ["digest_validate"] = false,
        ["iostats_files"] = false,
        ["enable_xattr"] = true,
        ["amplify_io"] = 1048576,
        ["fs_prefetch"] = new JsonObject { ["enable"] = false, ["threads_count"] = 8, ["merging_size"] = 1048576, ["prefetch_all"] = false },
    }.ToJsonString();

    private JsonObject LocalBackend => new() { ["type"] = "localfs", ["config"] = new JsonObject { ["dir"] = P("blobs") } };

    /// <summary>The decoding above would catch what broke clients before: the old in-flight shape (opcode names), a
    /// cache document without nydus's fields, a missing state, a negative count.</summary>
    [Fact]
    public void Strict_decoding_refuses_what_the_clients_could_not_use()
    {
        Assert.Throws<JsonException>(() => Decode<SnapshotterInflightOp[]>("""[{"opcode":"read","count":1}]"""));
        Assert.Throws<JsonException>(() => Decode<SnapshotterCacheMetrics>("""{"total":1,"whole_hits":1}"""));
        Assert.Throws<JsonException>(() => Decode<SnapshotterDaemonInfo>(
            """{"id":"x","version":{"package_ver":"1","git_commit":"","build_time":"","profile":"","rustc":""}}"""));
        Assert.Throws<JsonException>(() => Decode<SnapshotterInflightOp>("""{"inode":-1,"opcode":15,"unique":1,"timestamp_secs":1}"""));
        Assert.Throws<JsonException>(() => Decode<SnapshotterDaemonInfo>(
            """{"id":null,"version":{"package_ver":"1","git_commit":"","build_time":"","profile":"","rustc":""},"state":"RUNNING"}"""));
    }

    // ---- nydus-snapshotter: pkg/daemon/client.go -------------------------------------------------------------------

    [Fact]
    public async Task Snapshotter_shared_daemon_info_mount_metrics_cache_inflight()
    {
        using HttpClient http = GoClient();

        // GetDaemonInfo (client.go): GET /api/v1/daemon, decoded into types.DaemonInfo; the state is polled for RUNNING.
        using (var r = await http.GetAsync("/api/v1/daemon"))
        {
            SnapshotterDaemonInfo info = await DecodeOk<SnapshotterDaemonInfo>(r);
            Assert.Equal(DaemonId, info.ID);
            Assert.Equal("RUNNING", info.State);
            Assert.False(string.IsNullOrEmpty(info.Version.PackageVer));
        }

        // Mount (client.go): POST /api/v1/mount?mountpoint=%2F<sid> (url.Values.Encode) with Content-Type application/json.
        using (var r = await http.PostAsync("/api/v1/mount?mountpoint=%2F" + SnapshotId,
            GoMountBody("rafs", P("bootstrap"), SnapshotterConfig(LocalBackend, "cache"))))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        byte[] read = await File.ReadAllBytesAsync(Path.Combine(Mnt, SnapshotId, "data.bin"));
        Assert.Equal(_data, read);

        // GetFsMetrics(sid) (client.go, pkg/metrics/serve.go): GET /api/v1/metrics?id=%2F<sid>, into types.FsMetrics;
        // the collector reads FopHits[Read] and FopErrors[Read] (pkg/metrics/collector/fs.go, types.go Read = 4) and
        // wants 8 counters in BlockCountRead and ReadLatencyDist (pkg/metrics/data/fs.go).
        SnapshotterFsMetrics mine;
        using (var r = await http.GetAsync("/api/v1/metrics?id=%2F" + SnapshotId))
        {
            mine = await DecodeOk<SnapshotterFsMetrics>(r);
        }
        Assert.Equal("/" + SnapshotId, mine.ID);
        AssertNydusShape(mine);
        const int Read = 4;
        Assert.True(mine.FopHits[Read] >= 1, "the reads through the mount are counted as StatsFop::Read");
        Assert.Equal(0UL, mine.FopErrors[Read]);
        Assert.True(mine.DataRead >= (ulong)_data.Length, $"data_read {mine.DataRead}");
        Assert.Equal(mine.FopHits[Read], (ulong)mine.ReadLatencyDist.Sum(v => (long)v));
        Assert.True(mine.FopHits[9] >= 1, "lookup (StatsFop index 9) is counted");

        // GetFsMetrics("") (pkg/system/system.go; a dedicated daemon in serve.go): no id, the daemon's counters.
        using (var r = await http.GetAsync("/api/v1/metrics"))
        {
            SnapshotterFsMetrics all = await DecodeOk<SnapshotterFsMetrics>(r);
            AssertNydusShape(all);
            Assert.True(all.FopHits[Read] >= mine.FopHits[Read]);
            Assert.True(all.DataRead >= mine.DataRead);
        }

        // GetCacheMetrics(sid) (client.go; pkg/filesystem/fs.go RefreshUnderlyingFiles keeps underlying_files for the
        // blob GC, which takes the blob id back out of each file name, pkg/cache/manager.go ExtractBlobIDFromFilename).
        using (var r = await http.GetAsync("/api/v1/metrics/blobcache?id=%2F" + SnapshotId))
        {
            SnapshotterCacheMetrics cache = await DecodeOk<SnapshotterCacheMetrics>(r);
            Assert.Equal([_blobId + ".blob.data"], cache.UnderlyingFiles);
            Assert.Equal(Path.GetFullPath(P("cache")), cache.StorePath);
            Assert.True(File.Exists(Path.Combine(cache.StorePath, cache.UnderlyingFiles[0])));
            Assert.True(cache.Total >= 1);
            Assert.True(cache.EntriesCount >= 1);
            Assert.True(cache.DataAllReady, "the whole (one-chunk) file was read");
        }

        // GetInflightMetrics (client.go): 204 when nothing is in flight, else []{inode, opcode, unique, timestamp_secs}
        // (pkg/metrics/collector/fs.go counts those older than the hung-IO interval).
        using (var r = await http.GetAsync("/api/v1/metrics/inflight"))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        InflightToken pending = _stats.Begin(FuseOpcode.Read, unique: 77, inode: 5);
        try
        {
            using var r = await http.GetAsync("/api/v1/metrics/inflight");
            SnapshotterInflightOp op = Assert.Single(await DecodeOk<SnapshotterInflightOp[]>(r), o => o.Unique == 77);
            Assert.Equal(15U, op.Opcode);
            Assert.Equal(5UL, op.Inode);
            Assert.InRange((long)op.TimestampSecs, DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 60, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        }
        finally
        {
            _stats.End(FuseOpcode.Read, pending, 0, 0);
        }

        // UpdateConfig on an image that is not read from a registry: an error the client decodes (parseErrorMessage).
        using (var r = await http.PutAsync("/api/v1/config?id=%2F" + SnapshotId,
            new StringContent("""{"registry_auth":"YWxpY2U6d29uZGVybGFuZA=="}""", Encoding.UTF8, "application/json")))
        {
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            ClientErrorMessage e = Decode<ClientErrorMessage>(await r.Content.ReadAsStringAsync());
            Assert.Contains("not read from a registry", e.Message, StringComparison.Ordinal);
        }

        // Umount (client.go): DELETE /api/v1/mount?mountpoint=%2F<sid>.
        using (var r = await http.DeleteAsync("/api/v1/mount?mountpoint=%2F" + SnapshotId))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        using (var r = await http.GetAsync("/api/v1/metrics/blobcache?id=%2F" + SnapshotId))
        {
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
            Decode<ClientErrorMessage>(await r.Content.ReadAsStringAsync());
        }
    }

    private static void AssertNydusShape(SnapshotterFsMetrics m)
    {
        Assert.Equal(FsIoStats.FopCount, m.FopHits.Length);
        Assert.Equal(FsIoStats.FopCount, m.FopErrors.Length);
        Assert.Equal(FsIoStats.FopCount, m.FopCumulativeLatencyTotal.Length);
        Assert.Equal(8, m.BlockCountRead.Length);
        Assert.Equal(8, m.ReadLatencyDist.Length);
        Assert.True(m.MeasureLatency);
    }

    /// <summary>
    /// UpdateAuthConfig (pkg/daemon/daemon.go): PUT /api/v1/config?id=%2F<sid> with {"registry_auth": base64(user:pass)}
    /// when a registry password rotates. The image keeps being served; reads that the old credentials could not do
    /// succeed with the new ones, with no restart and no remount.
    /// </summary>
    [Fact]
    public async Task Snapshotter_registry_auth_hot_reload_swaps_credentials_of_a_mounted_image()
    {
        if (!RegistryServer.Available) Assert.Fail($"{RegistryServer.Binary} is missing: run tests/setup.sh");
        using var registry = RegistryServer.Start(htpasswdLine: Htpasswd.Line("alice", "wonderland"));
        byte[] blob = await File.ReadAllBytesAsync(Path.Combine(P("blobs"), _blobId));
        using (var push = new RegistryClient(registry.Options("vfs/contract", new RegistryCredentials("alice", "wonderland"))))
        {
            await push.PushBlobAsync("sha256:" + _blobId, blob.Length, () => new MemoryStream(blob));
        }
        static string Auth(string user, string pass) => Convert.ToBase64String(Encoding.UTF8.GetBytes(user + ":" + pass));
        var backend = new JsonObject
        {
            ["type"] = "registry",
            ["config"] = new JsonObject
            {
                ["scheme"] = "http", ["host"] = registry.Host, ["repo"] = "vfs/contract", ["auth"] = Auth("alice", "expired"),
                ["timeout"] = 5, ["connect_timeout"] = 5, ["retry_limit"] = 0,
            },
        };
        using HttpClient http = GoClient();
        using (var r = await http.PostAsync("/api/v1/mount?mountpoint=%2F" + SnapshotId,
            GoMountBody("rafs", P("bootstrap"), SnapshotterConfig(backend, "cache-reg"))))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        string file = Path.Combine(Mnt, SnapshotId, "data.bin");
        Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(file)); // the registry refuses the expired password

        using (var r = await http.PutAsync("/api/v1/config?id=%2F" + SnapshotId,
            new StringContent(JsonSerializer.Serialize(new Dictionary<string, string> { ["registry_auth"] = Auth("alice", "wonderland") }),
                Encoding.UTF8, "application/json")))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        Assert.Equal(_data, await File.ReadAllBytesAsync(file));

        // What nydusd refuses is refused alike: an unknown key, a value that is not base64(user:password).
        foreach (string body in new[] { """{"no_such_key":"x"}""", """{"registry_auth":"!!"}""", """{"registry_auth":1}""" })
        {
            using var r = await http.PutAsync("/api/v1/config?id=%2F" + SnapshotId, new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            Decode<ClientErrorMessage>(await r.Content.ReadAsStringAsync());
        }
    }

    // ---- Kata Go runtime: src/runtime/virtcontainers/nydusd.go ----------------------------------------------------

    [Fact]
    public async Task Kata_go_runtime_check_status_passthrough_and_rafs_mounts()
    {
        using HttpClient http = GoClient();
        // CheckStatus: httpClient.Get("http://unix/api/v1/daemon"), json.Unmarshal into DaemonInfo; waits for RUNNING.
        using (var r = await http.GetAsync("http://unix/api/v1/daemon"))
        {
            KataGoDaemonInfo info = await DecodeOk<KataGoDaemonInfo>(r);
            Assert.Equal("RUNNING", info.State);
        }
        // setupPassthroughFS: Post("http://unix/api/v1/mount?mountpoint=/containers", "application/json",
        // {"fs_type":"passthrough_fs","source":<shared dir>,"config":""}): 204 is success.
        using (var r = await http.PostAsync("http://unix/api/v1/mount?mountpoint=/containers", GoMountBody("passthrough_fs", P("shared"), "")))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        Assert.Equal("hello\n", await File.ReadAllTextAsync(Path.Combine(Mnt, "containers", "hello")));
        // Mount: the rafs mountpoint, unescaped in the query, matches /rafs/[\w+-\.]+/lowerdir.
        const string Rafs = "/rafs/c0ffee-1/lowerdir";
        using (var r = await http.PostAsync("http://unix/api/v1/mount?mountpoint=" + Rafs, GoMountBody("rafs", P("bootstrap"), SnapshotterConfig(LocalBackend, "cache-kata"))))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        Assert.Equal(_data, await File.ReadAllBytesAsync(Path.Combine(Mnt, "rafs", "c0ffee-1", "lowerdir", "data.bin")));
        // A failure is read with handleMountError: json.Unmarshal into ErrorMessage, its Message returned.
        using (var r = await http.PostAsync("http://unix/api/v1/mount?mountpoint=" + Rafs, GoMountBody("rafs", P("nowhere"), "")))
        {
            Assert.NotEqual(HttpStatusCode.NoContent, r.StatusCode);
            Assert.False(string.IsNullOrEmpty(Decode<ClientErrorMessage>(await r.Content.ReadAsStringAsync()).Message));
        }
        // Umount: http.NewRequest(DELETE, "...?mountpoint=" + mp, nil).
        using (var r = await http.DeleteAsync("http://unix/api/v1/mount?mountpoint=" + Rafs))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
    }

    // ---- Kata runtime-rs: src/runtime-rs/crates/resource/src/share_fs/nydus/nydus_client.rs -----------------------

    [Fact]
    public async Task Kata_runtime_rs_check_status_mount_umount()
    {
        using HttpClient http = GoClient();
        // send_request: every request carries Content-Type: application/json, a GET and a DELETE with an empty body.
        async Task<HttpResponseMessage> Send(HttpMethod method, string path, string? body)
        {
            using var req = new HttpRequestMessage(method, path) { Content = new StringContent(body ?? "", Encoding.UTF8) };
            req.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            return await http.SendAsync(req);
        }
        // check_status / wait_until_ready: status must be 200, body serde_json into DaemonInfo.
        using (var r = await Send(HttpMethod.Get, "/api/v1/daemon", null))
        {
            RuntimeRsDaemonInfo info = await DecodeOk<RuntimeRsDaemonInfo>(r);
            Assert.Equal("RUNNING", info.State);
            Assert.Equal(DaemonId, info.Id);
        }
        // mount: the mountpoint percent-encoded (percent_encode_query_value), MountRequest {fs_type, source, config}.
        const string Mp = "/rafs/abc_def.1/lowerdir";
        string encoded = string.Concat(Encoding.UTF8.GetBytes(Mp).Select(b =>
            char.IsAsciiLetterOrDigit((char)b) || b is (byte)'-' or (byte)'.' or (byte)'_' or (byte)'~' ? ((char)b).ToString() : $"%{b:X2}"));
        Assert.Equal("%2Frafs%2Fabc_def.1%2Flowerdir", encoded);
        string mountBody = new JsonObject { ["fs_type"] = "rafs", ["source"] = P("bootstrap"), ["config"] = SnapshotterConfig(LocalBackend, "cache-rs") }.ToJsonString();
        using (var r = await Send(HttpMethod.Post, "/api/v1/mount?mountpoint=" + encoded, mountBody))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        Assert.Equal(_data, await File.ReadAllBytesAsync(Path.Combine(Mnt, "rafs", "abc_def.1", "lowerdir", "data.bin")));
        using (var r = await Send(HttpMethod.Get, "/api/v1/daemon", null))
        {
            RuntimeRsDaemonInfo info = await DecodeOk<RuntimeRsDaemonInfo>(r);
            Assert.Equal(JsonValueKind.Object, info.BackendCollection!.Value.ValueKind);
            Assert.True(info.BackendCollection.Value.TryGetProperty(Mp, out _));
        }
        using (var r = await Send(HttpMethod.Delete, "/api/v1/mount?mountpoint=" + encoded, null))
        {
            Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        }
        using (var r = await Send(HttpMethod.Delete, "/api/v1/mount?mountpoint=" + encoded, null))
        {
            Assert.NotEqual(HttpStatusCode.NoContent, r.StatusCode);
            Decode<ClientErrorMessage>(await r.Content.ReadAsStringAsync());
        }
    }
}
