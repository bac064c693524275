using System.Text.RegularExpressions;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;

namespace VirtioFs.Integration.Tests;

/// <summary>ARCHITECTURE.md walks the data paths as <c>file:function</c> hops; a hop that names a file or a member that no
/// longer exists would send the next engineer looking for nothing, so every one is checked against src/.</summary>
public sealed partial class ArchitectureDocTests
{
    [GeneratedRegex(@"`(?:[\w.]+/)*(?<file>[A-Za-z]+(?:\.[A-Za-z]+)*\.cs):(?<member>[A-Za-z]+(?:\.[A-Za-z]+)?)(?:`|/)")]
    private static partial Regex Hop();

    [Fact]
    public void Every_file_and_member_the_architecture_document_names_exists()
    {
        string doc = File.ReadAllText(Path.Combine(Repo.Root, "ARCHITECTURE.md"));
        var sources = Directory.EnumerateFiles(Path.Combine(Repo.Root, "src"), "*.cs", SearchOption.AllDirectories)
            .Where(p => !p.Contains("/obj/", StringComparison.Ordinal) && !p.Contains("/bin/", StringComparison.Ordinal))
            .ToLookup(Path.GetFileName, StringComparer.Ordinal);
        var missing = new List<string>();
        int hops = 0;
        foreach (Match m in Hop().Matches(doc))
        {
            hops++;
            string file = m.Groups["file"].Value;
            string member = m.Groups["member"].Value.Split('.')[^1];
            if (!sources.Contains(file))
            {
                missing.Add($"{file} (no such file under src/)");
                continue;
            }
            // A method, constructor-like type or property: the name followed by '(' or '<' or declared as a type.
            var declared = new Regex($@"(\b{member}\s*[(<])|(\b(class|struct|record|interface)\s+{member}\b)");
            if (!sources[file].Any(p => declared.IsMatch(File.ReadAllText(p))))
            {
                missing.Add($"{file}:{member}");
            }
        }
        Assert.True(hops >= 40, $"only {hops} hops found: the pattern no longer matches the document");
        Assert.True(missing.Count == 0, "ARCHITECTURE.md names what src/ does not have: " + string.Join(", ", missing));
    }
}
