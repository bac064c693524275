using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VirtioFs.Virtio;

namespace VirtioFs.VhostUser;

/// <summary>Guest memory changes (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) and the pause/resume of ring workers that
/// keeps every ring pointer valid across them.</summary>
internal sealed partial class VhostUserConnection
{
    internal RequestOutcome SetMemTable(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        ReadOnlySpan<VhostUserMemoryRegion> raw =
            MemoryMarshal.Cast<byte, VhostUserMemoryRegion>(payload[Unsafe.SizeOf<VhostUserMemory>()..]);
        var regions = new MemoryRegionInfo[raw.Length]; // cold path, at most 8
        for (int i = 0; i < raw.Length; i++)
        {
            regions[i] = ToInfo(raw[i]);
        }
        string? error = null;
        bool ok = false;
        ChangeMemory(() => ok = _memory.TryReplaceRegions(regions, _fds.AsSpan(0, _fdCount), out error));
        // The mappings keep the memory alive; the fds are closed by the caller's CloseAll.
        return ok ? RequestOutcome.Ok : Fail(request, error!);
    }

    internal RequestOutcome AddRemoveMemReg(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        bool add = request == VhostUserRequest.AddMemReg;
        string? error = null;
        MemoryRegionInfo info = ToInfo(MemoryMarshal.Read<VhostUserSingleMemoryRegion>(payload).region);
        bool ok = false;
        int fd = _fdCount > 0 ? _fds[0] : -1;
        ChangeMemory(() => ok = add ? _memory.TryAddRegion(info, fd, out error) : _memory.TryRemoveRegion(info, out error));
        return ok ? RequestOutcome.Ok : Fail(request, error!);
    }

    private static MemoryRegionInfo ToInfo(in VhostUserMemoryRegion r) =>
        new(r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset);

    /// <summary>
    /// Applies a memory change with every worker stopped and every ring's completion lock held, then re-translates
    /// the rings, so no thread can use a ring pointer into a mapping that is about to be unmapped. Chains still in
    /// flight keep their buffers mapped through GuestMemory's use count.
    /// </summary>
    private void ChangeMemory(Action change)
    {
        Span<bool> running = stackalloc bool[_vrings.Length];
        for (int i = 0; i < _vrings.Length; i++)
        {
            running[i] = Pause(_vrings[i]);
        }
        int locked = 0;
        try
        {
            for (; locked < _vrings.Length; locked++)
            {
                _vrings[locked].UsedLock.Enter();
            }
            foreach (Vring v in _vrings)
            {
                v.Queue.Deactivate();
            }
            change();
            foreach (Vring v in _vrings)
            {
                if (v.Queue.Size != 0 && !v.Queue.TryActivate(out string? error))
                {
                    Log.QueueNotActive(_logger, v.Index, error!);
                }
            }
        }
        finally
        {
            for (int i = locked - 1; i >= 0; i--)
            {
                _vrings[i].UsedLock.Exit();
            }
        }
        for (int i = 0; i < _vrings.Length; i++)
        {
            Resume(_vrings[i], running[i]);
        }
    }

    private bool TryActivate(Vring vring, out string? error)
    {
        lock (vring.UsedLock)
        {
            return vring.Queue.TryActivate(out error);
        }
    }

    private static bool Pause(Vring vring)
    {
        bool running = vring.WorkerRunning;
        vring.StopWorker();
        return running;
    }

    private void Resume(Vring vring, bool wasRunning)
    {
        if (wasRunning)
        {
            vring.StartWorker(_backend);
        }
    }
}
