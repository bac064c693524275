using Microsoft.Extensions.Logging;

namespace VirtioFs.Oci;

/// <summary>OCI registry and object storage client log messages; event ids 6000-6049.</summary>
internal static partial class OciLog
{
    [LoggerMessage(6000, LogLevel.Warning, "{Service} {Operation}: attempt {Attempt} failed ({Error}); retrying in {DelayMs} ms")]
    public static partial void Retrying(ILogger logger, string service, string operation, int attempt, string error, int delayMs);

    [LoggerMessage(6001, LogLevel.Error, "{Service} {Operation}: giving up after {Attempts} attempts: {Error}")]
    public static partial void GaveUp(ILogger logger, string service, string operation, int attempts, string error);

    [LoggerMessage(6002, LogLevel.Debug, "registry token for scope '{Scope}' fetched from {Realm}, valid {Seconds} s")]
    public static partial void TokenFetched(ILogger logger, string scope, string realm, int seconds);

    [LoggerMessage(6003, LogLevel.Debug, "{What} redirected to {Host}")]
    public static partial void Redirected(ILogger logger, string what, string host);

    [LoggerMessage(6004, LogLevel.Warning, "proxy {Proxy} failed ({Error}); reading from the registry directly until it answers again")]
    public static partial void ProxyDown(ILogger logger, string proxy, string error);

    [LoggerMessage(6005, LogLevel.Information, "proxy {Proxy} answers again; blob reads go through it")]
    public static partial void ProxyUp(ILogger logger, string proxy);

    [LoggerMessage(6006, LogLevel.Information, "blob {Digest}: {Outcome}")]
    public static partial void BlobPushed(ILogger logger, string digest, string outcome);

    [LoggerMessage(6007, LogLevel.Debug, "blob {Digest}: cached redirect to {Host} dropped ({Reason}); asking the registry again")]
    public static partial void RedirectDropped(ILogger logger, string digest, string host, string reason);

    [LoggerMessage(6008, LogLevel.Information, "registry {Host}: credentials replaced at run time (user {User})")]
    public static partial void CredentialsUpdated(ILogger logger, string host, string user);

    [LoggerMessage(6010, LogLevel.Information, "{Service} bucket {Bucket}: credentials from the {Source}, access key id {KeyId}")]
    public static partial void ObjectStorageCredentials(ILogger logger, string service, string bucket, string source, string keyId);

    [LoggerMessage(6011, LogLevel.Information, "{Object}: {Outcome}")]
    public static partial void ObjectUploaded(ILogger logger, string @object, string outcome);
}
