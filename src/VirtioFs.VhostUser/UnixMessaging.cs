using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser;

/// <summary>
/// Blocking Unix-socket I/O with SCM_RIGHTS file descriptors: the one place that builds msghdr/cmsghdr (STYLE.md keeps fd
/// passing in a small interop area). Used by the back-end and by the test front-end.
/// </summary>
public static class UnixMessaging
{
    /// <summary>Most fds accepted with one message (rust-vmm caps at 32 too).</summary>
    public const int MaxFds = 32;

    // CMSG_ALIGN / CMSG_LEN / CMSG_SPACE for Linux: alignment is sizeof(size_t).
    private static readonly nuint CmsgHeaderSize = CmsgAlign((nuint)(nuint.Size + 2 * sizeof(int)));

    private static nuint CmsgAlign(nuint length) => (length + (nuint)nuint.Size - 1) & ~((nuint)nuint.Size - 1);

    private static nuint CmsgSpace(int dataLength) => CmsgHeaderSize + CmsgAlign((nuint)dataLength);

    /// <summary>
    /// Receives up to buffer.Length bytes and the fds attached to them (O_CLOEXEC). Returns the byte count, 0 at end of
    /// stream, or -errno. <paramref name="truncated"/> reports MSG_CTRUNC: more fds were sent than fit (the kernel
    /// dropped the rest; the ones received must still be closed by the caller).
    /// </summary>
    public static unsafe int ReceiveWithFds(int socketFd, Span<byte> buffer, Span<int> fds, out int fdCount, out bool truncated)
    {
        fdCount = 0;
        truncated = false;
        int controlLength = (int)CmsgSpace(sizeof(int) * MaxFds);
        byte* control = stackalloc byte[controlLength];
        new Span<byte>(control, controlLength).Clear();
        fixed (byte* data = buffer)
        {
            iovec iov = default;
            iov.iov_base = data;
            iov.iov_len = (size_t)buffer.Length;
            msghdr msg = default;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = (uint)controlLength;
            long n;
            do
            {
                // SAFETY: msg points at stack/pinned buffers that outlive the call; lengths match the buffers.
                n = (long)recvmsg(socketFd, &msg, MSG_CMSG_CLOEXEC);
            }
            while (n < 0 && errno == EINTR);
            if (n < 0)
            {
                return -errno;
            }
            // Walk the control messages by hand with the kernel's layout (struct cmsghdr is {size_t len; int level;
            // int type;} then data, each message padded to sizeof(size_t)); this avoids relying on a managed struct
            // whose length field width differs between libc flavours.
            nuint used = (nuint)(uint)msg.msg_controllen;
            nuint offset = 0;
            while (offset + CmsgHeaderSize <= used)
            {
                byte* c = control + offset;
                nuint len = *(nuint*)c;
                int level = *(int*)(c + sizeof(nuint));
                int type = *(int*)(c + sizeof(nuint) + sizeof(int));
                if (len < CmsgHeaderSize || offset + len > used)
                {
                    break;
                }
                if (level == SOL_SOCKET && type == SCM_RIGHTS)
                {
                    int count = (int)((len - CmsgHeaderSize) / sizeof(int));
                    int* received = (int*)(c + CmsgHeaderSize);
                    for (int i = 0; i < count; i++)
                    {
                        if (fdCount < fds.Length)
                        {
                            fds[fdCount++] = received[i];
                        }
                        else
                        {
                            close(received[i]);
                            truncated = true;
                        }
                    }
                }
                offset += CmsgAlign(len);
            }
            if ((msg.msg_flags & MSG_CTRUNC) != 0)
            {
                truncated = true;
            }
            return (int)n;
        }
    }

    /// <summary>Reads exactly buffer.Length bytes (no fds). Returns buffer.Length, 0 on end of stream first, or -errno.</summary>
    public static unsafe int ReceiveExact(int socketFd, Span<byte> buffer)
    {
        int done = 0;
        fixed (byte* data = buffer)
        {
            while (done < buffer.Length)
            {
                // SAFETY: data + done .. buffer.Length lies inside the pinned buffer.
                long n = (long)recv(socketFd, data + done, (size_t)(buffer.Length - done), 0);
                if (n < 0)
                {
                    if (errno == EINTR)
                    {
                        continue;
                    }
                    return -errno;
                }
                if (n == 0)
                {
                    return done == 0 ? 0 : -EPIPE;
                }
                done += (int)n;
            }
        }
        return done;
    }

    /// <summary>Sends all of <paramref name="data"/>, attaching <paramref name="fds"/> to the first bytes. Returns 0 or -errno.</summary>
    public static unsafe int SendWithFds(int socketFd, ReadOnlySpan<byte> data, ReadOnlySpan<int> fds)
    {
        // SCM_MAX_FD: the kernel's own limit per message (senders may exceed our receive cap; tests do).
        if (fds.Length > 253)
        {
            return -EINVAL;
        }
        int controlLength = fds.Length == 0 ? 0 : (int)CmsgSpace(sizeof(int) * fds.Length);
        byte* control = stackalloc byte[Math.Max(controlLength, 1)];
        int sent = 0;
        fixed (byte* bytes = data)
        {
            do
            {
                iovec iov = default;
                iov.iov_base = bytes + sent;
                iov.iov_len = (size_t)(data.Length - sent);
                msghdr msg = default;
                msg.msg_iov = &iov;
                msg.msg_iovlen = 1;
                if (sent == 0 && controlLength != 0)
                {
                    new Span<byte>(control, controlLength).Clear();
                    msg.msg_control = control;
                    msg.msg_controllen = (uint)controlLength;
                    *(nuint*)control = CmsgHeaderSize + (nuint)(sizeof(int) * fds.Length);
                    *(int*)(control + sizeof(nuint)) = SOL_SOCKET;
                    *(int*)(control + sizeof(nuint) + sizeof(int)) = SCM_RIGHTS;
                    fds.CopyTo(new Span<int>(control + CmsgHeaderSize, fds.Length));
                }
                // SAFETY: msg points at pinned/stack memory that outlives the call.
                long n = (long)sendmsg(socketFd, &msg, MSG_NOSIGNAL);
                if (n < 0)
                {
                    if (errno == EINTR)
                    {
                        continue;
                    }
                    return -errno;
                }
                sent += (int)n;
            }
            while (sent < data.Length);
        }
        return 0;
    }

    /// <summary>Closes every fd in the span that is not -1 and marks it -1.</summary>
    public static void CloseAll(Span<int> fds)
    {
        for (int i = 0; i < fds.Length; i++)
        {
            if (fds[i] >= 0)
            {
                close(fds[i]);
                fds[i] = -1;
            }
        }
    }
}
