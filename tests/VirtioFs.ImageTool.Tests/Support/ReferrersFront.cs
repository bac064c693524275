using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace VirtioFs.ImageTool.Tests.Support;

/// <summary>
/// The OCI distribution-spec v1.1 Referrers API in front of Debian's docker-registry (distribution 2.8, which lacks it;
/// no registry that has it is installable here). Every request is passed to the real registry except:
/// <list type="bullet">
/// <item>a manifest PUT whose body has a <c>subject</c>: once the registry stored it (201), the front indexes it and
///   answers <c>OCI-Subject: &lt;subject digest&gt;</c> ("Pushing Manifests with Subject");</item>
/// <item><c>GET /v2/&lt;name&gt;/referrers/&lt;digest&gt;[?artifactType=]</c> ("Listing Referrers", end-12a/end-12b): 400
///   for a bad digest, else 200 with an image index (empty when nothing refers) of descriptors with the referrer's media
///   type, digest, size, <c>artifactType</c> (the manifest's, else its config's media type) and annotations, in push
///   order; with <see cref="ApplyFilter"/> an artifactType query is applied and <c>OCI-Filters-Applied: artifactType</c>
///   sent, without it the filter is ignored and the header left out (filtering is a SHOULD); at most
///   <see cref="PageSize"/> descriptors a page, the rest behind <c>Link: &lt;...&gt;; rel="next"</c>.</item>
/// </list>
/// What clients asked is kept in <see cref="Requests"/>.
/// </summary>
public sealed class ReferrersFront : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly HttpClient _upstream;
    private readonly string _upstreamAuthority;
    private readonly ConcurrentDictionary<(string Repo, string Subject), List<JsonDescriptor>> _index = new();

    public ReferrersFront(string upstreamHost)
    {
        _upstreamAuthority = upstreamHost;
        _upstream = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false }) { BaseAddress = new Uri($"http://{upstreamHost}/") };
        int port = Oci.Tests.Support.RegistryServer.FreePort();
        Host = $"127.0.0.1:{port}";
        _listener.Prefixes.Add($"http://{Host}/");
        _listener.Start();
        _ = Task.Run(LoopAsync);
    }

    public string Host { get; }
    public bool ApplyFilter { get; set; } = true;
    public int PageSize { get; set; } = 100;
    public ConcurrentQueue<string> Requests { get; } = new();

    private sealed record JsonDescriptor(string MediaType, string Digest, long Size, string? ArtifactType, Dictionary<string, string>? Annotations);

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            _ = Task.Run(async () =>
            {
                try { await HandleAsync(ctx); }
                catch (Exception e) when (e is HttpListenerException or IOException or HttpRequestException or ObjectDisposedException) { }
                finally { try { ctx.Response.Close(); } catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { } }
            });
        }
    }

    private async Task HandleAsync(HttpListenerContext ctx)
    {
        var req = ctx.Request;
        string target = req.RawUrl ?? "/";
        Requests.Enqueue($"{req.HttpMethod} {target}");
        string path = target.Split('?')[0];
        var parts = path.Split("/referrers/");
        if (req.HttpMethod == "GET" && parts.Length == 2 && parts[0].StartsWith("/v2/", StringComparison.Ordinal))
        {
            ServeReferrers(ctx, parts[0][4..], Uri.UnescapeDataString(parts[1]), target);
            return;
        }

        byte[] body = [];
        if (req.HasEntityBody)
        {
            using var ms = new MemoryStream();
            await req.InputStream.CopyToAsync(ms);
            body = ms.ToArray();
        }
        using var up = new HttpRequestMessage(new HttpMethod(req.HttpMethod), target.TrimStart('/'));
        if (req.HttpMethod is not ("GET" or "HEAD")) up.Content = new ByteArrayContent(body);
        foreach (string? name in req.Headers.AllKeys)
        {
            if (name is null || name.Equals("Host", StringComparison.OrdinalIgnoreCase) || name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)
                || name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase) || name.Equals("Connection", StringComparison.OrdinalIgnoreCase)) continue;
            string value = req.Headers[name]!;
            if (name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase)) up.Content?.Headers.TryAddWithoutValidation(name, value);
            else up.Headers.TryAddWithoutValidation(name, value);
        }
        using var resp = await _upstream.SendAsync(up, HttpCompletionOption.ResponseHeadersRead);
        var answer = ctx.Response;
        answer.StatusCode = (int)resp.StatusCode;
        foreach (var (name, values) in resp.Headers.Concat(resp.Content.Headers))
        {
            if (name is "Content-Length" or "Transfer-Encoding" or "Connection" or "Keep-Alive" or "Date" or "Server") continue;
            string value = string.Join(", ", values);
            // The registry's upload locations name itself; clients must come back through the front.
            if (name == "Location") value = value.Replace(_upstreamAuthority, Host, StringComparison.Ordinal);
            if (name == "Content-Type") answer.ContentType = value;
            else answer.AddHeader(name, value);
        }
        var content = await resp.Content.ReadAsByteArrayAsync();
        if (req.HttpMethod == "PUT" && resp.StatusCode == HttpStatusCode.Created && path.Contains("/manifests/", StringComparison.Ordinal)
            && Subject(body, req.ContentType) is { } s)
        {
            lock (_index)
            {
                var list = _index.GetOrAdd((path[4..path.IndexOf("/manifests/", StringComparison.Ordinal)], s.Subject), _ => new());
                if (!list.Any(d => d.Digest == s.Descriptor.Digest)) list.Add(s.Descriptor); // a manifest pushed again is listed once
            }
            answer.AddHeader("OCI-Subject", s.Subject);
        }
        if (req.HttpMethod == "HEAD")
        {
            if (resp.Content.Headers.ContentLength is { } n) answer.ContentLength64 = n;
            return;
        }
        answer.ContentLength64 = content.Length;
        await answer.OutputStream.WriteAsync(content);
    }

    /// <summary>A pushed manifest's subject digest and its descriptor as the referrers list shows it.</summary>
    private static (string Subject, JsonDescriptor Descriptor)? Subject(byte[] body, string? contentType)
    {
        try
        {
            using var doc = JsonDocument.Parse(body);
            var root = doc.RootElement;
            if (!root.TryGetProperty("subject", out var subject) || subject.ValueKind != JsonValueKind.Object) return null;
            string mediaType = root.TryGetProperty("mediaType", out var mt) ? mt.GetString()! : contentType!;
            string? artifactType = root.TryGetProperty("artifactType", out var at) && at.GetString() is { Length: > 0 } a ? a
                : root.TryGetProperty("config", out var cfg) ? cfg.GetProperty("mediaType").GetString() : null; // an index without one has none
            Dictionary<string, string>? annotations = root.TryGetProperty("annotations", out var an)
                ? an.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!) : null;
            return (subject.GetProperty("digest").GetString()!,
                new JsonDescriptor(mediaType, "sha256:" + Convert.ToHexStringLower(SHA256.HashData(body)), body.Length, artifactType, annotations));
        }
        catch (JsonException) { return null; }
    }

    private void ServeReferrers(HttpListenerContext ctx, string repo, string digest, string target)
    {
        var answer = ctx.Response;
        if (!digest.StartsWith("sha256:", StringComparison.Ordinal) || digest.Length != 71 || !digest[7..].All(char.IsAsciiHexDigitLower))
        {
            answer.StatusCode = 400;
            return;
        }
        var query = System.Web.HttpUtility.ParseQueryString(target.Contains('?', StringComparison.Ordinal) ? target[(target.IndexOf('?', StringComparison.Ordinal) + 1)..] : "");
        string? artifactType = query["artifactType"];
        int page = int.TryParse(query["page"], out int p) ? p : 0;
        List<JsonDescriptor> all;
        lock (_index) all = [.. _index.GetValueOrDefault((repo, digest)) ?? []];
        if (artifactType is not null && ApplyFilter)
        {
            all = [.. all.Where(d => d.ArtifactType == artifactType)];
            answer.AddHeader("OCI-Filters-Applied", "artifactType");
        }
        var shown = all.Skip(page * PageSize).Take(PageSize).ToList();
        if ((page + 1) * PageSize < all.Count)
        {
            string next = $"/v2/{repo}/referrers/{digest}?" + (artifactType is null ? "" : "artifactType=" + Uri.EscapeDataString(artifactType) + "&") + $"page={page + 1}";
            answer.AddHeader("Link", $"<{next}>; rel=\"next\"");
        }
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("schemaVersion", 2);
            w.WriteString("mediaType", "application/vnd.oci.image.index.v1+json");
            w.WriteStartArray("manifests");
            foreach (var d in shown)
            {
                w.WriteStartObject();
                w.WriteString("mediaType", d.MediaType);
                w.WriteString("digest", d.Digest);
                w.WriteNumber("size", d.Size);
                if (d.ArtifactType is not null) w.WriteString("artifactType", d.ArtifactType);
                if (d.Annotations is not null)
                {
                    w.WriteStartObject("annotations");
                    foreach (var (k, v) in d.Annotations) w.WriteString(k, v);
                    w.WriteEndObject();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        answer.StatusCode = 200;
        answer.ContentType = "application/vnd.oci.image.index.v1+json";
        var bytes = ms.ToArray();
        answer.ContentLength64 = bytes.Length;
        answer.OutputStream.Write(bytes);
    }

    public void Dispose()
    {
        try { _listener.Stop(); _listener.Close(); }
        catch (ObjectDisposedException) { }
        _upstream.Dispose();
    }
}
