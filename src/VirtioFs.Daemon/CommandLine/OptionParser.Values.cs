using System.Globalization;
using Microsoft.Extensions.Logging;
using VirtioFs.Daemon.Sandbox;
using VirtioFs.Oci;

namespace VirtioFs.Daemon.CommandLine;

// Parsers of single option values and of the legacy -o list (OptionParser.cs Parse).
public static partial class OptionParser
{
    /// <summary>
    /// nydusd's one-letter options (clap: <c>-M value</c>, <c>-M=value</c> or <c>-Mvalue</c>), mapped to their long names;
    /// only in <c>vfsd fuse</c>, where they cannot be mistaken for a virtiofsd option.
    /// </summary>
    private static bool NydusShortOption(string arg, out string name, out string? attached)
    {
        name = arg;
        attached = null;
        if (arg.Length < 2 || arg[0] != '-' || arg[1] == '-') return false;
        string? longName = arg[1] switch
        {
            'M' => "--mountpoint",
            'A' => "--apisock",
            'C' => "--config",
            'B' => "--bootstrap",
            'D' => "--localfs-dir",
            'm' => "--virtual-mountpoint",
            'l' => "--log-level",
            'L' => "--log-file",
            _ => null,
        };
        if (longName is null) return false;
        name = longName;
        if (arg.Length > 2) attached = arg[2] == '=' ? arg[3..] : arg[2..];
        return true;
    }

    /// <summary>nydusd's validate_threads_configuration: 1 to 1024.</summary>
    private static int ParseThreads(string name, string value)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n is < 1 or > 1024)
        {
            throw new UsageException($"option {name}: invalid thread number '{value}', valid range: [1-1024]");
        }
        return n;
    }

    /// <summary>MiB, 0 disabling rotation (nydusd multiplies by 1024 * 1024, so the product must fit 64 bits).</summary>
    private static ulong ParseRotationSize(string value)
    {
        const ulong Max = ulong.MaxValue >> 20;
        if (!ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n) || n > Max)
        {
            throw new UsageException($"option --log-rotation-size: '{value}' is not a size in MiB from 0 to {Max}");
        }
        return n;
    }

    /// <summary>virtiofsd --xattrmap rules (doc/xattr-mapping.md); a bad map is refused with the parser's reason.</summary>
    private static VirtioFs.Passthrough.XattrMap ParseXattrMap(string value) =>
        VirtioFs.Passthrough.XattrMap.TryParse(value, out VirtioFs.Passthrough.XattrMap? map, out string error) ? map : throw new UsageException($"--xattrmap: {error}");

    private static SandboxMode ParseSandbox(string value) => value switch
    {
        "namespace" => SandboxMode.Namespace,
        "chroot" => SandboxMode.Chroot,
        "none" => SandboxMode.None,
        _ => throw new UsageException($"--sandbox '{value}' is not one of namespace, chroot, none"),
    };

    private static SeccompAction ParseSeccomp(string value) => value switch
    {
        "kill" => SeccompAction.Kill,
        "log" => SeccompAction.Log,
        "trap" => SeccompAction.Trap,
        "none" => SeccompAction.None,
        _ => throw new UsageException($"--seccomp '{value}' is not one of kill, log, trap, none"),
    };

    private static OciReference ParseImage(string value) =>
        OciReference.TryParse(value, out OciReference r, out string error) ? r : throw new UsageException($"--image '{value}': {error}");

    private static OciPlatform ParsePlatform(string value)
    {
        try
        {
            return OciPlatform.Parse(value);
        }
        catch (FormatException e)
        {
            throw new UsageException($"--platform: {e.Message}");
        }
    }

    private static VerifyOption ParseVerify(string value) => value switch
    {
        "fetch" => VerifyOption.Fetch,
        "always" => VerifyOption.Always,
        _ => throw new UsageException($"--verify '{value}' is not one of fetch, always"),
    };

    private static byte[] ParseDigest(string value)
    {
        if (value.Length != 64 || !value.All(char.IsAsciiHexDigit))
        {
            throw new UsageException("--root-digest must be 64 hex digits (a 32-byte merkle root)");
        }
        return Convert.FromHexString(value);
    }

    /// <summary>The C virtiofsd's comma-separated <c>-o</c> options (its <c>fuse_opt</c> table).</summary>
    private static void ApplyLegacy(DaemonOptions options, string list)
    {
        foreach (string raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = raw.IndexOf('=', StringComparison.Ordinal);
            string key = eq < 0 ? raw : raw[..eq];
            string? value = eq < 0 ? null : raw[(eq + 1)..];
            string Need() => value ?? throw new UsageException($"-o {key} needs a value");
            switch (key)
            {
                case "source": options.SharedDir = NonEmpty("-o source", Need()); break;
                case "cache": options.Cache = ParseCache(Need()); break;
                case "log_level": options.LogLevel = ParseLogLevel(Need()); break;
                case "xattr": options.Xattr = true; break;
                case "no_xattr": options.Xattr = false; break;
                case "announce_submounts": options.AnnounceSubmounts = true; break;
                case "readonly" or "ro": options.ReadOnly = true; break;
                case "writeback": options.Writeback = true; break;
                case "no_writeback": options.Writeback = false; break;
                case "readdirplus": options.Readdirplus = true; break;
                case "no_readdirplus": options.Readdirplus = false; break;
                case "posix_lock": options.PosixLock = true; break;
                case "no_posix_lock": options.PosixLock = false; break;
                case "flock": options.Flock = true; break;
                case "no_flock": options.Flock = false; break;
                // virtiofsd's parse_compat spells the log level "loglevel" (debug, info, warn, err).
                case "loglevel": options.LogLevel = ParseLogLevel(Need()); break;
                case "rw": options.ReadOnly = false; break;
                case "allow_direct_io": options.AllowDirectIo = true; break;
                case "no_allow_direct_io": options.AllowDirectIo = false; break;
                case "max_idle_threads":
                    throw new UsageException("-o max_idle_threads (C virtiofsd) is not supported: use --thread-pool-size N");
                case "timeout":
                    throw new UsageException("-o timeout (C virtiofsd) is not supported: the timeouts follow --cache never|auto|metadata|always");
                case "xattrmap": options.XattrMap = ParseXattrMap(Need()); break;
                case "posix_acl": options.PosixAcl = true; break;
                case "no_posix_acl": options.PosixAcl = false; break;
                case "security_label": options.SecurityLabel = true; break;
                case "no_security_label": options.SecurityLabel = false; break;
                case "killpriv_v2": options.KillPrivV2 = true; break;
                case "no_killpriv_v2": options.KillPrivV2 = false; break;
                case "sandbox": options.Sandbox = ParseSandbox(Need()); break;
                case "modcaps":
                    options.ModCaps = Capabilities.ParseModCaps(Need());
                    break;
                default: throw new UsageException($"unknown -o option '{key}'");
            }
        }
    }

    /// <summary>virtiofsd <c>--inode-file-handles=never|prefer|mandatory</c> (<c>fallback</c> = prefer). vfsd references
    /// every inode by an O_PATH fd, which is what <c>never</c> asks for; the others are refused rather than ignored.</summary>
    private static void ParseInodeFileHandles(string value)
    {
        switch (value)
        {
            case "never":
                return;
            case "prefer" or "fallback" or "mandatory":
                throw new UsageException($"--inode-file-handles={value} is not supported: vfsd references inodes by O_PATH fds only (use never)");
            default:
                throw new UsageException($"--inode-file-handles '{value}' is not one of never, prefer, mandatory");
        }
    }

    private static string NonEmpty(string name, string value) =>
        value.Length == 0 ? throw new UsageException($"option {name} needs a non-empty value") : value;

    private static int ParseInt(string name, string value, int min, int max)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < min || n > max)
        {
            throw new UsageException($"option {name}: '{value}' is not a number from {min} to {max}");
        }
        return n;
    }

    private static string ParseTag(string value)
    {
        // virtio spec 1.2, 5.11.4: tag is UTF-8, at most 36 bytes, NUL-padded (not terminated when 36 bytes long).
        int bytes = System.Text.Encoding.UTF8.GetByteCount(value);
        if (bytes is 0 or > 36 || value.Contains('\0', StringComparison.Ordinal))
        {
            throw new UsageException($"--tag must be 1 to 36 bytes of UTF-8, got {bytes}");
        }
        return value;
    }

    public static CacheMode ParseCache(string value) => value switch
    {
        "never" or "none" => CacheMode.Never,
        "auto" => CacheMode.Auto,
        "metadata" => CacheMode.Metadata,
        "always" => CacheMode.Always,
        _ => throw new UsageException($"cache mode '{value}' is not one of never, auto, metadata, always"),
    };

    private static LogLevel ParseLogLevel(string value) => value switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "info" => LogLevel.Information,
        "warn" or "warning" => LogLevel.Warning,
        "error" or "err" => LogLevel.Error,
        "off" => LogLevel.None,
        _ => throw new UsageException($"log level '{value}' is not one of error, warn, info, debug, trace, off"),
    };
}
