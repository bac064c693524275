using System.Buffers;
using System.Text;

namespace VirtioFs.Daemon.Api;

/// <summary>Hard caps on what one request may make the server hold (RFC 9110 §15.5.14, 15.5.32; RFC 6585 §5).</summary>
public sealed class HttpLimits
{
    /// <summary>Request line plus headers plus the blank line.</summary>
    public int MaxHeaderBytes { get; init; } = 8 * 1024;
    public int MaxHeaderCount { get; init; } = 64;
    /// <summary>A mount request carries a config of a few KiB; 1 MiB is generous.</summary>
    public int MaxBodyBytes { get; init; } = 1024 * 1024;
}

/// <summary>One parsed HTTP/1.x request.</summary>
public sealed class HttpRequest
{
    internal HttpRequest(string method, string path, string query, bool http11, List<KeyValuePair<string, string>> headers, byte[] body,
        bool keepAlive)
    {
        Method = method;
        Path = path;
        Query = query;
        IsHttp11 = http11;
        Headers = headers;
        Body = body;
        KeepAlive = keepAlive;
    }

    public string Method { get; }
    /// <summary>The path of the target, still percent-encoded.</summary>
    public string Path { get; }
    /// <summary>The query without its '?', still percent-encoded; empty when absent.</summary>
    public string Query { get; }
    public bool IsHttp11 { get; }
    public IReadOnlyList<KeyValuePair<string, string>> Headers { get; }
    public byte[] Body { get; }
    public bool HasBody => Body.Length > 0;
    /// <summary>Whether the connection stays open after the response (RFC 9112 §9.3).</summary>
    public bool KeepAlive { get; }

    public string? Header(string name)
    {
        foreach (KeyValuePair<string, string> h in Headers)
        {
            if (string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)) return h.Value;
        }
        return null;
    }

    /// <summary>The first value of a query parameter, percent-decoded ('+' is a space, as in form encoding).</summary>
    public string? QueryParameter(string name)
    {
        foreach (string pair in Query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=', StringComparison.Ordinal);
            string key = Decode(eq < 0 ? pair : pair[..eq]);
            if (key == name) return Decode(eq < 0 ? "" : pair[(eq + 1)..]);
        }
        return null;
    }

    private static string Decode(string s) => Uri.UnescapeDataString(s.Replace('+', ' '));
}

public enum HttpParseStatus
{
    /// <summary>More bytes are needed; nothing was consumed.</summary>
    Incomplete,
    Complete,
    /// <summary>The request is unacceptable: answer <see cref="HttpParseError.StatusCode"/> and close the connection.</summary>
    Error,
}

public readonly record struct HttpParseError(int StatusCode, string Reason);

/// <summary>
/// A pure, allocation-light HTTP/1.1 request parser (RFC 9112). It never throws on input: it answers "incomplete" until a
/// whole request (head and Content-Length body) is buffered, or an error with the status to reply. Only what the API
/// needs is accepted: origin-form or absolute-form targets, Content-Length bodies; transfer codings (chunked) are
/// refused with 501, obsolete line folding and bare LF with 400.
/// </summary>
public static class HttpParser
{
    private static readonly byte[] HeadEnd = "\r\n\r\n"u8.ToArray();

    public static HttpParseStatus TryParse(in ReadOnlySequence<byte> buffer, HttpLimits limits, out HttpRequest? request,
        out SequencePosition consumed, out HttpParseError error)
    {
        ArgumentNullException.ThrowIfNull(limits);
        request = null;
        error = default;
        consumed = buffer.Start;

        var reader = new SequenceReader<byte>(buffer);
        if (!reader.TryReadTo(out ReadOnlySequence<byte> head, HeadEnd, advancePastDelimiter: true))
        {
            if (buffer.Length >= limits.MaxHeaderBytes) return Fail(431, "Request Header Fields Too Large", out error);
            return HttpParseStatus.Incomplete;
        }
        if (head.Length + HeadEnd.Length > limits.MaxHeaderBytes) return Fail(431, "Request Header Fields Too Large", out error);

        // The head is bounded by MaxHeaderBytes: parse it from one contiguous copy.
        byte[] headBytes = head.ToArray();
        ReadOnlySpan<byte> rest = headBytes;

        int eol = rest.IndexOf("\r\n"u8);
        ReadOnlySpan<byte> requestLine = eol < 0 ? rest : rest[..eol];
        rest = eol < 0 ? default : rest[(eol + 2)..];
        if (!ParseRequestLine(requestLine, out string method, out string path, out string query, out bool http11, out error))
        {
            return HttpParseStatus.Error;
        }

        var headers = new List<KeyValuePair<string, string>>();
        long contentLength = -1;
        bool close = false, keepAliveToken = false, transferEncoding = false;
        while (!rest.IsEmpty)
        {
            eol = rest.IndexOf("\r\n"u8);
            ReadOnlySpan<byte> line = eol < 0 ? rest : rest[..eol];
            rest = eol < 0 ? default : rest[(eol + 2)..];
            if (headers.Count >= limits.MaxHeaderCount) return Fail(431, "Request Header Fields Too Large", out error);
            if (!ParseHeader(line, out string name, out string value, out error)) return HttpParseStatus.Error;
            headers.Add(new(name, value));

            if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                if (!TryParseLength(value, out long n)) return Fail(400, "Bad Content-Length", out error);
                // Repeated Content-Length must agree (RFC 9112 §6.3), or the message boundary is ambiguous.
                if (contentLength >= 0 && contentLength != n) return Fail(400, "Conflicting Content-Length", out error);
                contentLength = n;
            }
            else if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
            {
                transferEncoding = true;
            }
            else if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase))
            {
                foreach (string token in value.Split(','))
                {
                    string t = token.Trim();
                    if (t.Equals("close", StringComparison.OrdinalIgnoreCase)) close = true;
                    else if (t.Equals("keep-alive", StringComparison.OrdinalIgnoreCase)) keepAliveToken = true;
                }
            }
        }
        if (transferEncoding)
        {
            // RFC 9112 §6.1: a server that does not understand a transfer coding answers 501.
            return Fail(501, "Transfer-Encoding not supported", out error);
        }
        if (contentLength > limits.MaxBodyBytes) return Fail(413, "Content Too Large", out error);

        long bodyLength = Math.Max(contentLength, 0);
        if (reader.Remaining < bodyLength) return HttpParseStatus.Incomplete;
        byte[] body = bodyLength == 0 ? [] : reader.UnreadSequence.Slice(0, bodyLength).ToArray();
        reader.Advance(bodyLength);

        bool keepAlive = http11 ? !close : keepAliveToken && !close;
        request = new HttpRequest(method, path, query, http11, headers, body, keepAlive);
        consumed = reader.Position;
        return HttpParseStatus.Complete;
    }

    private static HttpParseStatus Fail(int status, string reason, out HttpParseError error)
    {
        error = new HttpParseError(status, reason);
        return HttpParseStatus.Error;
    }

    private static bool ParseRequestLine(ReadOnlySpan<byte> line, out string method, out string path, out string query, out bool http11,
        out HttpParseError error)
    {
        method = path = query = "";
        http11 = false;
        error = new HttpParseError(400, "Bad request line");
        int sp1 = line.IndexOf((byte)' ');
        if (sp1 <= 0) return false;
        ReadOnlySpan<byte> m = line[..sp1];
        ReadOnlySpan<byte> afterMethod = line[(sp1 + 1)..];
        int sp2 = afterMethod.IndexOf((byte)' ');
        if (sp2 <= 0) return false;
        ReadOnlySpan<byte> target = afterMethod[..sp2];
        ReadOnlySpan<byte> version = afterMethod[(sp2 + 1)..];
        foreach (byte b in m)
        {
            if (!IsTokenChar(b)) return false;
        }
        if (version.SequenceEqual("HTTP/1.1"u8)) http11 = true;
        else if (!version.SequenceEqual("HTTP/1.0"u8))
        {
            // A well-formed HTTP/d.d of another version is 505; anything else is a malformed request line.
            bool wellFormed = version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5])
                && version[6] == (byte)'.' && char.IsAsciiDigit((char)version[7]);
            error = wellFormed ? new HttpParseError(505, "HTTP Version Not Supported") : error;
            return false;
        }
        foreach (byte b in target)
        {
            if (b is <= 0x20 or >= 0x7F) return false; // visible ASCII only (RFC 3986)
        }
        // absolute-form (RFC 9112 §3.2.2): drop scheme and authority.
        if (target.StartsWith("http://"u8) || target.StartsWith("https://"u8))
        {
            ReadOnlySpan<byte> afterScheme = target[(target.IndexOf("//"u8) + 2)..];
            int slash = afterScheme.IndexOfAny((byte)'/', (byte)'?');
            target = slash < 0 ? "/"u8 : afterScheme[slash..];
            if (target[0] == (byte)'?') return false;
        }
        if (target.IsEmpty || target[0] != (byte)'/') return false;
        int q = target.IndexOf((byte)'?');
        method = Encoding.ASCII.GetString(m);
        path = Encoding.ASCII.GetString(q < 0 ? target : target[..q]);
        query = q < 0 ? "" : Encoding.ASCII.GetString(target[(q + 1)..]);
        int hash = query.IndexOf('#', StringComparison.Ordinal);
        if (hash >= 0) query = query[..hash];
        return true;
    }

    private static bool ParseHeader(ReadOnlySpan<byte> line, out string name, out string value, out HttpParseError error)
    {
        name = value = "";
        error = new HttpParseError(400, "Bad header");
        if (line.IsEmpty || line[0] is (byte)' ' or (byte)'\t') return false; // obs-fold (RFC 9112 §5.2)
        int colon = line.IndexOf((byte)':');
        if (colon <= 0) return false;
        foreach (byte b in line[..colon])
        {
            if (!IsTokenChar(b)) return false; // includes "no whitespace before the colon" (RFC 9112 §5.1)
        }
        ReadOnlySpan<byte> v = line[(colon + 1)..].Trim(" \t"u8);
        foreach (byte b in v)
        {
            if (b is (byte)'\r' or (byte)'\n' or 0 || (b < 0x20 && b != (byte)'\t') || b == 0x7F) return false;
        }
        name = Encoding.ASCII.GetString(line[..colon]);
        value = Encoding.Latin1.GetString(v);
        return true;
    }

    private static bool TryParseLength(string s, out long n)
    {
        n = 0;
        if (s.Length is 0 or > 18) return false;
        foreach (char c in s)
        {
            if (c is < '0' or > '9') return false;
            n = n * 10 + (c - '0');
        }
        return true;
    }

    /// <summary>RFC 9110 §5.6.2 tchar.</summary>
    private static bool IsTokenChar(byte b) =>
        b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9'
        || "!#$%&'*+-.^_`|~"u8.Contains(b);
}
