using System.IO.Compression;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Logging;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// <c>--log-file</c> / <c>--log-rotation-size</c> as nydusd's logger does them (nydus src/logger.rs: flexi_logger
/// Criterion::Size(N MiB), Naming::Timestamps, Cleanup::KeepCompressedFiles(10); 0 disables rotation).
/// </summary>
public sealed class RotatingFileLoggerTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("vfs-log-");

    public void Dispose() => _dir.Delete(true);

    /// <summary>Logs <paramref name="bytes"/> worth of lines, letting the writer keep up so none is dropped.</summary>
    private static void Fill(RotatingFileLoggerProvider provider, long bytes)
    {
        ILogger logger = provider.CreateLogger("test");
        string payload = new('x', 200);
        for (long written = 0, i = 0; written < bytes; i++)
        {
#pragma warning disable CA1848, CA2254 // a test drives the provider directly
            logger.LogInformation(payload + i);
#pragma warning restore CA1848, CA2254
            written += 240;
            while (provider.Pending > 1000) Thread.Sleep(1);
        }
        while (provider.Pending > 0) Thread.Sleep(1);
        Assert.Equal(0, provider.Dropped);
    }

    [Fact]
    public void Rotates_past_the_size_compresses_and_keeps_ten()
    {
        string path = Path.Combine(_dir.FullName, "nydusd.log");
        using (var provider = new RotatingFileLoggerProvider(path, LogLevel.Information, 1))
        {
            Fill(provider, 13L << 20);
        }
        var rotated = Directory.GetFiles(_dir.FullName, "nydusd_r*.log.gz").Order(StringComparer.Ordinal).ToList();
        Assert.Equal(RotatingFileLoggerProvider.KeptRotatedFiles, rotated.Count);
        Assert.All(rotated, f => Assert.Matches(@"nydusd_r\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(\.restart-\d{4})?\.log\.gz$", f));
        Assert.Empty(Directory.GetFiles(_dir.FullName, "nydusd_r*.log")); // every rotated file was compressed
        foreach (string f in rotated)
        {
            using var gz = new GZipStream(File.OpenRead(f), CompressionMode.Decompress);
            using var text = new MemoryStream();
            gz.CopyTo(text);
            // Rotated once the file exceeded 1 MiB: just over it, by less than one line.
            Assert.InRange(text.Length, (1L << 20) + 1, (1L << 20) + 400);
            Assert.StartsWith("[", System.Text.Encoding.UTF8.GetString(text.GetBuffer(), 0, 1), StringComparison.Ordinal);
        }
        Assert.InRange(new FileInfo(path).Length, 1, 1L << 20); // the live file stays at the given path
        Assert.Contains(" INFO xxxx", File.ReadAllText(path), StringComparison.Ordinal);
    }

    [Fact]
    public void Size_zero_never_rotates_and_appends()
    {
        string path = Path.Combine(_dir.FullName, "vfsd.log");
        File.WriteAllText(path, "earlier run\n");
        using (var provider = new RotatingFileLoggerProvider(path, LogLevel.Information, 0))
        {
            Fill(provider, 3L << 20);
        }
        Assert.Single(Directory.GetFiles(_dir.FullName));
        Assert.StartsWith("earlier run\n", File.ReadAllText(path), StringComparison.Ordinal);
        Assert.True(new FileInfo(path).Length > 2L << 20, "3 MiB of lines, never rotated");
    }

    [Fact]
    public void A_name_without_extension_gets_log_and_levels_are_filtered()
    {
        string path = Path.Combine(_dir.FullName, "daemon");
        using (var provider = new RotatingFileLoggerProvider(path, LogLevel.Warning, 0))
        {
            Assert.Equal(path + ".log", provider.Path);
            ILogger logger = provider.CreateLogger("test");
#pragma warning disable CA1848
            logger.LogInformation("not written");
            logger.LogWarning("written");
#pragma warning restore CA1848
        }
        string text = File.ReadAllText(path + ".log");
        Assert.DoesNotContain("not written", text, StringComparison.Ordinal);
        Assert.Matches(@"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\] WARN written\n$", text);
    }
}
