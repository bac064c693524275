using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.Logging;

/// <summary>
/// <c>--log-file F [--log-rotation-size N]</c> as nydusd does them (nydus <c>src/logger.rs</c>, flexi_logger 0.28):
/// lines are appended to F (".log" is added when F has no extension); with N &gt; 0 the file is rotated once it
/// exceeds N MiB: renamed to <c>STEM_rYYYY-MM-DD_HH-MM-SS.EXT</c> (<c>.restart-NNNN</c> added when a second already
/// has one), gzip-compressed to <c>.gz</c>, and only the 10 newest compressed files are kept
/// (<c>Cleanup::KeepCompressedFiles(10)</c>). One difference, on purpose: nydusd's live file is <c>STEM_rCURRENT.EXT</c>
/// while rotation is on; vfsd keeps writing the path it was given, where a user looks for it.
/// Lines are formatted by the caller's thread and written by one background thread, so a FUSE worker never waits on
/// the disk or on compression; when more than <see cref="QueueCapacity"/> lines are waiting, new ones are dropped and
/// counted, and the count is logged once the queue drains.
/// </summary>
public sealed class RotatingFileLoggerProvider : ILoggerProvider
{
    /// <summary>flexi_logger's <c>Cleanup::KeepCompressedFiles(10)</c> in nydusd.</summary>
    public const int KeptRotatedFiles = 10;
    private const int QueueCapacity = 16384;

    private readonly LogLevel _minimum;
    private readonly long _rotateAbove;
    private readonly string _directory;
    private readonly string _stem;
    private readonly string _extension;
    private readonly BlockingCollection<string> _queue = new(QueueCapacity);
    private readonly Thread _writer;
    private FileStream _file;
    private long _dropped;
    private long _pending;
    private int _disposed;

    /// <summary>Opens (creates or appends to) the log file; throws IOException/UnauthorizedAccessException when it cannot.</summary>
    public RotatingFileLoggerProvider(string path, LogLevel minimum, ulong rotationSizeMiB)
    {
        ArgumentNullException.ThrowIfNull(path);
        Path = ResolvePath(path);
        _minimum = minimum;
        // The parser caps the MiB count so this cannot overflow; 0 disables rotation.
        _rotateAbove = rotationSizeMiB == 0 ? long.MaxValue : (long)Math.Min(rotationSizeMiB << 20, long.MaxValue);
        _directory = System.IO.Path.GetDirectoryName(Path)!;
        _stem = System.IO.Path.GetFileNameWithoutExtension(Path);
        _extension = System.IO.Path.GetExtension(Path);
        Directory.CreateDirectory(_directory);
        _file = Open(Path);
        _writer = new Thread(WriteLoop) { IsBackground = true, Name = "vfsd-log" };
        _writer.Start();
    }

    /// <summary>The file written: the given path made absolute, with ".log" when it had no extension.</summary>
    public string Path { get; }

    /// <summary>nydusd: a relative path is taken from the working directory; flexi_logger adds ".log" to a bare name.</summary>
    public static string ResolvePath(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        return System.IO.Path.HasExtension(full) ? full : full + ".log";
    }

    public ILogger CreateLogger(string categoryName) => new FileLogger(this);

    /// <summary>Writes what is queued, then closes the file.</summary>
    public void Dispose()
    {
        // Idempotent: the logger factory and Program may both dispose it.
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _queue.CompleteAdding();
        // A writer stuck on a hung disk keeps its stream and queue (the process is exiting anyway).
        if (!_writer.Join(TimeSpan.FromSeconds(10))) return;
        _file.Dispose();
        _queue.Dispose();
    }

    /// <summary>Lines logged so far but not yet written.</summary>
    internal long Pending => Interlocked.Read(ref _pending);

    /// <summary>Lines dropped because the queue was full, since the last note about it.</summary>
    internal long Dropped => Interlocked.Read(ref _dropped);

    private void Enqueue(LogLevel level, string message, Exception? exception)
    {
        // nydusd's opt_format: "[2026-12-04 21:50:00.123456] INFO message".
        var line = new StringBuilder(message.Length + 40);
        line.Append('[').Append(DateTime.Now.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture)).Append("] ")
            .Append(LevelName(level)).Append(' ').Append(message);
        if (exception is not null) line.Append(": ").Append(exception);
        line.Append('\n');
        try
        {
            Interlocked.Increment(ref _pending);
            if (!_queue.TryAdd(line.ToString()))
            {
                Interlocked.Decrement(ref _pending);
                Interlocked.Increment(ref _dropped);
            }
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException)
        {
            // Logged after Dispose (a late thread): nowhere to write it.
            Interlocked.Decrement(ref _pending);
        }
    }

    private static string LevelName(LogLevel level) => level switch
    {
        LogLevel.Critical or LogLevel.Error => "ERROR",
        LogLevel.Warning => "WARN",
        LogLevel.Information => "INFO",
        LogLevel.Debug => "DEBUG",
        _ => "TRACE",
    };

    private void WriteLoop()
    {
        foreach (string line in _queue.GetConsumingEnumerable())
        {
            Write(line);
            Interlocked.Decrement(ref _pending);
            if (_queue.Count == 0)
            {
                Flush();
                long dropped = Interlocked.Exchange(ref _dropped, 0);
                if (dropped > 0) Write($"[{DateTime.Now.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture)}] WARN {dropped} log lines dropped: the log file could not keep up\n");
            }
        }
        Flush();
    }

    private void Write(string line)
    {
        try
        {
            byte[] bytes = Encoding.UTF8.GetBytes(line);
            _file.Write(bytes);
            // Rotates once the file has exceeded the size, as flexi_logger's Criterion::Size checks after a write.
            if (_file.Position > _rotateAbove) Rotate();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            // A full or vanished disk must not take the daemon down; the line is lost.
        }
    }

    private void Flush()
    {
        try
        {
            _file.Flush();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
        }
    }

    private void Rotate()
    {
        _file.Dispose();
        string rotated = RotatedName();
        try
        {
            File.Move(Path, rotated);
        }
        finally
        {
            // Reopened even when the rename failed, so the writer never holds a closed stream.
            _file = Open(Path);
        }
        try
        {
            using (var input = File.OpenRead(rotated))
            using (var output = new GZipStream(File.Create(rotated + ".gz"), CompressionLevel.Fastest))
            {
                input.CopyTo(output);
            }
            File.Delete(rotated);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left uncompressed: still a rotated log, just larger.
        }
        Cleanup();
    }

    /// <summary>STEM_rYYYY-MM-DD_HH-MM-SS.EXT, or with .restart-NNNN when that (or its .gz) exists already.</summary>
    private string RotatedName()
    {
        string infix = "_r" + DateTime.Now.ToString("yyyy-MM-dd_HH-mm-ss", CultureInfo.InvariantCulture);
        string candidate = System.IO.Path.Combine(_directory, _stem + infix + _extension);
        for (int restart = 0; File.Exists(candidate) || File.Exists(candidate + ".gz"); restart++)
        {
            candidate = System.IO.Path.Combine(_directory, string.Create(CultureInfo.InvariantCulture, $"{_stem}{infix}.restart-{restart:D4}{_extension}"));
        }
        return candidate;
    }

    /// <summary>Deletes all but the <see cref="KeptRotatedFiles"/> newest compressed rotations (names sort by time).</summary>
    private void Cleanup()
    {
        var rotated = Directory.EnumerateFiles(_directory, _stem + "_r*" + _extension + ".gz")
            .Order(StringComparer.Ordinal).ToList();
        for (int i = 0; i < rotated.Count - KeptRotatedFiles; i++)
        {
            try
            {
                File.Delete(rotated[i]);
            }
            catch (IOException)
            {
            }
        }
    }

    private static FileStream Open(string path) =>
        new(path, new FileStreamOptions { Mode = FileMode.Append, Access = FileAccess.Write, Share = FileShare.ReadWrite | FileShare.Delete, BufferSize = 64 * 1024 });

    private sealed class FileLogger(RotatingFileLoggerProvider provider) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None && logLevel >= provider._minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            provider.Enqueue(logLevel, formatter(state, exception), exception);
        }
    }
}
