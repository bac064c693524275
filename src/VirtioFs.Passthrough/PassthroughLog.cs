using Microsoft.Extensions.Logging;

namespace VirtioFs.Passthrough;

/// <summary>Log messages of the passthrough filesystem: event ids 4100-4199.</summary>
internal static partial class PassthroughLog
{
    [LoggerMessage(EventId = 4100, Level = LogLevel.Information, Message = "Passthrough of {SharedDir} (cache {Cache}, read-only {ReadOnly}, xattr {Xattr})")]
    public static partial void Started(ILogger logger, string sharedDir, CachePolicy cache, bool readOnly, bool xattr);

    [LoggerMessage(EventId = 4101, Level = LogLevel.Warning, Message = "Could not restore fsuid/fsgid of the worker thread")]
    public static partial void CredentialRestoreFailed(ILogger logger);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Debug, Message = "Forget of unknown node {NodeId}")]
    public static partial void UnknownForget(ILogger logger, ulong nodeId);

    [LoggerMessage(EventId = 4103, Level = LogLevel.Information, Message = "Xattr map of {Rules} rules (security.capability renamed: {CapabilityRenamed}); posix ACLs {PosixAcl}, security labels {SecurityLabel}")]
    public static partial void XattrPolicy(ILogger logger, int rules, bool capabilityRenamed, bool posixAcl, bool securityLabel);
}
