using System.Globalization;
using System.Text;

namespace VirtioFs.Daemon.Api;

// Prometheus text exposition format 0.0.4 (prometheus.io "Exposition formats"): UTF-8 lines separated by '\n'.
// A metric family is introduced by "# HELP name text" and "# TYPE name counter|gauge|histogram|summary|untyped", and
// all of its samples follow together: "name{label="value",...} value". Label values escape backslash, double quote and
// newline as \\, \" and \n; HELP text escapes backslash and newline. A histogram named X has the samples
// X_bucket{le="bound"} (cumulative counts, ascending bounds, the last one le="+Inf" equal to X_count), X_sum and X_count.
// Counters conventionally end in _total. The response's Content-Type is text/plain; version=0.0.4.

/// <summary>
/// Builds one Prometheus text exposition (format 0.0.4) in a single buffer. Families must be declared once, before their
/// samples; names are checked against the format's grammar so a programming error fails loudly in tests rather than
/// producing a scrape Prometheus rejects.
/// </summary>
public sealed class PrometheusWriter
{
    /// <summary>The Content-Type of a 0.0.4 text exposition.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private readonly StringBuilder _sb;
    private readonly HashSet<string> _declared = new(StringComparer.Ordinal);
    private string? _family;
    private string _type = "";

    public PrometheusWriter(int capacity = 8192) => _sb = new StringBuilder(capacity);

    /// <summary>Starts a metric family: its HELP and TYPE lines. Each family may be declared once.</summary>
    public void Family(string name, string type, string help)
    {
        if (!IsMetricName(name)) throw new ArgumentException($"'{name}' is not a valid metric name", nameof(name));
        if (type is not ("counter" or "gauge" or "histogram" or "summary" or "untyped"))
            throw new ArgumentException($"'{type}' is not a metric type", nameof(type));
        if (!_declared.Add(name)) throw new InvalidOperationException($"metric family {name} declared twice");
        _family = name;
        _type = type;
        _sb.Append("# HELP ").Append(name).Append(' ');
        foreach (char c in help)
        {
            if (c == '\\') _sb.Append("\\\\");
            else if (c == '\n') _sb.Append("\\n");
            else _sb.Append(c);
        }
        _sb.Append("\n# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
    }

    /// <summary>One sample of the current family (a counter, gauge or untyped value).</summary>
    public void Sample(Labels labels, double value) => Write(Current(), "", labels, null, value);

    /// <summary>One sample of the current family with an integer value.</summary>
    public void Sample(Labels labels, long value) => Write(Current(), "", labels, null, value);

    /// <summary>
    /// One histogram series of the current (histogram) family: <paramref name="counts"/> are per-bucket (not cumulative)
    /// counts for the ascending upper <paramref name="bounds"/>, plus one final count for the open-ended bucket; they are
    /// written cumulatively, ending with le="+Inf", and _count is their total so the two always agree.
    /// </summary>
    public void Histogram(Labels labels, IReadOnlyList<double> bounds, IReadOnlyList<long> counts, double sum)
    {
        ArgumentNullException.ThrowIfNull(bounds);
        ArgumentNullException.ThrowIfNull(counts);
        string name = Current();
        if (_type != "histogram") throw new InvalidOperationException($"{name} is not a histogram");
        if (counts.Count != bounds.Count + 1) throw new ArgumentException("counts needs one entry per bound plus the +Inf bucket", nameof(counts));
        long cumulative = 0;
        for (int i = 0; i < counts.Count; i++)
        {
            if (i > 0 && i < bounds.Count && !(bounds[i] > bounds[i - 1])) throw new ArgumentException("bounds must ascend", nameof(bounds));
            cumulative += counts[i];
            string le = i < bounds.Count ? Format(bounds[i]) : "+Inf";
            Write(name, "_bucket", labels, le, cumulative);
        }
        Write(name, "_sum", labels, null, sum);
        Write(name, "_count", labels, null, cumulative);
    }

    /// <summary>The exposition so far.</summary>
    public override string ToString() => _sb.ToString();

    private string Current() => _family ?? throw new InvalidOperationException("declare a metric family first");

    private void Write(string name, string suffix, Labels labels, string? le, double value)
    {
        StartSample(name, suffix, labels, le);
        _sb.Append(Format(value)).Append('\n');
    }

    private void Write(string name, string suffix, Labels labels, string? le, long value)
    {
        StartSample(name, suffix, labels, le);
        _sb.Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }

    private void StartSample(string name, string suffix, Labels labels, string? le)
    {
        _sb.Append(name).Append(suffix);
        bool any = false;
        for (int i = 0; i < labels.Count; i++)
        {
            var (k, v) = labels[i];
            _sb.Append(any ? ',' : '{');
            any = true;
            AppendLabel(k, v);
        }
        if (le is not null)
        {
            _sb.Append(any ? ',' : '{');
            any = true;
            AppendLabel("le", le);
        }
        if (any) _sb.Append('}');
        _sb.Append(' ');
    }

    private void AppendLabel(string name, string value)
    {
        _sb.Append(name).Append("=\"");
        foreach (char c in value)
        {
            switch (c)
            {
                case '\\': _sb.Append("\\\\"); break;
                case '"': _sb.Append("\\\""); break;
                case '\n': _sb.Append("\\n"); break;
                default: _sb.Append(c); break;
            }
        }
        _sb.Append('"');
    }

    /// <summary>Go-parsable float text: shortest round-trip form, with the format's spellings of the specials.</summary>
    public static string Format(double value) =>
        double.IsNaN(value) ? "NaN"
        : double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>[a-zA-Z_:][a-zA-Z0-9_:]*</summary>
    public static bool IsMetricName(string name) => IsName(name, allowColon: true);

    /// <summary>[a-zA-Z_][a-zA-Z0-9_]*, and not reserved (__ prefix).</summary>
    public static bool IsLabelName(string name) => IsName(name, allowColon: false) && !name.StartsWith("__", StringComparison.Ordinal);

    private static bool IsName(string name, bool allowColon)
    {
        if (string.IsNullOrEmpty(name)) return false;
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            bool ok = c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or '_' || (allowColon && c == ':') || (i > 0 && c is >= '0' and <= '9');
            if (!ok) return false;
        }
        return true;
    }
}

/// <summary>Up to two label pairs for a sample (all vfsd needs), without an allocation per sample.</summary>
public readonly struct Labels
{
    private readonly string? _k1, _v1, _k2, _v2;

    public static Labels None => default;

    public Labels(string name, string value)
    {
        if (!PrometheusWriter.IsLabelName(name)) throw new ArgumentException($"'{name}' is not a valid label name", nameof(name));
        ArgumentNullException.ThrowIfNull(value);
        (_k1, _v1) = (name, value);
    }

    public Labels(string name1, string value1, string name2, string value2) : this(name1, value1)
    {
        if (!PrometheusWriter.IsLabelName(name2) || name2 == name1) throw new ArgumentException($"'{name2}' is not a valid label name here", nameof(name2));
        ArgumentNullException.ThrowIfNull(value2);
        (_k2, _v2) = (name2, value2);
    }

    public int Count => _k1 is null ? 0 : _k2 is null ? 1 : 2;

    public (string Name, string Value) this[int index] => index switch
    {
        0 when _k1 is not null => (_k1, _v1!),
        1 when _k2 is not null => (_k2, _v2!),
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };
}
