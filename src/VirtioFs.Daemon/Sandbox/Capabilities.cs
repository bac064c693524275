using VirtioFs.Daemon.CommandLine;

namespace VirtioFs.Daemon.Sandbox;

/// <summary>
/// Linux capabilities by name (capability(7), linux/capability.h numbering) and the sets vfsd keeps, as Rust virtiofsd
/// 1.13 does (src/main.rs drop_capabilities, parse_modcaps).
/// </summary>
public static class Capabilities
{
    private static readonly string[] Names =
    [
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE",
    ];

    /// <summary>What a passthrough needs (virtiofsd's default list): chown and the fsuid/fsgid switch to the guest's
    /// credentials (CHOWN, SETUID, SETGID), acting on files the daemon does not own (DAC_OVERRIDE, FOWNER), keeping
    /// set-id bits the guest asked for (FSETID), device nodes (MKNOD) and security.capability xattrs (SETFCAP).</summary>
    public static readonly string[] Passthrough = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "MKNOD", "SETFCAP"];

    /// <summary>An image is read-only and served from files the daemon opened as their owner: no capability at all.</summary>
    public static readonly string[] Image = [];

    /// <summary>The capability number of NAME (with or without CAP_, any case); -1 when there is none.</summary>
    public static int Number(string name)
    {
        string n = name.ToUpperInvariant();
        if (n.StartsWith("CAP_", StringComparison.Ordinal)) n = n[4..];
        return Array.IndexOf(Names, n);
    }

    public static string Name(int cap) => (uint)cap < (uint)Names.Length ? Names[cap] : cap.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>virtiofsd's <c>--modcaps=+sys_admin:-chown</c>: ':'-separated, each '+' or '-' and a capability name.</summary>
    public static IReadOnlyList<(int Cap, bool Add)> ParseModCaps(string value)
    {
        var result = new List<(int, bool)>();
        foreach (string item in value.Split(':'))
        {
            if (item.Length < 2 || item[0] is not ('+' or '-'))
            {
                throw new OptionParser.UsageException($"--modcaps '{item}': expected +CAP or -CAP, ':'-separated");
            }
            int cap = Number(item[1..]);
            if (cap < 0)
            {
                throw new OptionParser.UsageException($"--modcaps: unknown capability '{item[1..]}'");
            }
            result.Add((cap, item[0] == '+'));
        }
        return result;
    }

    /// <summary>The bit mask kept: <paramref name="defaults"/> with the --modcaps changes applied in order.</summary>
    public static ulong Mask(IEnumerable<string> defaults, IReadOnlyList<(int Cap, bool Add)> modCaps)
    {
        ulong mask = 0;
        foreach (string name in defaults) mask |= 1UL << Number(name);
        foreach ((int cap, bool add) in modCaps)
        {
            mask = add ? mask | (1UL << cap) : mask & ~(1UL << cap);
        }
        return mask;
    }

    /// <summary>"CHOWN,DAC_OVERRIDE,..." for the log.</summary>
    public static string Describe(ulong mask)
    {
        var names = new List<string>();
        for (int cap = 0; cap < 64; cap++)
        {
            if ((mask & (1UL << cap)) != 0) names.Add(Name(cap));
        }
        return names.Count == 0 ? "(none)" : string.Join(',', names);
    }
}
