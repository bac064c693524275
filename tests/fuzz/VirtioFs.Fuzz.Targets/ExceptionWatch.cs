using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Fuzz;

/// <summary>
/// A logger that remembers every exception the code under test logged. The layers that must not crash catch broadly
/// and log (FuseServer.Handle answers EIO and logs event 4003; the vhost-user connection fails the request and logs
/// 1012), so a logged exception is how a swallowed bug shows; each target checks this after every input.
/// Only warnings and errors are formatted, so the watch costs nothing on the hot path.
/// </summary>
public sealed class ExceptionWatch : ILogger, ILoggerFactory
{
    private readonly ConcurrentQueue<(EventId Id, Exception Exception)> _seen = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception,
        Func<TState, Exception?, string> formatter)
    {
        if (exception is not null)
        {
            _seen.Enqueue((eventId, exception));
        }
    }

    /// <summary>Throws when an exception was logged since the last call, and forgets it.</summary>
    public void ThrowIfSwallowed(string where)
    {
        if (_seen.TryDequeue(out var first))
        {
            _seen.Clear();
            throw new FuzzFailure($"{where}: exception swallowed and logged (event {first.Id.Id}): {first.Exception}");
        }
    }

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }
}
