using VirtioFs.Virtio;

namespace VirtioFs.VhostUser;

/// <summary>
/// The device behind the vhost-user transport (the virtio-fs device implements it). Shaped after rust-vmm
/// vhost-user-backend's <c>VhostUserBackend</c>: the transport owns features, memory and rings; the device only says
/// what it offers and handles kicked queues.
/// </summary>
public interface IVhostUserBackend
{
    /// <summary>Total number of queues (virtio-fs: 1 hiprio + N request queues).</summary>
    int NumQueues { get; }

    /// <summary>Largest queue size accepted by SET_VRING_NUM (e.g. 1024).</summary>
    int MaxQueueSize { get; }

    /// <summary>Device-specific virtio feature bits; the transport adds VERSION_1, INDIRECT_DESC, EVENT_IDX and
    /// PROTOCOL_FEATURES itself.</summary>
    ulong DeviceFeatures { get; }

    /// <summary>Whether the device has a config space (advertises the CONFIG protocol feature).</summary>
    bool HasConfig { get; }

    /// <summary>GET_CONFIG: copy config bytes [offset, offset + destination.Length) into destination. The caller has
    /// checked that the range lies within VHOST_USER_MAX_CONFIG_SIZE (256).</summary>
    void ReadConfig(uint offset, Span<byte> destination);

    /// <summary>SET_FEATURES: the features the driver acknowledged (transport and device bits).</summary>
    void AcknowledgeFeatures(ulong features);

    /// <summary>Called on the queue's worker thread after a kick (or when a ring becomes enabled). Typically
    /// <c>vring.Process(handler)</c>.</summary>
    void HandleQueue(int queueIndex, Vring vring);

    /// <summary>RESET_OWNER, RESET_DEVICE and disconnect: drop all device state tied to the driver.</summary>
    void Reset();
}

/// <summary>Handles one descriptor chain for <see cref="Vring.Process"/>.</summary>
public interface IChainHandler
{
    /// <summary>
    /// Handle a chain and return the number of bytes written into its writable buffers (0 when the chain is
    /// malformed or needs no reply), or <see cref="Vring.Deferred"/> when the handler will complete it later with
    /// <see cref="Vring.Complete"/> (e.g. from a thread pool).
    /// </summary>
    uint Handle(ref DescriptorChain chain);
}
