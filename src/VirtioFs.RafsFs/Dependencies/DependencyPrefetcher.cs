using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using VirtioFs.Rafs;
using VirtioFs.Rafs.Reader;
using VirtioFs.Storage.Cache;
using VirtioFs.Storage.Prefetch;

namespace VirtioFs.RafsFs.Dependencies;

/// <summary>
/// Fetches the shared libraries a program will load as soon as the program is first read, instead of one at a time as
/// the dynamic loader opens them.
/// <para>
/// Why: starting a container is mostly exec'ing programs, and each exec makes ld.so open the program's DT_NEEDED
/// libraries, then theirs, one after another, each open a cache miss and one round trip to the registry. In
/// <c>benchmarks/cold-start.sh</c> the misses after the prefetch table were 27 reads in a row of ~25 ms each, 19 of
/// them ELF files: <c>apt-get</c> and the 16 libraries under it. Here, the first READ at offset 0 of a file queues a
/// background scan: if the file is a dynamic ELF, its interpreter and DT_NEEDED libraries are resolved inside the image
/// the way ld.so(8) searches (DT_RUNPATH or DT_RPATH, then the default directories for its machine, symlinks followed)
/// and fetched in one batch, then the same for theirs, level by level: a dependency tree of depth three costs about
/// three round trips instead of one per library.
/// </para>
/// <para>
/// Bounded for hostile images: each inode is scanned once, at most <see cref="MaxFiles"/> files per mount, at most
/// <see cref="MaxBytesPerFile"/> of each library is fetched ahead (a large library's first chunks, where the loader
/// reads its headers), <see cref="MaxDepth"/> levels, and the first <see cref="MaxRunPathDirectories"/> run path
/// directories of each file (the parser already caps names at 256 per file). It only fetches what the image holds into the cache, so a
/// wrong guess costs bandwidth, never correctness.
/// </para>
/// </summary>
internal sealed class DependencyPrefetcher(RafsImage image, BlobCacheManager cache, ILogger logger, CancellationToken stop)
{
    /// <summary>Most files queued for the cache per mount.</summary>
    public const int MaxFiles = 4096;
    /// <summary>Most files looked at per mount (a read of every file of a large tree must not use up
    /// <see cref="MaxFiles"/> on data files before the next program starts).</summary>
    public const int MaxLookedAt = 1 << 16;
    public const int MaxDepth = 8;
    public const ulong MaxBytesPerFile = 8 << 20;
    /// <summary>Run path directories tried per file (real ones list one to three).</summary>
    public const int MaxRunPathDirectories = 16;
    private const uint S_IFMT = 0xF000, S_IFREG = 0x8000;

    /// <summary>Inodes whose first read has been looked at.</summary>
    private readonly ConcurrentDictionary<ulong, byte> _lookedAt = new();
    /// <summary>Inodes queued for the cache (and scanned in turn), or scanned as the program first read.</summary>
    private readonly ConcurrentDictionary<ulong, byte> _seen = new();
    private long _scans, _files, _bytes;
    private int _running;

    /// <summary>Programs and libraries scanned.</summary>
    public long Scans => Interlocked.Read(ref _scans);
    /// <summary>Libraries (and interpreters) queued for the cache.</summary>
    public long FilesQueued => Interlocked.Read(ref _files);
    /// <summary>Their bytes (uncompressed, as planned).</summary>
    public long BytesQueued => Interlocked.Read(ref _bytes);
    /// <summary>Scans in progress (tests wait for 0).</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>A READ at offset 0 of file <paramref name="ino"/> has been answered (its first chunk is cached now).
    /// Cheap when the file was seen before: one dictionary probe.</summary>
    public void OnFirstRead(ulong ino, RafsChunk[] chunks, ulong size)
    {
        if (size < 64 || _lookedAt.ContainsKey(ino) || _seen.ContainsKey(ino)) return;
        if (_lookedAt.Count >= MaxLookedAt || !_lookedAt.TryAdd(ino, 0)) return;
        // Counted before the stop is checked: WaitIdle, after the stop, sees every scan that may still touch the image.
        Interlocked.Increment(ref _running);
        if (stop.IsCancellationRequested)
        {
            Interlocked.Decrement(ref _running);
            return;
        }
        _ = Task.Run(() => RunAsync(ino, chunks, size), CancellationToken.None);
    }

    /// <summary>After the stop token is cancelled: waits (up to <paramref name="timeout"/>) until no scan runs, so the
    /// image and the cache can be closed under none.</summary>
    public bool WaitIdle(TimeSpan timeout) => SpinWait.SpinUntil(() => Running == 0, timeout);

    private async Task RunAsync(ulong ino, RafsChunk[] chunks, ulong size)
    {
        try
        {
            // Seen before its dependencies are looked up, so none of them resolves back to it.
            _seen.TryAdd(ino, 0);
            var level = new List<(RafsChunk[] Chunks, ulong Size, string? Dir)> { (chunks, size, null) };
            for (int depth = 0; depth < MaxDepth && level.Count > 0 && !stop.IsCancellationRequested; depth++)
            {
                var next = new List<(RafsChunk[] Chunks, ulong Size, string? Dir)>();
                foreach (var (c, s, dir) in level)
                {
                    if (Scan(c, s, dir, next) || depth > 0) continue;
                    // The program is not an ELF file the loader could use (most first reads): nothing to do, and no
                    // place taken among the files queued.
                    _seen.TryRemove(ino, out _);
                    return;
                }
                if (next.Count == 0) break;
                var plan = new List<IReadOnlyList<RafsChunk>>(next.Count);
                foreach (var (c, _, _) in next) plan.Add(Head(c));
                // One batch: the prefetcher plans it in blob order and keeps several requests in flight.
                await cache.PrefetchAsync(plan, new PrefetchOptions { MaxConcurrency = 8, YieldToGuestReads = false, LogOutcome = false }, stop).ConfigureAwait(false);
                level = next;
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e) when (e is IOException or RafsFormatException or InvalidOperationException or ObjectDisposedException)
        {
            RafsFsLog.DependencyPrefetchFailed(logger, e.Message);
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }

    /// <summary>Adds the not yet seen dependencies of one file to <paramref name="next"/>; false when the file is not an
    /// ELF file the loader could use.</summary>
    private bool Scan(RafsChunk[] chunks, ulong size, string? directory, List<(RafsChunk[] Chunks, ulong Size, string? Dir)> next)
    {
        Interlocked.Increment(ref _scans);
        // ReadFile answers 0 at or past the end of the file, a short count at it.
        var list = ElfDependencies.Read((offset, destination) => cache.ReadFile(chunks, size, offset, destination));
        if (list is null) return false;
        if (list.Interpreter is { } interp) Add(interp, next);
        if (list.Needed.Count == 0) return true;
        var search = new List<string>();
        foreach (var d in list.SearchPath)
        {
            // A hostile run path could list thousands of directories, each tried for every name: take the first few.
            if (search.Count >= MaxRunPathDirectories) break;
            // $ORIGIN: the directory of the file that names it, known for the libraries found here by path.
            if (d.Contains("$ORIGIN", StringComparison.Ordinal) || d.Contains("${ORIGIN}", StringComparison.Ordinal))
            {
                if (directory is not null) search.Add(d.Replace("${ORIGIN}", directory, StringComparison.Ordinal).Replace("$ORIGIN", directory, StringComparison.Ordinal));
            }
            else if (d.StartsWith('/')) search.Add(d);
        }
        search.AddRange(ElfDependencies.DefaultDirectories(list.Machine));
        foreach (var name in list.Needed)
        {
            if (name.Contains('/'))
            {
                if (name.StartsWith('/')) Add(name, next);
                continue;
            }
            foreach (var dir in search)
            {
                if (Add($"{dir.TrimEnd('/')}/{name}", next) != Found.No) break;
            }
        }
        return true;
    }

    private enum Found { No, New, Known }

    private Found Add(string path, List<(RafsChunk[] Chunks, ulong Size, string? Dir)> next)
    {
        if (ImagePaths.Resolve(image, path) is not { } ino || image.GetAttr(ino, out var attr) != 0 || (attr.Mode & S_IFMT) != S_IFREG) return Found.No;
        if (_seen.Count >= MaxFiles || !_seen.TryAdd(ino, 0)) return Found.Known;
        var chunks = new List<RafsChunk>();
        if (image.GetChunks(ino, chunks) != 0) return Found.Known;
        next.Add((chunks.ToArray(), attr.Size, path[..path.LastIndexOf('/')] is { Length: > 0 } d ? d : "/"));
        Interlocked.Increment(ref _files);
        Interlocked.Add(ref _bytes, (long)Math.Min(attr.Size, MaxBytesPerFile));
        return Found.New;
    }

    /// <summary>The chunks of a library fetched ahead: all of it, or the first <see cref="MaxBytesPerFile"/>.</summary>
    private static RafsChunk[] Head(RafsChunk[] chunks)
    {
        int n = 0;
        while (n < chunks.Length && chunks[n].FileOffset < MaxBytesPerFile) n++;
        return n == chunks.Length ? chunks : chunks[..n];
    }
}
