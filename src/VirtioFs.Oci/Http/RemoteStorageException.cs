namespace VirtioFs.Oci.Http;

/// <summary>A request to remote storage (a registry, an object store) failed. <see cref="Transient"/> says whether trying
/// again may help (connection errors, timeouts, truncated bodies, 5xx, 429); <see cref="StatusCode"/> is the HTTP status
/// when there was one. Each service throws its own subclass so a caller can tell which one failed.</summary>
public class RemoteStorageException(string message, int statusCode = 0, bool transient = false, Exception? inner = null)
    : Exception(message, inner)
{
    public int StatusCode { get; } = statusCode;
    public bool Transient { get; } = transient;
    public bool IsNotFound => StatusCode == 404;
    public bool IsUnauthorized => StatusCode is 401 or 403;
}
