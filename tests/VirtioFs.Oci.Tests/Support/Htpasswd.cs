using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Generators;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>An htpasswd line with a bcrypt hash, as distribution's htpasswd auth accepts ($2a$, cost 5 to stay quick).</summary>
public static class Htpasswd
{
    public static string Line(string user, string password) =>
        user + ":" + OpenBsdBCrypt.Generate("2a", password.ToCharArray(), RandomNumberGenerator.GetBytes(16), 5);
}
