using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace VirtioFs.Integration.Tests.Infrastructure;

/// <summary>
/// nydus-snapshotter's supervisor, as containerd/nydus-snapshotter pkg/supervisor/supervisor.go implements it, written
/// here independently of vfsd's code: the supervisor listens on its socket (removing a stale file first) and the daemon
/// connects. <see cref="FetchDaemonStates"/> (supervisor.go FetchDaemonStates / waitStatesTimeout / recv): listen,
/// trigger the daemon's PUT /api/v1/daemon/fuse/sendfd, accept, read to end of stream collecting the bytes and the
/// SCM_RIGHTS control data, keep the first fd of the first rights message. <see cref="SendStatesTimeout"/>
/// (SendStatesTimeout / send): listen, then in the background accept one connection and write the stored bytes with the
/// stored fd attached to the first message, and close. The stored fd stays open until <see cref="Dispose"/>
/// (DestroySupervisor), which is what keeps the FUSE connection alive while no daemon runs.
/// </summary>
internal sealed partial class TestSupervisor(string path) : IDisposable
{
    private byte[] _data = [];
    private int _fd = -1;

    public string Path { get; } = path;

    public int StateBytes => _data.Length;

    public bool HoldsFd => _fd >= 0;

    public async Task FetchDaemonStates(Func<Task> trigger)
    {
        using Socket listener = Listen();
        Task<(byte[], int)> receiver = Task.Run(() =>
        {
            using Socket conn = listener.Accept();
            return Receive((int)conn.Handle);
        });
        await trigger();
        (byte[] data, int fd) = await receiver.WaitAsync(TimeSpan.FromSeconds(30));
        if (fd < 0) throw new InvalidOperationException("received no control file descriptor"); // supervisor.go recv
        if (_fd >= 0) close(_fd); // "Always overwrite states and FDs"
        _data = data;
        _fd = fd;
    }

    public Task SendStatesTimeout(TimeSpan timeout)
    {
        Socket listener = Listen();
        var sender = Task.Run(() =>
        {
            using (listener)
            {
                using Socket conn = listener.Accept();
                Send((int)conn.Handle, _data, _fd);
            }
        });
        _ = Task.Delay(timeout).ContinueWith(_ => listener.Dispose(), TaskScheduler.Default); // the timer closes the listener
        return sender;
    }

    private Socket Listen()
    {
        File.Delete(Path);
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(Path));
        s.Listen(1);
        return s;
    }

    // struct msghdr / cmsghdr on x86-64 Linux.
    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public void* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct IoVec
    {
        public void* Base;
        public nuint Len;
    }

    private const int SolSocket = 1, ScmRights = 1, CmsgHeader = 16;

    private static unsafe (byte[] Data, int Fd) Receive(int socket)
    {
        var data = new MemoryStream();
        var oob = new List<byte>();
        byte[] buffer = new byte[256 * 1024];
        byte* control = stackalloc byte[CmsgHeader + 4 * 64]; // unix.CmsgSpace(4) * 64 in supervisor.go
        while (true)
        {
            fixed (byte* b = buffer)
            {
                var iov = new IoVec { Base = b, Len = (nuint)buffer.Length };
                var msg = new MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = CmsgHeader + 4 * 64 };
                long n = recvmsg(socket, &msg, 0x40000000 /* MSG_CMSG_CLOEXEC */);
                if (n < 0) throw new IOException($"receive message: errno {Marshal.GetLastPInvokeError()}");
                for (nuint i = 0; i < msg.ControlLen; i++) oob.Add(control[i]);
                if (n == 0) break;
                data.Write(buffer, 0, (int)n);
            }
        }
        // ParseSocketControlMessage + ParseUnixRights of scms[0]: keep the first fd, close any other.
        int fd = -1;
        byte[] o = [.. oob];
        for (int off = 0; off + CmsgHeader <= o.Length;)
        {
            long len = BitConverter.ToInt64(o, off);
            if (len < CmsgHeader || off + len > o.Length) break;
            if (BitConverter.ToInt32(o, off + 8) == SolSocket && BitConverter.ToInt32(o, off + 12) == ScmRights)
            {
                for (int p = off + CmsgHeader; p + 4 <= off + len; p += 4)
                {
                    int f = BitConverter.ToInt32(o, p);
                    if (fd < 0) fd = f;
                    else close(f);
                }
            }
            off += (int)((len + 7) & ~7L);
        }
        return (data.ToArray(), fd);
    }

    private static unsafe void Send(int socket, byte[] data, int fd)
    {
        byte* control = stackalloc byte[CmsgHeader + 8];
        *(long*)control = CmsgHeader + 4;
        *(int*)(control + 8) = SolSocket;
        *(int*)(control + 12) = ScmRights;
        *(int*)(control + 16) = fd;
        int sent = 0;
        bool oob = true;
        fixed (byte* b = data)
        {
            while (sent < data.Length || oob)
            {
                var iov = new IoVec { Base = b + sent, Len = (nuint)(data.Length - sent) };
                var msg = new MsgHdr { Iov = &iov, IovLen = 1, Control = oob ? control : null, ControlLen = oob ? (nuint)(CmsgHeader + 8) : 0 };
                long n = sendmsg(socket, &msg, 0x4000 /* MSG_NOSIGNAL */);
                if (n < 0) throw new IOException($"send message: errno {Marshal.GetLastPInvokeError()}");
                sent += (int)n;
                oob = false;
            }
        }
    }

    public void Dispose()
    {
        if (_fd >= 0) close(_fd); // DestroySupervisor: "Prevent hanging after nydusd exits."
        _fd = -1;
        File.Delete(Path);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial long recvmsg(int socket, MsgHdr* msg, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial long sendmsg(int socket, MsgHdr* msg, int flags);

    [LibraryImport("libc")]
    private static partial int close(int fd);
}
