using VirtioFs.Rafs;

namespace VirtioFs.ImageTool.Tests;

/// <summary>Runs vfs-image commands in-process as Main does (usage errors exit 2, bad input 1) and keeps what they
/// printed plus the error's one line, so tests can check both.</summary>
internal static class Cli
{
    public static (int Code, string Out) Run(params string[] args)
    {
        var w = new StringWriter();
        try { return (Program.Run(args, w), w.ToString()); }
        catch (Program.UsageException e) { return (2, w + e.Message); }
        catch (Exception e) when (e is RafsFormatException or IOException or InvalidDataException) { return (1, w + e.Message); }
    }

    /// <summary>A fresh directory under the temp directory.</summary>
    public static string Temp(string tag)
    {
        var d = Path.Combine(Path.GetTempPath(), $"vfs-{tag}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }
}
