namespace VirtioFs.Oci.Http;

/// <summary>
/// How an HTTP storage backend connects and retries, whatever it speaks on top: the keys every nydus HTTP backend
/// shares (api/src/config.rs: <c>skip_verify</c>, <c>timeout</c>, <c>connect_timeout</c>, <c>retry_limit</c>,
/// <c>proxy</c>; the CA file). <see cref="RegistryOptions"/> and <see cref="ObjectStorage.ObjectStorageOptions"/> each
/// hold one, and <see cref="HttpRequestPipeline"/> is built from it. Defaults follow nydus where it has one; the retry
/// count is higher because a lazily pulled image has no other copy to fall back to.
/// </summary>
public sealed record HttpTransportOptions
{
    /// <summary>Accept any server certificate (nydus <c>skip_verify</c>).</summary>
    public bool SkipVerify { get; init; }

    /// <summary>PEM file of CA certificates trusted in addition to the system trust store (nydus <c>ca_file</c>, or
    /// the first of <c>ca_cert_files</c> for object storage).</summary>
    public string? CaFile { get; init; }

    /// <summary>Deadline of one request attempt: headers and body of a range read (nydus <c>timeout</c>, default 5 s).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Deadline of one TCP/TLS connect (nydus <c>connect_timeout</c>, default 5 s).</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Deadline of one attempt of a whole-blob transfer (push, pull, an upload part): large blobs need longer
    /// than a range read.</summary>
    public TimeSpan TransferTimeout { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>Retries after the first attempt, on connection errors, timeouts, truncated bodies, 5xx and 429
    /// (nydus <c>retry_limit</c>). 4xx other than 429 is final.</summary>
    public int RetryLimit { get; init; } = 3;

    /// <summary>First retry delay; doubled each retry up to <see cref="MaxRetryDelay"/>, with jitter.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Pooled connections per server: bounds the concurrency of prefetch range reads.</summary>
    public int MaxConnectionsPerServer { get; init; } = 16;

    /// <summary>Optional forward proxy (mirror, P2P) for reads (nydus <c>proxy</c>).</summary>
    public RegistryProxyOptions? Proxy { get; init; }

    public void Validate()
    {
        if (Timeout <= TimeSpan.Zero || ConnectTimeout <= TimeSpan.Zero || TransferTimeout <= TimeSpan.Zero)
            throw new ArgumentException("timeouts must be positive");
        if (RetryLimit is < 0 or > 100) throw new ArgumentException("retry limit must be 0..100");
        if (MaxConnectionsPerServer is < 1 or > 1024) throw new ArgumentException("max connections must be 1..1024");
        Proxy?.Validate();
    }
}
