using VirtioFs.Fuse;

namespace VirtioFs.Vfs;

// The one routing step every IFileSystem request of the Vfs takes: metrics, the slot of its node id, the pseudo
// filesystem (slot 0) or the pinned mount, and the ids translated to the mount's own on the way in.
public sealed partial class Vfs
{
    /// <summary>Answers a request addressed to the pseudo tree (slot 0).</summary>
    private delegate int PseudoHandler<TArgs>(Vfs vfs, ulong nodeId, ref TArgs args) where TArgs : allows ref struct;

    /// <summary>Runs a request against the mount <paramref name="call"/> has pinned, with its inner node id and handle.</summary>
    private delegate int MountHandler<TArgs>(Vfs vfs, ref Call call, ref TArgs args) where TArgs : allows ref struct;

    /// <summary>One request: metrics and, once entered, the pin on its mount. Always Dispose in a finally.</summary>
    private struct Call
    {
        private readonly VfsMetrics _metrics;
        private readonly FuseOpcode _op;
        private readonly long _start;
        private int _result;
        /// <summary>The mount the request was routed to, pinned; null until entered.</summary>
        public MountEntry? Mount;
        /// <summary>The node id as the mount knows it.</summary>
        public ulong Node;
        /// <summary>The handle as the mount issued it (0 when the request carries none).</summary>
        public ulong Handle;
        /// <summary>Bytes a READ returned, for the mount's statistics.</summary>
        public int Bytes;

        public Call(Vfs vfs, FuseOpcode op)
        {
            _metrics = vfs.Metrics;
            _op = op;
            _result = Errno.EIO; // what an exception escaping the filesystem becomes in FuseServer
            _start = _metrics.Start(op);
        }

        /// <summary>The pinned mount's filesystem (only inside a <see cref="MountHandler{TArgs}"/>).</summary>
        public readonly IFileSystem Fs => Mount!.Fs;

        public int Return(int err) => _result = err;

        public readonly void Dispose()
        {
            if (Mount is not null)
            {
                Mount.Stats.Record(_op, System.Diagnostics.Stopwatch.GetElapsedTime(_start), _result, Bytes);
                Exit(Mount);
            }
            _metrics.Stop(_op, _start, _result);
        }
    }

    /// <summary>
    /// Routes one request by the slot of <paramref name="nodeId"/>. Slot 0 goes to <paramref name="pseudo"/>. Otherwise
    /// the handle, when the request carries one, must belong to the same mount (EBADF); so must
    /// <paramref name="sameMountAs"/>, the other node of a two-node request (EXDEV: the kernel falls back to a plain
    /// copy or refuses); then the mount is pinned for the call (<paramref name="whenUnmounted"/> when it is gone) and
    /// <paramref name="mounted"/> runs. The handlers are static lambdas and the arguments a ref struct on the caller's
    /// stack: routing allocates nothing.
    /// </summary>
    private int Route<TArgs>(FuseOpcode op, ulong nodeId, ref TArgs args, PseudoHandler<TArgs> pseudo, MountHandler<TArgs> mounted,
        ulong? handle = null, ulong? sameMountAs = null, int whenUnmounted = ESTALE)
        where TArgs : allows ref struct
    {
        var c = new Call(this, op);
        try
        {
            ushort slot = SlotOf(nodeId);
            if (slot == 0) return c.Return(pseudo(this, nodeId, ref args));
            if (handle is ulong h && !TryInnerHandle(slot, h, out c.Handle)) return c.Return(Errno.EBADF);
            if (sameMountAs is ulong other && SlotOf(other) != slot) return c.Return(Errno.EXDEV);
            if (!TryEnter(slot, out MountEntry m)) return c.Return(whenUnmounted);
            c.Mount = m;
            c.Node = InnerOf(nodeId);
            return c.Return(mounted(this, ref c, ref args));
        }
        finally
        {
            c.Dispose();
        }
    }

    /// <summary>What a mutation of the read-only pseudo tree gets: EROFS, or ESTALE for a node that is gone.</summary>
    private int PseudoMutation(ulong nodeId) => _pseudo.TryGet(nodeId, out _) ? Errno.EROFS : ESTALE;

    /// <summary><paramref name="errno"/> for a pseudo node that exists, ESTALE for one that is gone.</summary>
    private int IfPseudoExists(ulong nodeId, int errno) => _pseudo.TryGet(nodeId, out _) ? errno : ESTALE;
}
