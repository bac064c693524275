using Microsoft.Extensions.Logging;

namespace VirtioFs.Oci.Tests.Support;

/// <summary>Collects formatted log lines (assertions on what was logged, and diagnostics when a test fails).</summary>
public sealed class ListLogger : ILogger
{
    private readonly Lock _lock = new();
    private readonly List<string> _lines = new();
    public List<string> Lines { get { lock (_lock) return _lines.ToList(); } }
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lock) _lines.Add($"{eventId.Id} {formatter(state, exception)}");
    }
}
