using System.Buffers;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Threading.Channels;

namespace VirtioFs.Rafs.Builder;

/// <summary>A 32-byte digest as a dictionary key.</summary>
public readonly record struct DigestKey(ulong A, ulong B, ulong C, ulong D)
{
    public static DigestKey From(ReadOnlySpan<byte> d) => new(
        BitConverter.ToUInt64(d), BitConverter.ToUInt64(d[8..]), BitConverter.ToUInt64(d[16..]), BitConverter.ToUInt64(d[24..]));
}

/// <summary>Counters the builder reports.</summary>
public sealed class BuildStats
{
    public long Files;
    public long Chunks;
    public long UniqueChunks;
    public long DictChunks;
    public long BytesIn;
    public long BytesOut;
}

/// <summary>The data blob a build wrote.</summary>
public sealed record BlobOutput(string BlobId, string Path, ulong CompressedSize, ulong UncompressedSize, uint ChunkCount,
    Compressor CiCompressor, ulong CiOffset, ulong CiCompressedSize, ulong CiUncompressedSize);

/// <summary>
/// Splits files into fixed-size chunks, hashes and compresses them on all cores, and stores each distinct digest
/// once. Workers run ahead in parallel while one writer consumes results strictly in input order, so blob layout,
/// and therefore the blob id, is deterministic. A chunk known before the build (chunk dictionary) is referenced,
/// not stored. Blob layout follows nydus's ALIGNED feature: uncompressed offsets are 4 KiB aligned; with
/// compressor none the data is padded so compressed offset == uncompressed offset, letting EROFS read the blob
/// as a device.
/// </summary>
public sealed class Chunker
{
    private readonly uint _chunkSize;
    private readonly Compressor _compressor;
    private readonly Digester _digester;
    private readonly ConcurrentDictionary<DigestKey, ChunkRecord> _known = new();
    private readonly ConcurrentDictionary<int, byte[]> _zeroDigests = new();
    private readonly uint _blobIndex;
    [ThreadStatic] private static ZstdSharp.Compressor? t_zstd;

    public Chunker(uint chunkSize, Compressor compressor, Digester digester, uint newBlobIndex, IEnumerable<ChunkRecord>? dictionary)
    {
        _chunkSize = chunkSize;
        _compressor = compressor;
        _digester = digester;
        _blobIndex = newBlobIndex;
        if (dictionary is not null)
        {
            foreach (var c in dictionary) _known.TryAdd(DigestKey.From(c.Digest), c);
        }
    }

    public BuildStats Stats { get; } = new();

    private sealed class Work
    {
        public required BuildInode File;
        public required int Index;
        public required byte[] Data;
        public required int Length;
        public required FileHandleRef Handle;
        public required long Offset;
        public required string Path;
        public byte[] Digest = new byte[Codec.DigestSize];
        public byte[]? Compressed;
        public int CompressedLength;
    }

    /// <summary>Chunks every file and writes new chunks to a blob in <paramref name="blobDir"/>; returns null when
    /// no new chunk was stored.</summary>
    public BlobOutput? Run(IReadOnlyList<BuildInode> files, string blobDir)
    {
        Directory.CreateDirectory(blobDir);
        string tmp = Path.Combine(blobDir, $".blob-{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        var channel = Channel.CreateBounded<Task<Work>>(new BoundedChannelOptions(Environment.ProcessorCount * 8) { SingleReader = true, SingleWriter = true });
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        ulong compOff = 0, uncompOff = 0;
        uint count = 0;
        var stored = new List<ChunkRecord>();
        // The whole-file digest of a file of several chunks, fed here as its chunks arrive in file order: the data is
        // in memory once, so the merkle row's file digest costs a hash, not a second read.
        Codec.Incremental? fileHash = null;
        var producer = Task.Run(async () =>
        {
            try
            {
                foreach (var f in files)
                {
                    Interlocked.Increment(ref Stats.Files);
                    if (f.Data is not { } data || data.Length == 0) continue;
                    int n = checked((int)(((ulong)data.Length + _chunkSize - 1) / _chunkSize));
                    f.Chunks = new ChunkRecord[n];
                    // One handle per file, shared by its chunk tasks (reads run in the workers, in parallel);
                    // the writer closes it after the file's last chunk.
                    var h = new FileHandleRef(DirectorySource.OpenData(data.Path), n);
                    for (int i = 0; i < n; i++)
                    {
                        long off = (long)i * _chunkSize;
                        int len = (int)Math.Min(_chunkSize, data.Length - off);
                        var w = new Work { File = f, Index = i, Data = ArrayPool<byte>.Shared.Rent(len), Length = len, Handle = h, Offset = data.Offset + off, Path = data.Path };
                        await channel.Writer.WriteAsync(Task.Run(() => Process(w))).ConfigureAwait(false);
                    }
                }
                channel.Writer.Complete();
            }
            catch (Exception e)
            {
                channel.Writer.Complete(e);
            }
        });

        using (var blob = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        {
            var pad = new byte[V6Pad];
            try
            {
                while (channel.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
                {
                    while (channel.Reader.TryRead(out var t))
                    {
                        var w = t.GetAwaiter().GetResult();
                        Stats.Chunks++;
                        Stats.BytesIn += w.Length;
                        var key = DigestKey.From(w.Digest);
                        if (_known.TryGetValue(key, out var rec))
                        {
                            if (rec.BlobIndex != _blobIndex) Stats.DictChunks++;
                        }
                        else
                        {
                            rec = new ChunkRecord
                            {
                                Digest = w.Digest,
                                BlobIndex = _blobIndex,
                                Index = count++,
                                UncompressedSize = (uint)w.Length,
                                UncompressedOffset = uncompOff,
                                CompressedOffset = compOff,
                            };
                            ReadOnlySpan<byte> bytes;
                            if (w.Compressed is not null)
                            {
                                bytes = w.Compressed.AsSpan(0, w.CompressedLength);
                                rec.Flags = ChunkFlags.Compressed;
                            }
                            else
                            {
                                bytes = w.Data.AsSpan(0, w.Length);
                            }
                            rec.CompressedSize = (uint)bytes.Length;
                            blob.Write(bytes);
                            sha.AppendData(bytes);
                            compOff += (ulong)bytes.Length;
                            if (_compressor == Compressor.None)
                            {
                                // Pad so the next chunk starts on a 4 KiB block: EROFS addresses blobs in blocks.
                                int p = (int)(AlignUp(compOff, V6Pad) - compOff);
                                blob.Write(pad, 0, p);
                                sha.AppendData(pad, 0, p);
                                compOff += (ulong)p;
                            }
                            uncompOff = AlignUp(uncompOff + (ulong)w.Length, V6Pad);
                            _known[key] = rec;
                            stored.Add(rec);
                            Stats.UniqueChunks++;
                        }
                        w.File.Chunks[w.Index] = rec;
                        int chunksOfFile = w.File.Chunks.Length;
                        if (chunksOfFile == 1)
                        {
                            w.File.FileDigest = w.Digest; // one chunk: its digest is the digest of the whole file
                        }
                        else
                        {
                            if (w.Index == 0) fileHash = new Codec.Incremental(_digester);
                            fileHash!.Update(w.Data.AsSpan(0, w.Length));
                            if (w.Index == chunksOfFile - 1)
                            {
                                w.File.FileDigest = new byte[Codec.DigestSize];
                                fileHash.Finish(w.File.FileDigest);
                                fileHash.Dispose();
                                fileHash = null;
                            }
                        }
                        ArrayPool<byte>.Shared.Return(w.Data);
                        if (w.Compressed is not null) ArrayPool<byte>.Shared.Return(w.Compressed);
                    }
                }
                producer.GetAwaiter().GetResult();
                if (count > 0)
                {
                    // nydus blob metadata: chunk information array, then its 4 KiB header.
                    var ci = new byte[(long)count * Layout.BlobChunkInfoV1Ondisk.Size];
                    for (int i = 0; i < stored.Count; i++)
                    {
                        var r = stored[i];
                        var e = Layout.BlobChunkInfoV1Ondisk.Encode(r.CompressedOffset, r.CompressedSize, r.UncompressedOffset, r.UncompressedSize);
                        System.Runtime.InteropServices.MemoryMarshal.Write(ci.AsSpan(i * Layout.BlobChunkInfoV1Ondisk.Size), in e);
                    }
                    var ciComp = _compressor;
                    byte[] ciBytes = ci;
                    if (ciComp != Compressor.None)
                    {
                        var dst = new byte[Codec.MaxCompressedSize(ciComp, ci.Length)];
                        using var z = ciComp == Compressor.Zstd ? new ZstdSharp.Compressor(3) : null;
                        int n = Codec.Compress(ciComp, ci, dst, z);
                        if (n > 0) ciBytes = dst.AsSpan(0, n).ToArray(); else ciComp = Compressor.None;
                    }
                    _ciOffset = compOff;
                    blob.Write(ciBytes);
                    sha.AppendData(ciBytes);
                    var header = Layout.BlobCompressionContextHeader.Build(BlobFeatures.Aligned, ciComp, count, compOff, (ulong)ciBytes.Length, (ulong)ci.Length);
                    blob.Write(header);
                    sha.AppendData(header);
                    _ciCompressor = ciComp;
                    _ciCompressedSize = (ulong)ciBytes.Length;
                    _ciUncompressedSize = (ulong)ci.Length;
                }
            }
            catch
            {
                fileHash?.Dispose();
                blob.Dispose();
                File.Delete(tmp);
                throw;
            }
        }
        Stats.BytesOut = (long)compOff;
        if (count == 0)
        {
            File.Delete(tmp);
            return null;
        }
        string id = Convert.ToHexStringLower(sha.GetHashAndReset());
        string final = Path.Combine(blobDir, id);
        File.Move(tmp, final, overwrite: true);
        return new BlobOutput(id, final, compOff, uncompOff, count, _ciCompressor, _ciOffset, _ciCompressedSize, _ciUncompressedSize);
    }

    private const int V6Pad = 4096;
    private Compressor _ciCompressor;
    private ulong _ciOffset, _ciCompressedSize, _ciUncompressedSize;

    private static ulong AlignUp(ulong v, ulong a) => checked((v + a - 1) & ~(a - 1));

    /// <summary>A file handle shared by the chunk tasks of one file; closed when every chunk is done.</summary>
    private sealed class FileHandleRef(Microsoft.Win32.SafeHandles.SafeFileHandle handle, int chunks)
    {
        public readonly Microsoft.Win32.SafeHandles.SafeFileHandle Handle = handle;
        private int _left = chunks;

        public void Release()
        {
            if (Interlocked.Decrement(ref _left) == 0) Handle.Dispose();
        }
    }

    private Work Process(Work w)
    {
        try
        {
            int got = 0;
            while (got < w.Length)
            {
                int r = RandomAccess.Read(w.Handle.Handle, w.Data.AsSpan(got, w.Length - got), w.Offset + got);
                if (r <= 0) throw new IOException($"file '{w.Path}' shrank while it was read");
                got += r;
            }
        }
        finally
        {
            w.Handle.Release();
        }
        var data = w.Data.AsSpan(0, w.Length);
        if (data.IndexOfAnyExcept((byte)0) < 0)
        {
            // Holes and zero runs: one cached digest per length, no hashing of zeros.
            var z = _zeroDigests.GetOrAdd(w.Length, len =>
            {
                var d = new byte[Codec.DigestSize];
                Codec.Hash(_digester, new byte[len], d);
                return d;
            });
            z.CopyTo(w.Digest, 0);
        }
        else
        {
            Codec.Hash(_digester, data, w.Digest);
        }
        // Chunks already stored earlier in this build (or in the dictionary) are not compressed again.
        if (_compressor != Compressor.None && !_known.ContainsKey(DigestKey.From(w.Digest)))
        {
            var dst = ArrayPool<byte>.Shared.Rent(Codec.MaxCompressedSize(_compressor, w.Length));
            ZstdSharp.Compressor? z = null;
            if (_compressor == Compressor.Zstd) z = t_zstd ??= new ZstdSharp.Compressor(3);
            int n = Codec.Compress(_compressor, data, dst, z);
            if (n > 0)
            {
                w.Compressed = dst;
                w.CompressedLength = n;
            }
            else
            {
                ArrayPool<byte>.Shared.Return(dst);
            }
        }
        return w;
    }
}
