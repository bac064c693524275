namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>Where the built executables and the guest harness live, found from the test's working directory.</summary>
internal static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string Vfsd => Require(Path.Combine(Root, "out", "vfsd"), "run tests/setup.sh to build out/vfsd");

    public static string VfsImage => Require(Path.Combine(Root, "out", "vfs-image"), "run tests/setup.sh to build out/vfs-image");

    public static string RunGuest => Path.Combine(Root, "tests", "guest", "run-guest.sh");

    private static string Require(string path, string hint) =>
        File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing: {hint}");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "VirtioFs.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("VirtioFs.sln not found above " + AppContext.BaseDirectory);
    }
}
