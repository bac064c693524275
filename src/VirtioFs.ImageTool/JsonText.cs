using System.Collections;
using System.Text;
using System.Text.Json;

namespace VirtioFs.ImageTool;

/// <summary>
/// Writes the tool's <c>--json</c> output (dictionaries of numbers, strings, booleans, nested dictionaries and lists)
/// with <see cref="Utf8JsonWriter"/>. vfs-image is published NativeAOT, where reflection-based
/// <c>JsonSerializer.Serialize</c> is unavailable; these shapes are simple enough not to need a generated context.
/// </summary>
internal static class JsonText
{
    public static string Serialize(object? value)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
        {
            Write(writer, value);
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static void Write(Utf8JsonWriter w, object? value)
    {
        switch (value)
        {
            case null: w.WriteNullValue(); break;
            case string s: w.WriteStringValue(s); break;
            case bool b: w.WriteBooleanValue(b); break;
            case int i: w.WriteNumberValue(i); break;
            case uint u: w.WriteNumberValue(u); break;
            case long l: w.WriteNumberValue(l); break;
            case ulong ul: w.WriteNumberValue(ul); break;
            case double d: w.WriteNumberValue(d); break;
            case IDictionary dict:
                w.WriteStartObject();
                foreach (DictionaryEntry e in dict)
                {
                    w.WritePropertyName(e.Key.ToString()!);
                    Write(w, e.Value);
                }
                w.WriteEndObject();
                break;
            case IEnumerable list:
                w.WriteStartArray();
                foreach (object? item in list)
                {
                    Write(w, item);
                }
                w.WriteEndArray();
                break;
            default: throw new NotSupportedException($"no JSON form for {value.GetType().Name}");
        }
    }
}
