using Microsoft.Extensions.Logging;

namespace VirtioFs.Daemon.CommandLine;

/// <summary>virtiofsd's cache modes (virtiofsd README "--cache"): how long the guest may trust what it has seen.</summary>
public enum CacheMode
{
    /// <summary>No caching: attribute and entry timeouts 0, direct I/O.</summary>
    Never,
    /// <summary>1 second timeouts; page cache dropped on open.</summary>
    Auto,
    /// <summary>Metadata cached for a day, data not kept across opens.</summary>
    Metadata,
    /// <summary>Everything cached for a day; the host directory must not change behind the guest.</summary>
    Always,
}

/// <summary>What the daemon was asked to do, after parsing; no I/O happens while these are built.</summary>
public sealed class DaemonOptions
{
    public string? SocketPath { get; set; }
    /// <summary>An inherited, already listening vhost-user socket (Kata's Go runtime passes <c>--fd=3</c>).</summary>
    public int? ListenFd { get; set; }
    public string? SharedDir { get; set; }
    public string? Tag { get; set; }
    public CacheMode Cache { get; set; } = CacheMode.Auto;
    public int ThreadPoolSize { get; set; }
    public bool AnnounceSubmounts { get; set; }
    public bool Xattr { get; set; }
    public bool ReadOnly { get; set; }
    public bool Writeback { get; set; }
    public bool Readdirplus { get; set; } = true;
    public bool PosixLock { get; set; } = true;
    public bool Flock { get; set; }
    public bool Syslog { get; set; }
    public LogLevel LogLevel { get; set; } = LogLevel.Information;
    public int RequestQueues { get; set; } = 1;
    public ulong? RlimitNofile { get; set; }
    public bool PrintCapabilities { get; set; }
    public bool ShowHelp { get; set; }
    public bool ShowVersion { get; set; }
}
