using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.Logging;

/// <summary>
/// Logs to the local syslog socket (<c>/dev/log</c>, a Unix datagram socket) in the RFC 3164 form syslogd and
/// journald accept: <c>&lt;PRI&gt;vfsd[pid]: message</c>, facility daemon. Kata starts virtiofsd with <c>--syslog</c>;
/// where no syslog socket exists (a bare container) the messages go to stderr so nothing is lost.
/// </summary>
public sealed class SyslogLoggerProvider : ILoggerProvider
{
    private const int FacilityDaemon = 3;
    private const string SocketPath = "/dev/log";
    private readonly Socket? _socket;
    private readonly Lock _gate = new();
    private readonly LogLevel _minimum;
    private readonly string _prefix;

    public SyslogLoggerProvider(LogLevel minimum, string identity = "vfsd")
    {
        _minimum = minimum;
        _prefix = $"{identity}[{Environment.ProcessId}]: ";
        // A sandboxed daemon cannot reach /dev/log from its new root: it inherits the socket its parent connected.
        if (Environment.GetEnvironmentVariable(InheritedFdVariable) is { } inherited
            && int.TryParse(inherited, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fd))
        {
            Environment.SetEnvironmentVariable(InheritedFdVariable, null);
            _socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
            return;
        }
        _socket = Connect();
    }

    private const string InheritedFdVariable = "VFSD_SYSLOG_FD";

    private static Socket? Connect()
    {
        try
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.Connect(new UnixDomainSocketEndPoint(SocketPath));
            return socket;
        }
        catch (SocketException)
        {
            return null;
        }
    }

    /// <summary>Connects to /dev/log for a child about to be re-executed into the sandbox: the socket survives exec and
    /// its number is in the environment the child inherits. Null when there is no syslog to connect to.</summary>
    internal static Socket? ConnectForChild()
    {
        Socket? socket = Connect();
        if (socket is not null)
        {
            VirtioFs.VhostUser.VhostUserServer.KeepAcrossExec(socket);
            Environment.SetEnvironmentVariable(InheritedFdVariable, ((int)socket.Handle).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return socket;
    }

    public ILogger CreateLogger(string categoryName) => new SyslogLogger(this);

    public void Dispose() => _socket?.Dispose();

    private void Write(LogLevel level, string message)
    {
        // RFC 3164 severities: 3 error, 4 warning, 6 info, 7 debug.
        int severity = level switch
        {
            LogLevel.Critical => 2,
            LogLevel.Error => 3,
            LogLevel.Warning => 4,
            LogLevel.Information => 6,
            _ => 7,
        };
        string line = string.Create(CultureInfo.InvariantCulture, $"<{FacilityDaemon * 8 + severity}>{_prefix}{message}");
        lock (_gate)
        {
            if (_socket is not null)
            {
                try
                {
                    _socket.Send(Encoding.UTF8.GetBytes(line));
                    return;
                }
                catch (SocketException)
                {
                    // syslogd went away: fall through to stderr rather than drop the message.
                }
            }
            Console.Error.WriteLine(message);
        }
    }

    private sealed class SyslogLogger(SyslogLoggerProvider provider) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None && logLevel >= provider._minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }
            string message = formatter(state, exception);
            if (exception is not null)
            {
                message = $"{message}: {exception.Message}";
            }
            provider.Write(logLevel, message);
        }
    }
}
