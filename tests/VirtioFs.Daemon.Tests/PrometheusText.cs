using System.Globalization;
using System.Text;

namespace VirtioFs.Daemon.Tests;

/// <summary>One parsed sample line.</summary>
internal sealed record PromSample(string Name, IReadOnlyDictionary<string, string> Labels, double Value)
{
    public string? Label(string name) => Labels.TryGetValue(name, out string? v) ? v : null;
}

/// <summary>
/// A strict reader of the Prometheus text format 0.0.4, written from the format's description, that the tests use to
/// check what vfsd emits: it parses every line and throws <see cref="FormatException"/> on anything a scraper would
/// reject or misread: a sample whose family has no TYPE, a family split into two groups or declared twice, a bad
/// metric or label name, a bad escape, a duplicate series, a histogram whose buckets are not cumulative, do not ascend,
/// do not end with le="+Inf", or whose +Inf bucket differs from _count.
/// </summary>
internal static class PrometheusText
{
    public static List<PromSample> Parse(string text)
    {
        if (text.Length > 0 && !text.EndsWith('\n')) throw new FormatException("exposition must end with a newline");
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        var helps = new HashSet<string>(StringComparer.Ordinal);
        var finished = new HashSet<string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var samples = new List<PromSample>();
        string? current = null;
        int lineNo = 0;
        foreach (string line in text.Split('\n'))
        {
            lineNo++;
            if (line.Length == 0) continue;
            try
            {
                if (line.StartsWith('#'))
                {
                    string[] parts = line.Split(' ', 4);
                    if (parts.Length >= 3 && parts[1] is "HELP" or "TYPE")
                    {
                        string name = parts[2];
                        CheckMetricName(name);
                        Enter(name);
                        if (parts[1] == "TYPE")
                        {
                            if (parts.Length != 4 || parts[3] is not ("counter" or "gauge" or "histogram" or "summary" or "untyped"))
                                throw new FormatException("bad TYPE line");
                            if (!types.TryAdd(name, parts[3])) throw new FormatException($"second TYPE for {name}");
                            if (samples.Any(s => FamilyOf(s.Name, types) == name)) throw new FormatException($"TYPE for {name} after its samples");
                        }
                        else
                        {
                            if (!helps.Add(name)) throw new FormatException($"second HELP for {name}");
                            if (parts.Length == 4) UnescapeHelp(parts[3]);
                        }
                    }
                    continue; // other comments are allowed
                }
                PromSample s = ParseSample(line);
                string family = FamilyOf(s.Name, types) ?? throw new FormatException($"sample {s.Name} has no TYPE");
                Enter(family);
                string key = s.Name + "|" + string.Join(",", s.Labels.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + kv.Value));
                if (!seen.Add(key)) throw new FormatException($"duplicate series {key}");
                samples.Add(s);
            }
            catch (FormatException e)
            {
                throw new FormatException($"line {lineNo}: {e.Message}: {line}");
            }
        }
        foreach (var (name, type) in types)
        {
            if (type == "histogram") CheckHistogram(name, samples);
        }
        return samples;

        void Enter(string family)
        {
            if (current == family) return;
            if (current is not null) finished.Add(current);
            if (finished.Contains(family)) throw new FormatException($"family {family} is not contiguous");
            current = family;
        }
    }

    /// <summary>The family a sample belongs to: its own name, or a histogram/summary's name for the suffixed series.</summary>
    private static string? FamilyOf(string sample, Dictionary<string, string> types)
    {
        if (types.TryGetValue(sample, out string? t) && t is not ("histogram" or "summary")) return sample;
        foreach (string suffix in new[] { "_bucket", "_sum", "_count" })
        {
            if (sample.EndsWith(suffix, StringComparison.Ordinal)
                && types.TryGetValue(sample[..^suffix.Length], out string? ht)
                && (ht == "histogram" || (ht == "summary" && suffix != "_bucket")))
                return sample[..^suffix.Length];
        }
        return null;
    }

    private static void CheckHistogram(string name, List<PromSample> samples)
    {
        var series = samples.Where(s => s.Name == name + "_bucket")
            .GroupBy(s => string.Join(",", s.Labels.Where(kv => kv.Key != "le").OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + kv.Value)));
        foreach (var g in series)
        {
            var buckets = g.ToList();
            double prevLe = double.NegativeInfinity, prevCount = 0;
            foreach (PromSample b in buckets)
            {
                double le = ParseValue(b.Label("le") ?? throw new FormatException($"{name}_bucket without le"));
                if (!(le > prevLe)) throw new FormatException($"{name} buckets do not ascend ({le} after {prevLe})");
                if (b.Value < prevCount) throw new FormatException($"{name} buckets are not cumulative");
                prevLe = le;
                prevCount = b.Value;
            }
            if (!double.IsPositiveInfinity(prevLe)) throw new FormatException($"{name} {{{g.Key}}} does not end with le=\"+Inf\"");
            PromSample count = samples.SingleOrDefault(s => s.Name == name + "_count" && SameBase(s, g.Key))
                ?? throw new FormatException($"{name} {{{g.Key}}} has no _count");
            if (samples.SingleOrDefault(s => s.Name == name + "_sum" && SameBase(s, g.Key)) is null)
                throw new FormatException($"{name} {{{g.Key}}} has no _sum");
            if (count.Value != prevCount) throw new FormatException($"{name} +Inf bucket {prevCount} != _count {count.Value}");
        }
    }

    private static bool SameBase(PromSample s, string key) =>
        string.Join(",", s.Labels.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + kv.Value)) == key;

    private static PromSample ParseSample(string line)
    {
        int i = 0;
        while (i < line.Length && line[i] != '{' && line[i] != ' ') i++;
        string name = line[..i];
        CheckMetricName(name);
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (i < line.Length && line[i] == '{')
        {
            i++;
            while (true)
            {
                if (i < line.Length && line[i] == '}') { i++; break; }
                int eq = line.IndexOf('=', i);
                if (eq < 0) throw new FormatException("label without '='");
                string label = line[i..eq];
                if (label.Length == 0 || !IsName(label, false) || label.StartsWith("__", StringComparison.Ordinal))
                    throw new FormatException($"bad label name '{label}'");
                i = eq + 1;
                if (i >= line.Length || line[i] != '"') throw new FormatException("label value not quoted");
                i++;
                var v = new StringBuilder();
                while (true)
                {
                    if (i >= line.Length) throw new FormatException("unterminated label value");
                    char c = line[i++];
                    if (c == '"') break;
                    if (c == '\\')
                    {
                        if (i >= line.Length) throw new FormatException("dangling backslash");
                        char e = line[i++];
                        v.Append(e switch { '\\' => '\\', '"' => '"', 'n' => '\n', _ => throw new FormatException($"bad escape \\{e}") });
                    }
                    else v.Append(c);
                }
                if (!labels.TryAdd(label, v.ToString())) throw new FormatException($"label {label} twice");
                if (i < line.Length && line[i] == ',') i++;
                else if (i >= line.Length || line[i] != '}') throw new FormatException("expected ',' or '}'");
            }
        }
        if (i >= line.Length || line[i] != ' ') throw new FormatException("expected a space before the value");
        string[] rest = line[(i + 1)..].Split(' ');
        if (rest.Length is < 1 or > 2) throw new FormatException("expected a value and an optional timestamp");
        double value = ParseValue(rest[0]);
        if (rest.Length == 2 && !long.TryParse(rest[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
            throw new FormatException("bad timestamp");
        return new PromSample(name, labels, value);
    }

    private static double ParseValue(string s) => s switch
    {
        "+Inf" => double.PositiveInfinity,
        "-Inf" => double.NegativeInfinity,
        "NaN" => double.NaN,
        _ when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
        _ => throw new FormatException($"bad value '{s}'"),
    };

    private static void UnescapeHelp(string help)
    {
        for (int i = 0; i < help.Length; i++)
        {
            if (help[i] != '\\') continue;
            if (i + 1 >= help.Length || help[i + 1] is not ('\\' or 'n')) throw new FormatException("bad escape in HELP");
            i++;
        }
    }

    private static void CheckMetricName(string name)
    {
        if (!IsName(name, true)) throw new FormatException($"bad metric name '{name}'");
    }

    private static bool IsName(string name, bool colon)
    {
        if (name.Length == 0) return false;
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (!(char.IsAsciiLetter(c) || c == '_' || (colon && c == ':') || (i > 0 && char.IsAsciiDigit(c)))) return false;
        }
        return true;
    }

    /// <summary>The value of the one sample named <paramref name="name"/> whose labels include <paramref name="label"/>=<paramref name="value"/>.</summary>
    public static double Value(this List<PromSample> samples, string name, string? label = null, string? value = null) =>
        samples.Single(s => s.Name == name && (label is null || s.Label(label) == value)).Value;
}
