using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Oci.Http;

namespace VirtioFs.Oci;

/// <summary>
/// A client for one repository of an OCI distribution registry (distribution-spec "spec.md"). Thread-safe: one
/// instance is shared by every reader; its <see cref="SocketsHttpHandler"/> pools connections (keep-alive) and bounds
/// them per server. Every attempt has a deadline; transient failures are retried with exponential backoff; a 401 runs
/// the challenge flow once (Basic, or a Bearer token fetched from the realm and cached per scope until it expires).
/// Blob reads follow redirects by hand (no credentials to storage, target cached per blob) and, with a proxy configured,
/// are routed through it as nydusd routes them (a forward proxy with a health ping and fallback to the registry).
/// The class is split by job: blob reads (<c>RegistryClient.Blobs.cs</c>), uploads (<c>.Uploads.cs</c>), manifests
/// (<c>.Manifests.cs</c>) and authentication (<c>.Auth.cs</c>); retries, deadlines, redirects and the proxy are the
/// service-independent <see cref="HttpRequestPipeline"/> and <see cref="ForwardProxyRouter"/>.
/// </summary>
public sealed partial class RegistryClient : IDisposable
{
    private readonly RegistryOptions _o;
    private readonly ILogger _log;
    private readonly HttpRequestPipeline _pipeline;
    private readonly Uri _base;
    private readonly string _pullScope, _pushScope;
    private readonly ForwardProxyRouter? _proxy;
    private RegistryCredentials? _credentials;         // swapped whole by UpdateCredentials; read once per request

    public RegistryClient(RegistryOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _o = options;
        _credentials = options.Credentials;
        _log = logger ?? NullLogger.Instance;
        _base = new Uri($"{options.EffectiveScheme}://{options.Host}/");
        _pullScope = $"repository:{options.Repository}:pull";
        _pushScope = $"repository:{options.Repository}:pull,push";
        _pipeline = new HttpRequestPipeline(new HttpPipelineOptions
        {
            Service = "registry",
            Peer = options.Host,
            NewError = (message, status, transient, inner) => new RegistryException(message, status, transient, inner),
            Transport = options.Transport,
            UserAgent = "vfs-registry/1.0",
        }, _base, _log);
        if (options.Transport.Proxy is { } p) _proxy = new ForwardProxyRouter(_pipeline, p, _log);
    }

    /// <summary>The credentials the next request authenticates with (initially <see cref="RegistryOptions.Credentials"/>).</summary>
    public RegistryCredentials? Credentials => Volatile.Read(ref _credentials);

    /// <summary>
    /// Replaces the credentials of a running client (nydusd's <c>PUT /api/v1/config</c> with <c>registry_auth</c>, which
    /// nydus-snapshotter sends when a registry password rotates). The record is swapped whole, so a request in flight
    /// uses either the old pair or the new one, never a mix; bearer tokens fetched with the old pair are dropped so the
    /// next request fetches one with the new pair. The registry's challenge is kept: it does not depend on the user.
    /// </summary>
    public void UpdateCredentials(RegistryCredentials? credentials)
    {
        Volatile.Write(ref _credentials, credentials);
        _tokens.Clear();
        OciLog.CredentialsUpdated(_log, _o.Host, credentials?.Username ?? "(anonymous)");
    }

    public RegistryOptions Options => _o;

    /// <summary>Base URI of the registry (<c>scheme://host/</c>).</summary>
    public Uri BaseUri => _base;

    /// <summary>True while blob reads go through the configured proxy.</summary>
    public bool UsingProxy => _proxy is { Healthy: true };

    /// <summary>Runs one registry operation with per-attempt deadlines and retries (<see cref="HttpRequestPipeline.WithRetriesAsync{T}"/>).</summary>
    internal Task<T> WithRetriesAsync<T>(string operation, TimeSpan timeout, Func<CancellationToken, Task<T>> attempt, CancellationToken ct) =>
        _pipeline.WithRetriesAsync(operation, timeout, attempt, ct);

    public void Dispose()
    {
        _proxy?.Dispose();
        _pipeline.Dispose();
    }
}
