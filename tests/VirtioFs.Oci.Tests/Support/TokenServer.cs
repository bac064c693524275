using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// A docker token server ("token.md") in the test process: GET /token?service=&amp;scope= answers a JWT signed with ES256,
/// the signing certificate in the x5c header (distribution 2.8 verifies x5c against its rootcertbundle, then the
/// signature; the claims iss, aud, exp, nbf and access must match). Optionally demands Basic credentials.
/// </summary>
public sealed class TokenServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly X509Certificate2 _cert;
    private readonly string _root;
    private int _requests;

    public string Service => "vfs-test-registry";
    public string Issuer => "vfs-test-issuer";
    public string Realm { get; }
    public string CertificatePath { get; }
    public int Requests => Volatile.Read(ref _requests);
    public int ExpiresIn { get; set; } = 300;
    public (string User, string Password)? RequiredCredentials { get; set; }

    public TokenServer()
    {
        _root = Path.Combine(Path.GetTempPath(), $"vfs-token-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_root);
        var req = new CertificateRequest("CN=vfs test token signer", _key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyCertSign, true));
        _cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        CertificatePath = Path.Combine(_root, "root.pem");
        File.WriteAllText(CertificatePath, _cert.ExportCertificatePem());
        int port = RegistryServer.FreePort();
        Realm = $"http://127.0.0.1:{port}/token";
        _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
        _listener.Start();
        _ = Task.Run(LoopAsync);
    }

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            try { Handle(ctx); }
            catch (Exception e) when (e is HttpListenerException or IOException) { }
        }
    }

    private void Handle(HttpListenerContext ctx)
    {
        Interlocked.Increment(ref _requests);
        var resp = ctx.Response;
        if (RequiredCredentials is { } rc)
        {
            var h = ctx.Request.Headers["Authorization"];
            string want = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(rc.User + ":" + rc.Password));
            if (h != want)
            {
                resp.StatusCode = 401;
                resp.Close();
                return;
            }
        }
        var scopes = ctx.Request.QueryString.GetValues("scope") ?? [];
        var service = ctx.Request.QueryString["service"];
        var token = Sign(service ?? "", scopes);
        var body = Encoding.UTF8.GetBytes($"{{\"token\":\"{token}\",\"expires_in\":{ExpiresIn}}}");
        resp.ContentType = "application/json";
        resp.ContentLength64 = body.Length;
        resp.OutputStream.Write(body);
        resp.Close();
    }

    /// <summary>A JWT granting every action the scopes ask for (scope = "repository:NAME:ACTIONS").</summary>
    public string Sign(string audience, IEnumerable<string> scopes, DateTimeOffset? now = null)
    {
        var t = (now ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds();
        var header = new MemoryStream();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            w.WriteString("typ", "JWT");
            w.WriteString("alg", "ES256");
            w.WriteStartArray("x5c");
            w.WriteStringValue(Convert.ToBase64String(_cert.RawData));
            w.WriteEndArray();
            w.WriteEndObject();
        }
        var claims = new MemoryStream();
        using (var w = new Utf8JsonWriter(claims))
        {
            w.WriteStartObject();
            w.WriteString("iss", Issuer);
            w.WriteString("sub", "vfs-test");
            w.WriteString("aud", audience);
            w.WriteNumber("exp", t + ExpiresIn);
            w.WriteNumber("nbf", t - 10);
            w.WriteNumber("iat", t);
            w.WriteString("jti", Guid.NewGuid().ToString("N"));
            w.WriteStartArray("access");
            foreach (var s in scopes)
            {
                var parts = s.Split(':');
                if (parts.Length < 3) continue;
                w.WriteStartObject();
                w.WriteString("type", parts[0]);
                w.WriteString("name", string.Join(':', parts[1..^1]));
                w.WriteStartArray("actions");
                foreach (var a in parts[^1].Split(',')) w.WriteStringValue(a);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        string signingInput = B64(header.ToArray()) + "." + B64(claims.ToArray());
        var sig = _key.SignData(Encoding.ASCII.GetBytes(signingInput), HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        return signingInput + "." + B64(sig);
    }

    private static string B64(byte[] b) => Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public void Dispose()
    {
        try { _listener.Stop(); _listener.Close(); } catch (ObjectDisposedException) { }
        _key.Dispose();
        _cert.Dispose();
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }
}
