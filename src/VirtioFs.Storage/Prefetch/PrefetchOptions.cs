namespace VirtioFs.Storage.Prefetch;

// Overview: prefetch warms the chunk cache after mount with the files a workload is expected to read (nydus: the
// bootstrap's prefetch table, or `prefetch_files` in the mount request, or everything with prefetch_all). It runs in
// the background: it never holds a chunk claim while it waits for bandwidth, the backend reads in flight and bytes per second
// are bounded, and when it warms the whole image it starts no backend read while a guest read is in progress
// (PrefetchOptions.YieldToGuestReads).

/// <summary>Limits of a background prefetch.</summary>
public sealed class PrefetchOptions
{
    /// <summary>Backend reads the prefetch keeps in flight at once (nydus's prefetch thread count), within a file and
    /// across files.</summary>
    public int MaxConcurrency { get; init; } = 2;

    /// <summary>Backend bytes per second the prefetch may use; 0 = no limit.</summary>
    public long BandwidthBytesPerSecond { get; init; }

    /// <summary>
    /// Whether a backend read waits until no guest read is in progress. Right for warming a whole image in the
    /// background (prefetch_all): guest reads keep the link. Wrong for a start-up list (the bootstrap's prefetch table,
    /// prefetch_files): those are the files the container is about to read, and a prefetcher that waits for each guest
    /// read to finish runs at the pace of the workload's one-after-another misses, a round trip each (measured in
    /// benchmarks/cold-start.sh: a third of the link rate). nydusd's prefetch workers do not wait for user I/O either
    /// (storage/src/cache/worker.rs); they are bounded by thread count and bandwidth only, as here.
    /// </summary>
    public bool YieldToGuestReads { get; init; } = true;

    /// <summary>Log the outcome when done (at Information). Off for the many small batches of the shared-library
    /// prefetch (RafsFs DependencyPrefetcher), one per program started.</summary>
    public bool LogOutcome { get; init; } = true;

    /// <summary>Clock for the bandwidth limit (tests pass a manual one).</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    internal void Validate()
    {
        if (MaxConcurrency is < 1 or > 64) throw new ArgumentOutOfRangeException(nameof(MaxConcurrency), MaxConcurrency, "must be 1..64");
        ArgumentOutOfRangeException.ThrowIfNegative(BandwidthBytesPerSecond);
        ArgumentNullException.ThrowIfNull(TimeProvider);
    }
}

/// <summary>
/// Paces backend bytes to a rate. Each request is charged when it starts: it goes at once if the budget is free and
/// pushes the next free time forward by bytes / rate, so over any long run the rate holds without a fixed burst size.
/// </summary>
internal sealed class RateLimiter(long bytesPerSecond, TimeProvider time)
{
    private readonly Lock _lock = new();
    private long _nextFree = long.MinValue;

    public Task AcquireAsync(long bytes, CancellationToken ct)
    {
        long now = time.GetTimestamp();
        long wait;
        lock (_lock)
        {
            long start = Math.Max(now, _nextFree);
            var cost = (Int128)bytes * time.TimestampFrequency / bytesPerSecond;
            _nextFree = cost > long.MaxValue - start ? long.MaxValue : start + (long)cost;
            wait = start - now;
        }
        if (wait <= 0) return Task.CompletedTask;
        var delay = TimeSpan.FromSeconds((double)wait / time.TimestampFrequency);
        return Task.Delay(delay, time, ct);
    }
}

/// <summary>Lets background work wait until no foreground (guest) read is in progress. Enter/Exit are lock-free.</summary>
internal sealed class ForegroundGate
{
    private int _active;
    private TaskCompletionSource? _idle;

    public void Enter() => Interlocked.Increment(ref _active);

    public void Exit()
    {
        if (Interlocked.Decrement(ref _active) == 0) Volatile.Read(ref _idle)?.TrySetResult();
    }

    public bool IsIdle => Volatile.Read(ref _active) == 0;

    public async ValueTask WaitIdleAsync(CancellationToken ct)
    {
        while (Volatile.Read(ref _active) > 0)
        {
            var t = Volatile.Read(ref _idle);
            if (t is null || t.Task.IsCompleted)
            {
                var fresh = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                t = Interlocked.CompareExchange(ref _idle, fresh, t) == t ? fresh : Volatile.Read(ref _idle)!;
            }
            // Re-check after publishing: an Exit that ran before the publish saw no waiter to wake.
            if (Volatile.Read(ref _active) == 0) return;
            await t.Task.WaitAsync(ct).ConfigureAwait(false);
        }
    }
}
