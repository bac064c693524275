using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Xunit;

namespace VirtioFs.Daemon.Tests;

/// <summary>
/// Proves that every C# wire struct mirroring a Linux UAPI struct has the kernel's size and field offsets: it describes
/// the C# layouts (by reflection) as a C header and compiles native-shim/wire_checks.c against the real headers, where
/// each size and offset is a <c>_Static_assert</c>. A C# struct is matched to a C one by name (FuseInHeader is
/// <c>struct fuse_in_header</c>) and its public fields carry the C field names.
/// </summary>
public partial class WireLayoutTests
{
    private static readonly string[] Headers =
        ["/usr/include/linux/fuse.h", "/usr/include/linux/virtio_ring.h", "/usr/include/linux/vhost_types.h", "/usr/include/linux/virtio_fs.h"];

    private static readonly Assembly[] WireAssemblies =
    [
        typeof(VirtioFs.Fuse.FuseServer).Assembly,
        typeof(VirtioFs.Virtio.SplitQueue).Assembly,
        typeof(VirtioFs.VhostUser.IVhostUserBackend).Assembly,
    ];

    [Fact]
    public void Wire_structs_match_the_kernel_headers()
    {
        var kernelStructs = new HashSet<string>(StringComparer.Ordinal);
        foreach (string header in Headers)
        {
            foreach (Match m in StructDefinition().Matches(File.ReadAllText(header)))
            {
                kernelStructs.Add(m.Groups[1].Value);
            }
        }

        var checks = new StringBuilder("#define WIRE_CHECKS \\\n");
        var matched = new List<string>();
        foreach (Type type in WireAssemblies.SelectMany(a => a.GetTypes()).Where(t => t.IsValueType && !t.IsEnum && !t.IsGenericType))
        {
            string cName = SnakeCase(type.Name);
            if (!kernelStructs.Contains(cName))
            {
                continue;
            }
            matched.Add(cName);
            checks.Append($"  WIRE_SIZE({cName}, {Marshal.SizeOf(type)}) \\\n");
            foreach (FieldInfo field in type.GetFields(BindingFlags.Instance | BindingFlags.Public))
            {
                int offset = (int)Marshal.OffsetOf(type, field.Name);
                int size = Marshal.SizeOf(field.FieldType);
                checks.Append($"  WIRE_FIELD({cName}, {field.Name}, {offset}, {size}) \\\n");
            }
        }
        checks.Append('\n');

        // The structs the transports cannot work without must be among those checked.
        Assert.Contains("fuse_in_header", matched);
        Assert.Contains("fuse_out_header", matched);
        Assert.Contains("fuse_init_out", matched);
        Assert.Contains("fuse_attr", matched);
        Assert.Contains("fuse_entry_out", matched);
        Assert.Contains("vring_desc", matched);
        Assert.Contains("vring_used_elem", matched);

        string dir = Directory.CreateTempSubdirectory("wire-layout-").FullName;
        try
        {
            string layout = Path.Combine(dir, "wire_layout.h");
            File.WriteAllText(layout, checks.ToString());
            var (exit, output) = Run("make", "-s", "-C", Path.Combine(RepoRoot(), "native-shim"), "check", "LAYOUT=" + layout);
            Assert.True(exit == 0, $"wire structs differ from the kernel headers ({matched.Count} checked):\n{output}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("FuseInHeader", "fuse_in_header")]
    [InlineData("VringUsedElem", "vring_used_elem")]
    [InlineData("FuseSetattrIn", "fuse_setattr_in")]
    public void Type_names_map_to_c_names(string type, string c) => Assert.Equal(c, SnakeCase(type));

    private static string SnakeCase(string name) => CapitalBoundary().Replace(name, "_$1").ToLowerInvariant();

    private static (int Exit, string Output) Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }
        using var p = Process.Start(info)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "VirtioFs.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root not found");
    }

    [GeneratedRegex(@"^struct\s+(\w+)\s*\{", RegexOptions.Multiline)]
    private static partial Regex StructDefinition();

    [GeneratedRegex(@"(?<=[a-z0-9])([A-Z])")]
    private static partial Regex CapitalBoundary();
}
