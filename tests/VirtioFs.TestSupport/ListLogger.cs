using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace VirtioFs.TestSupport;

/// <summary>An ILogger that keeps every message, so tests can assert what the transport reported.</summary>
public sealed class ListLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, EventId Id, string Message)> Entries { get; } = new();

    /// <summary>Also echo to stderr (handy while debugging a test).</summary>
    public bool Echo { get; set; }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception,
        Func<TState, Exception?, string> formatter)
    {
        string message = formatter(state, exception) + (exception is null ? "" : " " + exception);
        Entries.Enqueue((logLevel, eventId, message));
        if (Echo)
        {
            Console.Error.WriteLine($"[{logLevel} {eventId.Id}] {message}");
        }
    }
}
