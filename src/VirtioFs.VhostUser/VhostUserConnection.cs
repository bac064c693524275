using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Tmds.Linux;
using VirtioFs.Virtio;
using static Tmds.Linux.LibC;

namespace VirtioFs.VhostUser;

/// <summary>
/// Serves one vhost-user front-end on a connected socket: reads messages, validates each one, applies it to the guest
/// memory and rings, replies, and on disconnect stops every worker and resets the backend. Shaped after rust-vmm
/// vhost's backend_req_handler, written from vhost-user.rst: what each request is and which handler applies it is
/// <see cref="VhostUserRequestTable"/>; the handlers are in VhostUserConnection.Requests.cs and .Memory.cs.
/// </summary>
internal sealed partial class VhostUserConnection : IDisposable
{
    /// <summary>Largest payload accepted (rust-vmm's MAX_MSG_SIZE).</summary>
    public const int MaxPayload = 0x1000;

    /// <summary>Oversized payloads up to this are read and discarded to keep the stream in sync; beyond, we hang up.</summary>
    private const int MaxDrain = 1 << 20;

    /// <summary>GET_MAX_MEM_SLOTS answer, as vhost-user-backend gives.</summary>
    public const ulong MaxMemSlots = GuestMemory.MaxRegions;

    private readonly int _socket;
    private readonly IVhostUserBackend _backend;
    private readonly ILogger _logger;
    private readonly GuestMemory _memory = new();
    private readonly Vring[] _vrings;
    private readonly byte[] _payload = new byte[MaxPayload];
    private readonly int[] _fds = new int[UnixMessaging.MaxFds];
    private readonly byte[] _reply = new byte[VhostUserMsgHeader.Size + VhostUserConfig.HeaderSize + VhostUserConfig.MaxSize];
    private int _fdCount;
    private readonly ulong _offeredFeatures;
    private readonly ulong _offeredProtocolFeatures;
    private ulong _ackedFeatures;
    private ulong _ackedProtocolFeatures;
    private bool _owned;
    private int _backendReqFd = -1;
    private int _logFd = -1;
    private ulong _status;
    private bool _disposed;

    public VhostUserConnection(int socketFd, IVhostUserBackend backend, ILogger logger)
    {
        if (backend.NumQueues <= 0 || backend.NumQueues > 256)
        {
            // Bits 0-7 of SET_VRING_KICK/CALL/ERR carry the ring index, so 256 is the protocol's ceiling.
            throw new ArgumentOutOfRangeException(nameof(backend), "NumQueues must be 1..256");
        }
        _socket = socketFd;
        _backend = backend;
        _logger = logger;
        _vrings = new Vring[backend.NumQueues];
        for (int i = 0; i < _vrings.Length; i++)
        {
            _vrings[i] = new Vring(i, _memory, logger);
        }
        _offeredFeatures = (1UL << VirtioFeatureBits.Version1) | (1UL << VirtioFeatureBits.IndirectDesc)
            | (1UL << VirtioFeatureBits.EventIdx) | (1UL << VhostUserFeatureBits.ProtocolFeatures) | backend.DeviceFeatures;
        _offeredProtocolFeatures = (1UL << VhostUserProtocolFeatureBits.Mq) | (1UL << VhostUserProtocolFeatureBits.LogShmfd)
            | (1UL << VhostUserProtocolFeatureBits.ReplyAck) | (1UL << VhostUserProtocolFeatureBits.BackendReq)
            | (1UL << VhostUserProtocolFeatureBits.ResetDevice) | (1UL << VhostUserProtocolFeatureBits.ConfigureMemSlots)
            | (backend.HasConfig ? 1UL << VhostUserProtocolFeatureBits.Config : 0);
        Array.Fill(_fds, -1);
    }

    public IReadOnlyList<Vring> Vrings => _vrings;

    /// <summary>SET_OWNER received (and no RESET_OWNER since).</summary>
    public bool IsOwned => _owned;

    private bool ProtocolFeaturesNegotiated => (_ackedFeatures & (1UL << VhostUserFeatureBits.ProtocolFeatures)) != 0;

    private bool HasProtocol(int bit) => (_ackedProtocolFeatures & (1UL << bit)) != 0;

    /// <summary>Runs until the front-end disconnects (or the socket is shut down), then cleans up.</summary>
    public void Run()
    {
        Log.Connected(_logger);
        string reason = "end of stream";
        try
        {
            while (true)
            {
                VhostUserMsgHeader header;
                int r = ReceiveMessage(out header, out int payloadLength, out string? refusal);
                if (r <= 0)
                {
                    UnixMessaging.CloseAll(_fds.AsSpan(0, _fdCount));
                    _fdCount = 0;
                    reason = r == 0 ? "end of stream" : $"socket error {-r}";
                    break;
                }
                try
                {
                    var request = (VhostUserRequest)header.request;
                    Log.MessageReceived(_logger, request, header.flags, header.size, _fdCount);
                    if (refusal is null)
                    {
                        refusal = VhostUserMessage.ValidateFlags(header.flags);
                    }
                    RequestOutcome outcome;
                    if (refusal is not null)
                    {
                        Log.MessageRefused(_logger, request, refusal);
                        outcome = RequestOutcome.Failed;
                    }
                    else
                    {
                        try
                        {
                            outcome = Dispatch(header, _payload.AsSpan(0, payloadLength));
                        }
                        catch (Exception ex) when (ex is not OutOfMemoryException)
                        {
                            // A bug or a throwing backend must not take the whole device down: fail this request.
                            Log.RequestThrew(_logger, request, ex);
                            outcome = RequestOutcome.Failed;
                        }
                    }
                    // Release unclaimed fds before answering, so a front-end that saw the reply sees them closed.
                    UnixMessaging.CloseAll(_fds.AsSpan(0, _fdCount));
                    if (!FinishReply(header, outcome))
                    {
                        reason = "reply failed";
                        break;
                    }
                }
                finally
                {
                    UnixMessaging.CloseAll(_fds.AsSpan(0, _fdCount));
                    _fdCount = 0;
                }
            }
        }
        finally
        {
            Log.Disconnected(_logger, reason);
            Dispose();
        }
    }

    /// <summary>
    /// Reads one message. Returns 1 with the message (refusal set when it must be refused but the stream is in sync),
    /// 0 at end of stream, -errno on socket errors or when the stream cannot be resynchronised.
    /// </summary>
    private int ReceiveMessage(out VhostUserMsgHeader header, out int payloadLength, out string? refusal)
    {
        header = default;
        payloadLength = 0;
        refusal = null;
        Span<byte> headerBytes = MemoryMarshal.AsBytes(new Span<VhostUserMsgHeader>(ref header));
        // Fds travel with the first bytes of a message (vhost-user.rst "Communication").
        int n = UnixMessaging.ReceiveWithFds(_socket, headerBytes, _fds, out _fdCount, out bool truncated);
        if (n <= 0)
        {
            return n;
        }
        if (n < VhostUserMsgHeader.Size)
        {
            int rest = UnixMessaging.ReceiveExact(_socket, headerBytes[n..]);
            if (rest <= 0)
            {
                return rest == 0 ? -EPIPE : rest;
            }
        }
        if (truncated)
        {
            refusal = $"more than {UnixMessaging.MaxFds} fds";
        }
        if (header.size > MaxPayload)
        {
            refusal = $"payload of {header.size} bytes exceeds {MaxPayload}";
            if (header.size > MaxDrain)
            {
                Log.MessageRefused(_logger, (VhostUserRequest)header.request, refusal + "; hanging up");
                return -EMSGSIZE;
            }
            uint left = header.size;
            while (left > 0)
            {
                int chunk = (int)Math.Min(left, (uint)_payload.Length);
                int r = UnixMessaging.ReceiveExact(_socket, _payload.AsSpan(0, chunk));
                if (r <= 0)
                {
                    return r == 0 ? -EPIPE : r;
                }
                left -= (uint)chunk;
            }
            return 1;
        }
        if (header.size > 0)
        {
            int r = UnixMessaging.ReceiveExact(_socket, _payload.AsSpan(0, (int)header.size));
            if (r <= 0)
            {
                return r == 0 ? -EPIPE : r;
            }
        }
        payloadLength = (int)header.size;
        return 1;
    }

    /// <summary>True when the reply to <paramref name="spec"/> carries a body whatever REPLY_ACK says.</summary>
    private bool HasReplyBody(VhostUserRequestSpec spec) => spec.Reply switch
    {
        ReplyShape.AckIfAsked => false,
        ReplyShape.U64IfLogShmfd => HasProtocol(VhostUserProtocolFeatureBits.LogShmfd),
        _ => true,
    };

    private bool FinishReply(in VhostUserMsgHeader header, RequestOutcome outcome)
    {
        if (outcome == RequestOutcome.Replied)
        {
            return true;
        }
        if (VhostUserRequestTable.TryGet((VhostUserRequest)header.request, out VhostUserRequestSpec spec) && HasReplyBody(spec))
        {
            if (outcome == RequestOutcome.Ok)
            {
                return true;
            }
            // The front-end waits for a body: a non-zero status where it is a status, else an empty body, which makes
            // it fail cleanly instead of hanging.
            return spec.Reply == ReplyShape.U64IfLogShmfd ? SendU64(header.request, 1) : SendReply(header.request, 0);
        }
        if ((header.flags & VhostUserFlags.NeedReply) != 0 && HasProtocol(VhostUserProtocolFeatureBits.ReplyAck))
        {
            // REPLY_ACK: u64 0 on success, non-zero on failure.
            return SendU64(header.request, outcome == RequestOutcome.Ok ? 0UL : 1UL);
        }
        return true;
    }

    private bool SendU64(uint request, ulong value)
    {
        MemoryMarshal.Write(_reply.AsSpan(VhostUserMsgHeader.Size), in value);
        return SendReply(request, sizeof(ulong));
    }

    private bool SendStruct<T>(uint request, in T value) where T : unmanaged
    {
        MemoryMarshal.Write(_reply.AsSpan(VhostUserMsgHeader.Size), in value);
        return SendReply(request, Unsafe.SizeOf<T>());
    }

    /// <summary>Sends a reply whose body was already written at _reply[12..12+bodyLength].</summary>
    private bool SendReply(uint request, int bodyLength)
    {
        var h = new VhostUserMsgHeader
        {
            request = request,
            flags = VhostUserFlags.Version | VhostUserFlags.Reply,
            size = (uint)bodyLength,
        };
        MemoryMarshal.Write(_reply, in h);
        return UnixMessaging.SendWithFds(_socket, _reply.AsSpan(0, VhostUserMsgHeader.Size + bodyLength), []) == 0;
    }

    private RequestOutcome Reply(VhostUserRequest request, ulong value) =>
        SendU64((uint)request, value) ? RequestOutcome.Replied : RequestOutcome.Failed;

    // ---- dispatch ----

    /// <summary>Looks the request up in <see cref="VhostUserRequestTable"/>, checks the message against its row and
    /// applies it with the row's handler.</summary>
    private RequestOutcome Dispatch(in VhostUserMsgHeader header, ReadOnlySpan<byte> payload)
    {
        var request = (VhostUserRequest)header.request;
        if (!VhostUserRequestTable.TryGet(request, out VhostUserRequestSpec spec))
        {
            Log.UnknownRequest(_logger, header.request);
            return RequestOutcome.Failed;
        }
        if (spec.Validate(payload, _fdCount) is { } invalid)
        {
            Log.MessageRefused(_logger, request, invalid);
            return RequestOutcome.Failed;
        }
        return spec.Handler(this, request, payload);
    }

    private RequestOutcome Fail(VhostUserRequest request, string reason)
    {
        Log.RequestFailed(_logger, request, reason);
        return RequestOutcome.Failed;
    }

    private static void SetOwnedFd(ref int slot, int fd)
    {
        if (slot >= 0)
        {
            close(slot);
        }
        slot = fd;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (Vring v in _vrings)
        {
            v.StopWorker();
        }
        try
        {
            _backend.Reset();
        }
        finally
        {
            foreach (Vring v in _vrings)
            {
                v.Dispose();
            }
            SetOwnedFd(ref _backendReqFd, -1);
            SetOwnedFd(ref _logFd, -1);
            _memory.Dispose();
        }
    }
}
