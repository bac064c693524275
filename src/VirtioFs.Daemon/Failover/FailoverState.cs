using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using VirtioFs.Fuse;
using VirtioFs.RafsFs;

// Failover and hot upgrade of /dev/fuse mounts, as nydus-snapshotter drives them (pkg/supervisor/supervisor.go,
// pkg/manager/daemon_event.go): a running daemon hands its /dev/fuse fd and the bytes below to the supervisor
// (PUT /api/v1/daemon/fuse/sendfd); a successor fetches both back (PUT /api/v1/daemon/fuse/takeover), checks them
// against its own image, and serves the same kernel connection (PUT /api/v1/daemon/start). The byte format is ours
// (the supervisor stores it opaquely); STATE-FORMAT.md next to this file documents it.
namespace VirtioFs.Daemon.Failover;

/// <summary>Why state bytes were refused: truncated, corrupt, another version, or over a cap. The message says which.</summary>
public sealed class FailoverStateException(string message) : Exception(message);

/// <summary>One mounted filesystem of the handed-over session: where, what, and the kernel-held tables over it.</summary>
public sealed record FailoverMount(
    string MountPoint,
    string FsType,
    string Source,
    string Config,
    string BlobDir,
    string CacheDir,
    byte[] BootstrapSha256,
    IReadOnlyList<RafsFileSystem.HeldNode> Nodes,
    IReadOnlyList<RafsFileSystem.HeldHandle> Handles,
    ulong NextHandle);

/// <summary>What a successor needs to serve a /dev/fuse connection it did not set up (version 1 of the format).</summary>
public sealed record FailoverState(
    FuseInitFlags InitFlags,
    uint MaxWrite,
    ulong ConnectionId,
    IReadOnlyList<FailoverMount> Mounts)
{
    /// <summary>"VFSDFUSE": not a nydusd state (nydusd's is a versionize blob), so neither daemon mistakes the other's.</summary>
    public static ReadOnlySpan<byte> Magic => "VFSDFUSE"u8;
    public const uint Version = 1;

    // Caps: a hostile or corrupt state must not make the decoder allocate by its counts.
    public const int MaxMounts = 64;
    public const int MaxNodes = 1 << 24;
    public const int MaxHandles = 1 << 20;
    public const int MaxPath = 4096;
    public const int MaxConfig = 1 << 20;
    /// <summary>Largest state accepted from the supervisor (the node table dominates: 28 bytes a node).</summary>
    public const int MaxStateBytes = 512 << 20;

    private const int NodeBytes = 8 + 8 + 8 + 4;
    private const int HandleBytes = 8 + 8;
    private const int DigestBytes = 32;

    public byte[] Encode()
    {
        if (Mounts.Count > MaxMounts) throw new FailoverStateException($"{Mounts.Count} mounts; at most {MaxMounts}");
        using var body = new MemoryStream();
        Span<byte> b = stackalloc byte[NodeBytes];
        body.Write(Magic);
        U32(body, Version);
        U32(body, 0); // flags, none defined
        U64(body, (ulong)InitFlags);
        U32(body, MaxWrite);
        U64(body, ConnectionId);
        U32(body, (uint)Mounts.Count);
        foreach (FailoverMount m in Mounts)
        {
            Str(body, m.MountPoint, MaxPath);
            Str(body, m.FsType, MaxPath);
            Str(body, m.Source, MaxPath);
            Str(body, m.Config, MaxConfig);
            Str(body, m.BlobDir, MaxPath);
            Str(body, m.CacheDir, MaxPath);
            if (m.BootstrapSha256.Length != DigestBytes) throw new FailoverStateException("bootstrap digest must be 32 bytes");
            body.Write(m.BootstrapSha256);
            if (m.Nodes.Count > MaxNodes) throw new FailoverStateException($"{m.Nodes.Count} nodes; at most {MaxNodes}");
            U32(body, (uint)m.Nodes.Count);
            foreach (var n in m.Nodes)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(b, n.NodeId);
                BinaryPrimitives.WriteUInt64LittleEndian(b[8..], n.Lookups);
                BinaryPrimitives.WriteUInt64LittleEndian(b[16..], n.Ino);
                BinaryPrimitives.WriteUInt32LittleEndian(b[24..], n.Mode);
                body.Write(b[..NodeBytes]);
            }
            if (m.Handles.Count > MaxHandles) throw new FailoverStateException($"{m.Handles.Count} handles; at most {MaxHandles}");
            U32(body, (uint)m.Handles.Count);
            foreach (var h in m.Handles)
            {
                U64(body, h.Handle);
                U64(body, h.NodeId);
            }
            U64(body, m.NextHandle);
        }
        byte[] digest = SHA256.HashData(body.GetBuffer().AsSpan(0, (int)body.Length));
        body.Write(digest);
        return body.ToArray();
    }

    /// <summary>Decodes and checks state bytes; throws <see cref="FailoverStateException"/> naming what is wrong.</summary>
    public static FailoverState Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length > MaxStateBytes) throw new FailoverStateException($"state is {data.Length} bytes; at most {MaxStateBytes}");
        if (data.Length < Magic.Length + 4 || !data[..Magic.Length].SequenceEqual(Magic))
            throw new FailoverStateException("not a vfsd fuse state (bad magic)");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(data[Magic.Length..]);
        if (version != Version) throw new FailoverStateException($"state version {version} is not supported (this vfsd reads version {Version})");
        if (data.Length < Magic.Length + 4 + DigestBytes) throw new FailoverStateException("state truncated (no checksum)");
        ReadOnlySpan<byte> body = data[..^DigestBytes];
        if (!SHA256.HashData(body).AsSpan().SequenceEqual(data[^DigestBytes..]))
            throw new FailoverStateException("state checksum mismatch (truncated or corrupt)");

        var r = new Reader(body, Magic.Length + 4);
        if (r.U32("flags") != 0) throw new FailoverStateException("state has unknown flags");
        var flags = (FuseInitFlags)r.U64("init flags");
        uint maxWrite = r.U32("max_write");
        ulong connection = r.U64("connection id");
        uint mountCount = r.U32("mount count");
        if (mountCount > MaxMounts) throw new FailoverStateException($"state names {mountCount} mounts; at most {MaxMounts}");
        var mounts = new List<FailoverMount>((int)mountCount);
        for (uint i = 0; i < mountCount; i++)
        {
            string mp = r.Str("mountpoint", MaxPath);
            string type = r.Str("fs_type", MaxPath);
            string source = r.Str("source", MaxPath);
            string config = r.Str("config", MaxConfig);
            string blobDir = r.Str("blob dir", MaxPath);
            string cacheDir = r.Str("cache dir", MaxPath);
            byte[] digest = r.Bytes("bootstrap digest", DigestBytes).ToArray();
            uint nodeCount = r.Count("node", MaxNodes, NodeBytes);
            var nodes = new List<RafsFileSystem.HeldNode>((int)nodeCount);
            for (uint n = 0; n < nodeCount; n++)
            {
                ReadOnlySpan<byte> e = r.Bytes("node", NodeBytes);
                nodes.Add(new RafsFileSystem.HeldNode(BinaryPrimitives.ReadUInt64LittleEndian(e), BinaryPrimitives.ReadUInt64LittleEndian(e[8..]),
                    BinaryPrimitives.ReadUInt64LittleEndian(e[16..]), BinaryPrimitives.ReadUInt32LittleEndian(e[24..])));
            }
            uint handleCount = r.Count("handle", MaxHandles, HandleBytes);
            var handles = new List<RafsFileSystem.HeldHandle>((int)handleCount);
            for (uint h = 0; h < handleCount; h++)
            {
                handles.Add(new RafsFileSystem.HeldHandle(r.U64("handle"), r.U64("handle node")));
            }
            ulong next = r.U64("next handle");
            mounts.Add(new FailoverMount(mp, type, source, config, blobDir, cacheDir, digest, nodes, handles, next));
        }
        if (r.Remaining != 0) throw new FailoverStateException($"state has {r.Remaining} unexpected trailing bytes");
        return new FailoverState(flags, maxWrite, connection, mounts);
    }

    private static void U32(Stream s, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        s.Write(b);
    }

    private static void U64(Stream s, ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        s.Write(b);
    }

    private static void Str(Stream s, string v, int max)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(v);
        if (bytes.Length > max) throw new FailoverStateException($"string of {bytes.Length} bytes; at most {max}");
        U32(s, (uint)bytes.Length);
        s.Write(bytes);
    }

    /// <summary>A bounds-checked cursor: every read names what it reads, so a short state says where it ends.</summary>
    private ref struct Reader(ReadOnlySpan<byte> data, int offset)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _offset = offset;

        public readonly int Remaining => _data.Length - _offset;

        public ReadOnlySpan<byte> Bytes(string what, int n)
        {
            if (n < 0 || n > Remaining) throw new FailoverStateException($"state truncated at byte {_offset} (reading {what})");
            ReadOnlySpan<byte> s = _data.Slice(_offset, n);
            _offset += n;
            return s;
        }

        public uint U32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(what, 4));

        public ulong U64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Bytes(what, 8));

        public string Str(string what, int max)
        {
            uint len = U32(what + " length");
            if (len > max) throw new FailoverStateException($"{what} of {len} bytes; at most {max}");
            try
            {
                return new UTF8Encoding(false, true).GetString(Bytes(what, (int)len));
            }
            catch (DecoderFallbackException)
            {
                throw new FailoverStateException($"{what} is not UTF-8");
            }
        }

        /// <summary>A count of fixed-size entries: capped, and no larger than the bytes left could hold.</summary>
        public uint Count(string what, int max, int entryBytes)
        {
            uint n = U32(what + " count");
            if (n > max) throw new FailoverStateException($"state names {n} {what}s; at most {max}");
            if ((long)n * entryBytes > Remaining) throw new FailoverStateException($"state truncated: {n} {what}s need {(long)n * entryBytes} bytes, {Remaining} left");
            return n;
        }
    }
}
