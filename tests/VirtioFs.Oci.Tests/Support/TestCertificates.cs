using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>
/// A throwaway PKI in a temp directory: a root CA, an intermediate CA and a server certificate for 127.0.0.1 signed by
/// the intermediate. <see cref="ServerChainPath"/> holds the server certificate followed by the intermediate (what a
/// server sends), <see cref="ServerKeyPath"/> its PKCS#8 key, <see cref="CaPath"/> the root only (what a client trusts).
/// </summary>
public sealed class TestCertificates : IDisposable
{
    public string Directory { get; }
    public string CaPath { get; }
    public string ServerChainPath { get; }
    public string ServerKeyPath { get; }

    public TestCertificates(string subjectIp = "127.0.0.1")
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("vfs-pki-").FullName;
        var now = DateTimeOffset.UtcNow;
        using var rootKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var root = CaRequest("CN=vfs test root CA", rootKey, pathLength: 1).CreateSelfSigned(now.AddDays(-1), now.AddDays(2));
        using var interKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var interPublic = CaRequest("CN=vfs test intermediate CA", interKey, pathLength: 0).Create(root, now.AddHours(-1), now.AddDays(1), Serial());
        using var inter = interPublic.CopyWithPrivateKey(interKey);

        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={subjectIp}", serverKey, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Parse(subjectIp));
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false)); // serverAuth
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        req.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(inter, true, false));
        using var server = req.Create(inter, now.AddMinutes(-10), now.AddHours(12), Serial());

        CaPath = Path.Combine(Directory, "ca.pem");
        ServerChainPath = Path.Combine(Directory, "server.pem");
        ServerKeyPath = Path.Combine(Directory, "server.key");
        File.WriteAllText(CaPath, root.ExportCertificatePem());
        File.WriteAllText(ServerChainPath, server.ExportCertificatePem() + "\n" + inter.ExportCertificatePem() + "\n");
        File.WriteAllText(ServerKeyPath, serverKey.ExportPkcs8PrivateKeyPem());
    }

    private static CertificateRequest CaRequest(string subject, ECDsa key, int pathLength)
    {
        var r = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        r.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, pathLength, true));
        r.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        r.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(r.PublicKey, false));
        return r;
    }

    private static byte[] Serial() => RandomNumberGenerator.GetBytes(12);

    public void Dispose()
    {
        try { System.IO.Directory.Delete(Directory, true); } catch (IOException) { }
    }
}
