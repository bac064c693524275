using VirtioFs.Oci.Http;

namespace VirtioFs.Oci.ObjectStorage;

/// <summary>An object storage request failed. <see cref="ErrorCode"/> is the service's error code from the response
/// body (S3 and OSS both answer <c>&lt;Error&gt;&lt;Code&gt;</c>), e.g. InvalidAccessKeyId, SignatureDoesNotMatch,
/// ExpiredToken, NoSuchKey, SlowDown.</summary>
public sealed class ObjectStorageException(string message, int statusCode = 0, bool transient = false, Exception? inner = null, string? errorCode = null)
    : RemoteStorageException(message, statusCode, transient, inner)
{
    public string? ErrorCode { get; } = errorCode;
}
