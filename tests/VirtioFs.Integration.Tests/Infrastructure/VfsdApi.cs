using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>A client for vfsd's nydusd-style HTTP API on its Unix socket (--apisock), as Kata and nydus-snapshotter
/// talk to it.</summary>
internal static class VfsdApi
{
    public static HttpClient Client(string socketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        return new HttpClient(handler);
    }

    /// <summary>The body of POST/PUT /api/v1/mount: nydusd's four fields (prefetch_files omitted).</summary>
    public static StringContent Body(string fsType, string source, string config)
    {
        string json = new JsonObject { ["source"] = source, ["fs_type"] = fsType, ["config"] = config }.ToJsonString();
        return new StringContent(json, Encoding.UTF8, "application/json");
    }

    public static async Task Mount(HttpClient http, string mountPoint, string fsType, string source, string config)
    {
        using var response = await http.PostAsync(new Uri($"http://vfsd/api/v1/mount?mountpoint={mountPoint}"), Body(fsType, source, config));
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.NoContent, $"mount {mountPoint}: {(int)response.StatusCode} {body}");
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; throws with vfsd's output when vfsd exits or time runs out.</summary>
    public static void WaitFor(Func<bool> condition, ProcessRunner process, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (!condition())
        {
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException($"vfsd not ready; output:\n{process.Output}");
            }
            Thread.Sleep(50);
        }
    }
}
