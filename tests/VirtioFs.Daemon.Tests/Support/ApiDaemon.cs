using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using VirtioFs.Daemon.Api;
using VirtioFs.Daemon.CommandLine;
using VirtioFs.Fuse;
using VirtioFs.Vfs;

namespace VirtioFs.Daemon.Tests.Support;

/// <summary>
/// The daemon pieces of <c>vfsd --apisock</c> as DaemonHost wires them: a Vfs, its DaemonControl, the API server on
/// a Unix socket, and a FUSE server over the Vfs mounted through /dev/fuse. Owns <see cref="Root"/> and tears the
/// pieces down in the order the daemon does (API first, then the mount, then the filesystems), deleting the root last.
/// </summary>
internal sealed partial class ApiDaemon : IAsyncDisposable
{
    private const int MNT_DETACH = 2;

    public string Root { get; }
    public string Socket => Path.Combine(Root, "api.sock");
    public string MountPoint { get; }
    public Vfs.Vfs Vfs { get; }
    public DaemonControl Control { get; }
    public ApiServer Api { get; }
    public FuseDeviceSession Session { get; }

    /// <summary>Starts the API server and mounts the Vfs at <c>Root/mnt</c>; pass the same <paramref name="stats"/> as
    /// <paramref name="serverOptions"/>.Stats to count into one set of statistics, as the daemon does.</summary>
    public ApiDaemon(string root, DaemonOptions options, FuseServerOptions serverOptions, FsIoStats? stats = null)
    {
        Root = root;
        Vfs = new Vfs.Vfs(new VfsOptions(), NullLogger.Instance);
        Control = new DaemonControl(Vfs, options, NullLoggerFactory.Instance, () => { }, stats);
        Api = new ApiServer(Socket, Control, NullLogger.Instance);
        Api.Start();
        MountPoint = Directory.CreateDirectory(Path.Combine(root, "mnt")).FullName;
        var server = new FuseServer(Vfs, serverOptions, NullLogger.Instance);
        Session = FuseDeviceSession.Mount(MountPoint, server, new FuseDeviceOptions { Threads = 2 }, NullLogger.Instance);
    }

    /// <summary>An HttpClient over the API socket, the way the Go clients dial it (DialContext "unix").</summary>
    public HttpClient Client(string baseAddress = "http://localhost") => UnixHttpClient(Socket, baseAddress);

    /// <summary>An HttpClient whose every connection goes to the Unix socket <paramref name="socketPath"/>.</summary>
    public static HttpClient UnixHttpClient(string socketPath, string baseAddress = "http://localhost")
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new System.Net.Sockets.Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                return new NetworkStream(s, ownsSocket: true);
            },
        };
        return new HttpClient(handler) { BaseAddress = new Uri(baseAddress) };
    }

    public async ValueTask DisposeAsync()
    {
        await Api.DisposeAsync();
        try
        {
            Session.Dispose();
        }
        finally
        {
            umount2(MountPoint, MNT_DETACH);
            Control.Dispose();
            Vfs.Dispose();
            try
            {
                Directory.Delete(Root, true);
            }
            catch (IOException)
            {
            }
        }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int umount2(string target, int flags);
}
