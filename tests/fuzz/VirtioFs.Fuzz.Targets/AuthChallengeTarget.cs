using System.Text;
using VirtioFs.Oci;

namespace VirtioFs.Fuzz;

/// <summary>
/// <c>WWW-Authenticate</c> headers as a registry (or anything posing as one) sends them to the registry backend.
/// <see cref="AuthChallenge.TryParse"/> is documented pure: any string gives true or false, never an exception.
/// </summary>
public sealed class AuthChallengeTarget : IFuzzTarget
{
    public string Name => "auth";

    public int MaxInput => 16 * 1024;

    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        // The shapes docker distribution, Harbor, GHCR and the token server in our tests answer with.
        yield return ("bearer", Encoding.UTF8.GetBytes("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/busybox:pull\""));
        yield return ("bearer-unquoted", Encoding.UTF8.GetBytes("Bearer realm=https://ghcr.io/token, service=ghcr.io,scope=repository:a/b:pull"));
        yield return ("basic", Encoding.UTF8.GetBytes("Basic realm=\"Registry Realm\""));
        yield return ("escaped", Encoding.UTF8.GetBytes("Bearer realm=\"https://h/t\\\"x\",error=\"insufficient_scope\",scope=\"repository:r:pull,push\""));
        yield return ("two-challenges", Encoding.UTF8.GetBytes("Basic realm=\"a\", Bearer realm=\"b\""));
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        string header = Encoding.UTF8.GetString(input);
        if (AuthChallenge.TryParse(header, out AuthChallenge challenge))
        {
            if (string.IsNullOrEmpty(challenge.Scheme) || challenge.Parameters is null)
            {
                throw new FuzzFailure("TryParse returned true with an empty scheme or no parameters");
            }
            _ = (challenge.Realm, challenge.Service, challenge.Scope, challenge.IsBasic, challenge.IsBearer);
        }
    }

    public void Dispose()
    {
    }
}
