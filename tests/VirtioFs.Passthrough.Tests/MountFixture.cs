using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Fuse;

namespace VirtioFs.Passthrough.Tests;

/// <summary>A passthrough of a fresh temp dir mounted through /dev/fuse; always lazily unmounted on dispose.</summary>
internal sealed class MountFixture : IDisposable
{
    /// <param name="passthrough">Builds the passthrough options from the source directory instead of the flags above.</param>
    public MountFixture(bool readOnly = false, bool xattr = false, CachePolicy cache = CachePolicy.Never, int threads = 2,
        FuseServerOptions? serverOptions = null, Func<string, PassthroughOptions>? passthrough = null)
    {
        Root = Directory.CreateTempSubdirectory("vfs-pt-");
        Source = Directory.CreateDirectory(Path.Combine(Root.FullName, "src")).FullName;
        MountPoint = Directory.CreateDirectory(Path.Combine(Root.FullName, "mnt")).FullName;
        FileSystem = new PassthroughFileSystem(
            passthrough?.Invoke(Source) ?? new PassthroughOptions { SharedDir = Source, ReadOnly = readOnly, Xattr = xattr, Cache = cache },
            NullLogger.Instance);
        Server = new FuseServer(FileSystem, serverOptions ?? new FuseServerOptions(), NullLogger.Instance);
        try
        {
            Session = FuseDeviceSession.Mount(MountPoint, Server, new FuseDeviceOptions { Threads = threads }, NullLogger.Instance);
        }
        catch
        {
            FileSystem.Dispose();
            throw;
        }
    }

    public DirectoryInfo Root { get; }
    public string Source { get; }
    public string MountPoint { get; }
    public PassthroughFileSystem FileSystem { get; }
    public FuseServer Server { get; }
    public FuseDeviceSession Session { get; }

    public string Src(string relative) => Path.Combine(Source, relative);
    public string Mnt(string relative) => Path.Combine(MountPoint, relative);

    public void Dispose()
    {
        try
        {
            Session.Dispose();
        }
        finally
        {
            TestInterop.umount2(MountPoint, TestInterop.MNT_DETACH);
            FileSystem.Dispose();
            try
            {
                Root.Delete(true);
            }
            catch (IOException)
            {
            }
        }
    }
}
