using System.Diagnostics;
using System.Globalization;

namespace VirtioFs.ImageTool.Registry;

/// <summary>
/// Progress of one long transfer: bytes, rate and ETA. On a terminal one line is redrawn in place (at most 10 times a
/// second); otherwise (logs, CI, tests) a plain line is written at most every <see cref="PlainInterval"/> and at the end.
/// </summary>
internal sealed class TransferProgress : IProgress<long>
{
    public static readonly TimeSpan PlainInterval = TimeSpan.FromSeconds(2);
    private readonly TextWriter _w;
    private readonly string _name;
    private readonly long _total;
    private readonly bool _tty;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Lock _lock = new();
    private TimeSpan? _last;
    private long _done;

    public TransferProgress(TextWriter w, string name, long total, bool terminal)
    {
        _w = w;
        _name = name;
        _total = total;
        _tty = terminal;
    }

    public void Report(long value)
    {
        lock (_lock)
        {
            _done = value;
            var now = _clock.Elapsed;
            if (_last is { } last && now - last < (_tty ? TimeSpan.FromMilliseconds(100) : PlainInterval)) return;
            _last = now;
            Write(final: false);
        }
    }

    /// <summary>Writes the closing line (with a newline after the in-place line on a terminal).</summary>
    public void Done(string outcome)
    {
        lock (_lock)
        {
            if (_tty) _w.Write("\r\u001b[K");
            _w.WriteLine($"{_name}: {outcome} {Size(_total)} in {_clock.Elapsed.TotalSeconds:0.0} s");
        }
    }

    private void Write(bool final)
    {
        double secs = Math.Max(_clock.Elapsed.TotalSeconds, 0.001);
        double rate = _done / secs;
        string eta = rate > 0 && _total > _done ? TimeSpan.FromSeconds((_total - _done) / rate).ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture) : "--:--:--";
        string pct = _total > 0 ? (100.0 * _done / _total).ToString("0.0", CultureInfo.InvariantCulture) + "%" : "";
        string line = $"{_name}: {Size(_done)} / {Size(_total)} {pct} {Size((long)rate)}/s ETA {eta}";
        if (_tty) _w.Write("\r\u001b[K" + line);
        else _w.WriteLine(line);
        _ = final;
    }

    public static string Size(long b) => b switch
    {
        >= 1L << 30 => (b / (double)(1L << 30)).ToString("0.00", CultureInfo.InvariantCulture) + " GiB",
        >= 1L << 20 => (b / (double)(1L << 20)).ToString("0.0", CultureInfo.InvariantCulture) + " MiB",
        >= 1L << 10 => (b / 1024.0).ToString("0.0", CultureInfo.InvariantCulture) + " KiB",
        _ => b.ToString(CultureInfo.InvariantCulture) + " B",
    };
}
