using System.Diagnostics;
using System.Text.RegularExpressions;
using VirtioFs.Fuse;
using VirtioFs.Rafs.Reader;
using VirtioFs.RafsFs.Dependencies;
using Xunit;

namespace VirtioFs.RafsFs.Tests;

/// <summary>
/// Fetching a program's shared libraries when it is first read. The authorities are binutils' readelf (what the ELF
/// file names) and glibc's ldd (which files the loader then opens): the parser is checked against readelf on the host's
/// own programs and libraries, and the prefetch against ldd's closure of apt-get in an image that lays the files out as
/// Debian does (merged /usr: /lib is a link to usr/lib; the loader reached through /lib64).
/// </summary>
public sealed partial class DependencyPrefetchTests
{
    private static readonly FuseContext Root = new(0, 0, 1, 1);

    private static FileReader Reader(byte[] bytes) => (offset, destination) =>
    {
        if (offset >= (ulong)bytes.Length) return 0;
        int n = (int)Math.Min((ulong)destination.Length, (ulong)bytes.Length - offset);
        bytes.AsSpan((int)offset, n).CopyTo(destination);
        return n;
    };

    private static string Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["LC_ALL"] = "C";
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return output;
    }

    /// <summary>Runs gcc in <paramref name="work"/>; a failed build fails the test with gcc's message.</summary>
    private static void Gcc(string work, params string[] args)
    {
        var psi = new ProcessStartInfo("/usr/bin/gcc") { WorkingDirectory = work, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, err);
    }

    /// <summary>What exec does first: opens the file at an image path and reads its first <paramref name="length"/>
    /// bytes; then waits until the library prefetch that read may have started is done. Returns the node id.</summary>
    private static unsafe ulong ReadHead(RafsMount m, string path, int length, out ulong handle)
    {
        var fs = m.FileSystem;
        ulong node = FuseConstants.RootId;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            Assert.Equal(0, fs.Lookup(Root, node, System.Text.Encoding.UTF8.GetBytes(part), out var e));
            node = e.NodeId;
        }
        Assert.Equal(0, fs.Open(Root, node, 0, 0, out var o));
        handle = o.Handle;
        var buf = new byte[length];
        fixed (byte* p = buf)
        {
            Assert.Equal(0, fs.Read(Root, node, o.Handle, 0, [new IoSegment(p, buf.Length)], 0, out int n));
            Assert.Equal(buf.Length, n);
        }
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (fs.Dependencies!.Running > 0 && DateTime.UtcNow < deadline) Thread.Sleep(10);
        Assert.Equal(0, fs.Dependencies.Running);
        return node;
    }

    /// <summary>Whether the part of a file the library prefetch fetches ahead is in the cache.</summary>
    private static bool Cached(RafsMount m, string path)
    {
        var chunks = new List<RafsChunk>();
        Assert.Equal(0, m.Image.GetChunks(ImagePaths.Resolve(m.Image, path)!.Value, chunks));
        return chunks.Where(c => c.FileOffset < DependencyPrefetcher.MaxBytesPerFile).All(c => m.Cache.IsCached(c));
    }

    [GeneratedRegex(@"\(NEEDED\)\s+Shared library: \[(.+)\]")]
    private static partial Regex NeededLine();

    [GeneratedRegex(@"\(RUNPATH\)\s+Library runpath: \[(.+)\]")]
    private static partial Regex RunpathLine();

    [GeneratedRegex(@"\(RPATH\)\s+Library rpath: \[(.+)\]")]
    private static partial Regex RpathLine();

    [GeneratedRegex(@"Requesting program interpreter: (.+)\]")]
    private static partial Regex InterpreterLine();

    [SkippableFact]
    public void Interpreter_needed_libraries_and_runpath_match_readelf_on_the_hosts_programs_and_libraries()
    {
        Skip.IfNot(File.Exists("/usr/bin/readelf"), "readelf missing (binutils; bash tests/setup.sh installs it)");
        var files = Directory.EnumerateFiles("/usr/bin").Concat(Directory.EnumerateFiles("/usr/lib/x86_64-linux-gnu"))
            .Where(f => !Directory.Exists(f) && new FileInfo(f) is { LinkTarget: null, Length: > 64 and < 64 << 20 })
            .Order(StringComparer.Ordinal).ToList();
        int checkedFiles = 0, withNeeded = 0, withRunpath = 0;
        foreach (var f in files)
        {
            byte[] bytes = File.ReadAllBytes(f);
            if (!bytes.AsSpan(0, 4).SequenceEqual("\u007fELF"u8) || bytes[4] != 2) continue;
            var parsed = ElfDependencies.Read(Reader(bytes));
            string dynamic = Run("/usr/bin/readelf", "-dW", f);
            string headers = Run("/usr/bin/readelf", "-lW", f);
            var needed = NeededLine().Matches(dynamic).Select(m => m.Groups[1].Value).ToList();
            // ld.so takes DT_RUNPATH over DT_RPATH.
            var paths = RunpathLine().Matches(dynamic).Select(m => m.Groups[1].Value).ToList();
            if (paths.Count == 0) paths = RpathLine().Matches(dynamic).Select(m => m.Groups[1].Value).ToList();
            string? interp = InterpreterLine().Match(headers) is { Success: true } m ? m.Groups[1].Value : null;
            if (needed.Count == 0 && interp is null)
            {
                Assert.True(parsed is null || (parsed.Needed.Count == 0 && parsed.Interpreter is null), f);
                continue;
            }
            Assert.NotNull(parsed);
            Assert.Equal(needed, parsed!.Needed);
            Assert.Equal(interp, parsed.Interpreter);
            Assert.Equal(paths.SelectMany(p => p.Split(':', StringSplitOptions.RemoveEmptyEntries)), parsed.SearchPath);
            Assert.Equal(62, parsed.Machine);
            checkedFiles++;
            if (needed.Count > 0) withNeeded++;
            if (paths.Count > 0) withRunpath++;
            if (checkedFiles >= 400) break;
        }
        Assert.True(checkedFiles >= 50 && withNeeded >= 50, $"only {checkedFiles} dynamic ELF files checked");
        Console.WriteLine($"checked {checkedFiles} ELF files against readelf, {withRunpath} with a run path");
    }

    [Fact]
    public void Mangled_elf_files_give_an_answer_or_none_never_an_exception()
    {
        byte[] original = File.ReadAllBytes(File.Exists("/usr/bin/apt-get") ? "/usr/bin/apt-get" : "/bin/ls");
        var rnd = new Random(11);
        for (int round = 0; round < 3000; round++)
        {
            byte[] bytes = (byte[])original.Clone();
            if (round % 10 == 0) bytes = bytes[..rnd.Next(0, Math.Min(bytes.Length, 16384))];
            else
            {
                // The header, program headers and dynamic section live in the first pages: mutate there mostly.
                int limit = round % 3 == 0 ? bytes.Length : Math.Min(bytes.Length, 8192);
                for (int k = rnd.Next(1, 12); k > 0; k--) bytes[rnd.Next(limit)] = (byte)rnd.Next(256);
            }
            var parsed = ElfDependencies.Read(Reader(bytes));
            if (parsed is null) continue;
            Assert.True(parsed.Needed.Count <= ElfDependencies.MaxNeeded);
            Assert.All(parsed.Needed, n => Assert.True(n.Length is > 0 and < ElfDependencies.MaxStringBytes));
        }
    }

    [Fact]
    public void Image_paths_follow_links_as_the_kernel_does_and_stop_at_loops()
    {
        using var fx = new ImageFixture();
        fx.File("usr/lib/x86_64-linux-gnu/libx.so.1.2.3", ImageFixture.Random(new Random(1), 1000));
        File.CreateSymbolicLink(fx.S("usr/lib/x86_64-linux-gnu/libx.so.1"), "libx.so.1.2.3");
        File.CreateSymbolicLink(fx.S("lib"), "usr/lib");
        Directory.CreateDirectory(fx.S("opt"));
        File.CreateSymbolicLink(fx.S("opt/l"), "/usr/lib");
        File.CreateSymbolicLink(fx.S("opt/up"), "../../../../usr");
        File.CreateSymbolicLink(fx.S("opt/a"), "b");
        File.CreateSymbolicLink(fx.S("opt/b"), "a");
        fx.BuildImage();
        using var m = fx.Open();
        var image = m.Image;
        ulong? target = ImagePaths.Resolve(image, "/usr/lib/x86_64-linux-gnu/libx.so.1.2.3");
        Assert.NotNull(target);
        Assert.Equal(target, ImagePaths.Resolve(image, "/lib/x86_64-linux-gnu/libx.so.1"));
        Assert.Equal(target, ImagePaths.Resolve(image, "/opt/l/x86_64-linux-gnu/../x86_64-linux-gnu/./libx.so.1"));
        Assert.Equal(target, ImagePaths.Resolve(image, "/opt/up/lib/x86_64-linux-gnu/libx.so.1")); // ".." stops at the root
        Assert.Null(ImagePaths.Resolve(image, "/opt/a"));
        Assert.Null(ImagePaths.Resolve(image, "/opt/a/libx.so.1"));
        Assert.Null(ImagePaths.Resolve(image, "/lib/x86_64-linux-gnu/libx.so.1/more")); // a file in the middle
        Assert.Null(ImagePaths.Resolve(image, "/usr/lib/nothing"));
    }

    [SkippableFact]
    public void The_first_read_of_a_program_fetches_the_libraries_ldd_lists_and_nothing_else()
    {
        Skip.IfNot(File.Exists("/usr/bin/apt-get") && File.Exists("/usr/bin/ldd"), "apt-get or ldd missing on this host");
        // ldd: "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" for each library of the closure, and the
        // loader as "/lib64/ld-linux-x86-64.so.2 (0x...)".
        var closure = new List<string>();
        string? loader = null;
        foreach (var line in Run("/usr/bin/ldd", "/usr/bin/apt-get").Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Contains("=>", StringComparison.Ordinal))
            {
                string path = line.Split("=>")[1].Trim().Split(' ')[0];
                if (path.StartsWith('/')) closure.Add(Path.GetFileName(path));
            }
            else if (line.StartsWith('/')) loader = line.Split(' ')[0];
        }
        Assert.True(closure.Count >= 5, $"ldd listed {closure.Count} libraries");
        Assert.NotNull(loader);

        using var fx = new ImageFixture();
        const string LibDir = "usr/lib/x86_64-linux-gnu";
        fx.File("usr/bin/apt-get", File.ReadAllBytes("/usr/bin/apt-get"));
        foreach (var lib in closure.Append(Path.GetFileName(loader!)))
            fx.File($"{LibDir}/{lib}", File.ReadAllBytes(Path.Combine("/usr/lib/x86_64-linux-gnu", lib)));
        fx.File($"{LibDir}/libunrelated.so.1", ImageFixture.Random(new Random(3), 300_000));
        File.CreateSymbolicLink(fx.S("lib"), "usr/lib");
        Directory.CreateDirectory(fx.S("lib64"));
        File.CreateSymbolicLink(fx.S("lib64/" + Path.GetFileName(loader!)), $"/{LibDir}/{Path.GetFileName(loader!)}");
        fx.BuildImage();

        using var m = fx.Open(o => { o.CacheDir = fx.CacheDir; o.AmplificationBytes = 0; o.PrefetchLibraries = DependencyPrefetch.Always; });
        var fs = m.FileSystem;
        var deps = fs.Dependencies!;
        Assert.NotNull(deps);
        // A data file's first read is looked at and costs nothing more.
        ulong data = ReadHead(m, $"/{LibDir}/libunrelated.so.1", 4096, out ulong dataHandle);
        Assert.Equal(0, deps.FilesQueued);
        fs.Release(Root, data, dataHandle, 0, 0, 0);
        ulong dir = ReadHead(m, "/usr/bin/apt-get", 4096, out ulong handle);
        foreach (var lib in closure) Assert.True(Cached(m, $"/lib/x86_64-linux-gnu/{lib}"), $"{lib} was not fetched");
        Assert.True(Cached(m, loader!), "the loader was not fetched");
        Assert.False(Cached(m, $"/{LibDir}/libunrelated.so.1"), "a library nobody names was fetched");
        Assert.Equal(closure.Count + 1, deps.FilesQueued);
        fs.Release(Root, dir, handle, 0, 0, 0);
    }

    /// <summary>
    /// DT_RUNPATH as ld.so reads it: a program (built here with gcc) whose RUNPATH is /app/lib needs libone.so there,
    /// and libone.so's RUNPATH "$ORIGIN/../deep" finds libtwo.so beside it; a same-named libtwo.so in the default
    /// directories is not the one taken.
    /// </summary>
    [SkippableFact]
    public void Runpath_and_origin_find_the_libraries_the_loader_would()
    {
        Skip.IfNot(File.Exists("/usr/bin/gcc"), "gcc missing (bash tests/setup.sh installs it)");
        using var fx = new ImageFixture();
        string work = Directory.CreateDirectory(Path.Combine(fx.Root, "gcc")).FullName;
        File.WriteAllText(Path.Combine(work, "two.c"), "int two(void) { return 2; }\n");
        File.WriteAllText(Path.Combine(work, "one.c"), "int two(void); int one(void) { return two() - 1; }\n");
        File.WriteAllText(Path.Combine(work, "prog.c"), "int one(void); int main(void) { return one(); }\n");
        Gcc(work, "-shared", "-fPIC", "-o", "libtwo.so", "two.c");
        Gcc(work, "-shared", "-fPIC", "-o", "libone.so", "one.c", "-L.", "-ltwo", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../deep");
        Gcc(work, "-o", "prog", "prog.c", "-L.", "-lone", "-Wl,--enable-new-dtags,-rpath,/app/lib", "-Wl,--allow-shlib-undefined");
        fx.File("app/bin/prog", File.ReadAllBytes(Path.Combine(work, "prog")));
        fx.File("app/lib/libone.so", File.ReadAllBytes(Path.Combine(work, "libone.so")));
        fx.File("app/deep/libtwo.so", File.ReadAllBytes(Path.Combine(work, "libtwo.so")));
        fx.File("usr/lib/x86_64-linux-gnu/libtwo.so", ImageFixture.Random(new Random(4), 5000));
        fx.BuildImage();
        using var m = fx.Open(o => { o.CacheDir = fx.CacheDir; o.AmplificationBytes = 0; o.PrefetchLibraries = DependencyPrefetch.Always; });
        ulong dir = ReadHead(m, "/app/bin/prog", 64, out ulong handle);
        Assert.True(Cached(m, "/app/lib/libone.so"), "RUNPATH /app/lib");
        Assert.True(Cached(m, "/app/deep/libtwo.so"), "RUNPATH $ORIGIN/../deep of libone.so");
        Assert.False(Cached(m, "/usr/lib/x86_64-linux-gnu/libtwo.so"), "the default directory came before RUNPATH");
        m.FileSystem.Release(Root, dir, handle, 0, 0, 0);
    }

    /// <summary>A run path of 200 directories (a hostile image could list thousands, each tried for every name) is
    /// tried only as far as its first <see cref="DependencyPrefetcher.MaxRunPathDirectories"/>.</summary>
    [SkippableFact]
    public void Only_the_first_run_path_directories_are_tried()
    {
        Skip.IfNot(File.Exists("/usr/bin/gcc"), "gcc missing (bash tests/setup.sh installs it)");
        using var fx = new ImageFixture();
        string work = Directory.CreateDirectory(Path.Combine(fx.Root, "gcc")).FullName;
        File.WriteAllText(Path.Combine(work, "a.c"), "int a(void) { return 1; }\n");
        File.WriteAllText(Path.Combine(work, "b.c"), "int b(void) { return 2; }\n");
        File.WriteAllText(Path.Combine(work, "prog.c"), "int a(void); int b(void); int main(void) { return a() + b(); }\n");
        string runpath = string.Join(':', Enumerable.Range(0, 200).Select(i => $"/d{i}"));
        Gcc(work, "-shared", "-fPIC", "-o", "liba.so", "a.c");
        Gcc(work, "-shared", "-fPIC", "-o", "libb.so", "b.c");
        Gcc(work, "-o", "prog", "prog.c", "-L.", "-la", "-lb", $"-Wl,--enable-new-dtags,-rpath,{runpath}");
        fx.File("bin/prog", File.ReadAllBytes(Path.Combine(work, "prog")));
        fx.File("d3/liba.so", File.ReadAllBytes(Path.Combine(work, "liba.so")));
        fx.File("d150/libb.so", File.ReadAllBytes(Path.Combine(work, "libb.so")));
        fx.BuildImage();
        using var m = fx.Open(o => { o.CacheDir = fx.CacheDir; o.AmplificationBytes = 0; o.PrefetchLibraries = DependencyPrefetch.Always; });
        ulong prog = ReadHead(m, "/bin/prog", 64, out ulong handle);
        Assert.True(Cached(m, "/d3/liba.so"), "the fourth run path directory");
        Assert.False(Cached(m, "/d150/libb.so"), "the 151st run path directory was tried");
        m.FileSystem.Release(Root, prog, handle, 0, 0, 0);
    }

    [Fact]
    public void Off_for_a_local_blob_directory_unless_asked_and_off_when_refused()
    {
        using var fx = new ImageFixture();
        fx.File("a", ImageFixture.Random(new Random(2), 100));
        fx.BuildImage();
        using (var local = fx.Open(o => o.CacheDir = fx.CacheDir)) Assert.Null(local.FileSystem.Dependencies);
        using (var asked = fx.Open(o => { o.CacheDir = fx.CacheDir; o.PrefetchLibraries = DependencyPrefetch.Always; })) Assert.NotNull(asked.FileSystem.Dependencies);
        using (var off = fx.Open(o => { o.CacheDir = fx.CacheDir; o.PrefetchLibraries = DependencyPrefetch.Off; })) Assert.Null(off.FileSystem.Dependencies);
        using (var noCache = fx.Open(o => o.PrefetchLibraries = DependencyPrefetch.Always)) Assert.Null(noCache.FileSystem.Dependencies);
    }
}
