using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using VirtioFs.Fuse;
using VirtioFs.Passthrough;
using VirtioFs.Rafs;
using VirtioFs.RafsFs;
using static VirtioFs.Fuzz.FuseRequest;

namespace VirtioFs.Fuzz;

/// <summary>
/// FUSE requests as a guest driver (or a hostile guest) puts them on the queue, decoded and dispatched by the real
/// <see cref="FuseServer"/> to a real filesystem: the passthrough over a fresh temp share per input, or the RAFS image
/// filesystem over a small image built at start. The server is INITed first; then each record of the input is one
/// request: <c>u16 length | u8 reply-space class (bit 7: split it in two) | u8 cut (split the request there) | bytes</c>.
/// <see cref="FuseServer.Handle"/> catches everything, so the target checks every reply instead: the unique echoed,
/// the length within the reply space and equal to out.len, an error that is 0 or a valid -errno with no body, no
/// reply for FORGET/BATCH_FORGET/INTERRUPT, and no exception logged. The passthrough also must not leak an fd or touch
/// the sentinel beside the share.
/// </summary>
public sealed unsafe class FuseTarget : IFuzzTarget
{
    public enum Backing
    {
        Passthrough,
        Rafs,
    }

    /// <summary>Reply space per class: none, shorter than out_header, exact header, entry_out, a page, 64 KiB.</summary>
    private static readonly int[] ReplySizes = [0, 8, 16, 24, 32, 80, 144, 4096, 65536 + 16];
    private const int MaxErrno = 4095;
    private const int RequestCapacity = 1 << 20;
    private const ulong HarnessFileCap = 1 << 20;

    private readonly Backing _backing;
    private readonly ExceptionWatch _watch = new();
    private readonly FuseRequestBuffers _buffers = new();
    private readonly byte* _request = (byte*)NativeMemory.Alloc(RequestCapacity);
    private readonly byte* _reply = (byte*)NativeMemory.Alloc((nuint)ReplySizes[^1]);
    private readonly string _base;
    private readonly string _sentinel;
    private readonly string _trash;
    private readonly TestImage? _image;
    private readonly RafsMount? _mount;
    private int _shares;

    public FuseTarget(Backing backing)
    {
        _backing = backing;
        _base = Directory.CreateTempSubdirectory($"vfs-fuzz-{(backing == Backing.Rafs ? "rafs" : "pt")}-").FullName;
        _sentinel = Path.Combine(_base, "outside");
        _trash = Directory.CreateDirectory(_base + "-trash").FullName;
        File.WriteAllText(_sentinel, SentinelText);
        if (backing == Backing.Rafs)
        {
            _image = TestImage.Build(Path.Combine(_base, "image"), fsVersion: 6);
            _mount = RafsMount.Open(new RafsMountOptions { Bootstrap = _image.Bootstrap, BlobDir = _image.BlobDir, Prefetch = PrefetchSource.None }, _watch);
        }
        // Warm up once so lazily opened runtime fds do not count as a leak of the first input.
        Run(Records((Init(2), 7, 0)));
        EmptyTrash();
        _warm = true;
    }

    private const string SentinelText = "beside the share; no request may read or change this\n";

    /// <summary>Set after the warm-up input: the runtime opens some fds lazily on first use.</summary>
    private readonly bool _warm;

    public string Name => _backing == Backing.Rafs ? "fuse-rafs" : "fuse-passthrough";

    public int MaxInput => 64 * 1024;

    /// <summary>Node ids the fresh filesystem hands out, in lookup order (passthrough numbers them from 2).</summary>
    public IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        ulong u = 10;
        if (_backing == Backing.Passthrough)
        {
            // LOOKUP file (2), OPEN, READ, WRITE, GETATTR, SETATTR, RELEASE; MKDIR, CREATE, RENAME, LINK, SYMLINK, READLINK, UNLINK...
            yield return ("files", Records(
                (Make(FuseOpcode.Lookup, 1, u++, Name("file")), 6, 0),
                (Make(FuseOpcode.Open, 2, u++, Bytes(new FuseOpenIn { flags = 2 })), 6, 0),
                (Make(FuseOpcode.Read, 2, u++, Bytes(new FuseReadIn { fh = 1, offset = 0, size = 4096 })), 7, 0),
                (Make(FuseOpcode.Write, 2, u++, Bytes(new FuseWriteIn { fh = 1, offset = 10, size = 5 }), "hello"u8.ToArray()), 6, 41),
                (Make(FuseOpcode.GetAttr, 2, u++, Bytes(new FuseGetattrIn { getattr_flags = 1, fh = 1 })), 7, 0),
                (Make(FuseOpcode.SetAttr, 2, u++, Bytes(new FuseSetattrIn { valid = 8, size = 3 })), 7, 0),
                (Make(FuseOpcode.Lseek, 2, u++, new byte[24]), 6, 0),
                (Make(FuseOpcode.Flush, 2, u++, Bytes(new FuseFlushIn { fh = 1 })), 6, 0),
                (Make(FuseOpcode.Release, 2, u++, Bytes(new FuseReleaseIn { fh = 1 })), 6, 0),
                (Make(FuseOpcode.Forget, 2, u++, Bytes(new FuseForgetIn { nlookup = 1 })), 0, 0)));
            yield return ("namespace", Records(
                (Make(FuseOpcode.MkDir, 1, u++, Bytes(new FuseMkdirIn { mode = 0x41ED }), Name("newdir")), 6, 0),
                (Make(FuseOpcode.Create, 2, u++, Bytes(new FuseCreateIn { flags = 0x42, mode = 0x81A4 }), Name("made")), 7, 0),
                (Make(FuseOpcode.Symlink, 2, u++, Name("sym"), Name("../made")), 6, 0),
                (Make(FuseOpcode.ReadLink, 4, u++), 7, 0),
                (Make(FuseOpcode.Link, 2, u++, Bytes(new FuseLinkIn { oldnodeid = 3 }), Name("hard")), 6, 0),
                (Make(FuseOpcode.Rename, 2, u++, Bytes(new FuseRenameIn { newdir = 1 }), Name("hard"), Name("moved")), 6, 0),
                (Make(FuseOpcode.Rename2, 1, u++, Bytes(new FuseRename2In { newdir = 2, flags = 2 }), Name("moved"), Name("made")), 6, 0),
                (Make(FuseOpcode.MkNod, 1, u++, Bytes(new FuseMknodIn { mode = 0x21B6, rdev = 0x103 }), Name("null")), 6, 0),
                (Make(FuseOpcode.Unlink, 2, u++, Name("made")), 6, 0),
                (Make(FuseOpcode.RmDir, 1, u++, Name("newdir")), 6, 0),
                (Make(FuseOpcode.BatchForget, 0, u++, Bytes(new FuseBatchForgetIn { count = 2 }),
                    Bytes(new FuseForgetOne { nodeid = 2, nlookup = 1 }), Bytes(new FuseForgetOne { nodeid = 3, nlookup = 5 })), 0, 0)));
            yield return ("dirs-xattrs", Records(
                (Make(FuseOpcode.OpenDir, 1, u++, Bytes(new FuseOpenIn())), 6, 0),
                (Make(FuseOpcode.ReadDir, 1, u++, Bytes(new FuseReadIn { fh = 1, size = 4096 })), 7, 0),
                (Make(FuseOpcode.ReadDirPlus, 1, u++, Bytes(new FuseReadIn { fh = 1, size = 4096 })), 0x87, 0),
                (Make(FuseOpcode.ReleaseDir, 1, u++, Bytes(new FuseReleaseIn { fh = 1 })), 6, 0),
                (Make(FuseOpcode.Lookup, 1, u++, Name("file")), 6, 0),
                (Make(FuseOpcode.SetXattr, 2, u++, Bytes(new FuseSetxattrIn { size = 3 }), Name("user.k"), "abc"u8.ToArray()), 6, 0),
                (Make(FuseOpcode.GetXattr, 2, u++, Bytes(new FuseGetxattrIn { size = 64 }), Name("user.k")), 7, 0),
                (Make(FuseOpcode.ListXattr, 2, u++, Bytes(new FuseGetxattrIn { size = 0 })), 6, 0),
                (Make(FuseOpcode.RemoveXattr, 2, u++, Name("user.k")), 6, 0),
                (Make(FuseOpcode.StatFs, 1, u++), 7, 0),
                (Make(FuseOpcode.Access, 2, u++, Bytes(new FuseAccessIn { mask = 4 })), 6, 0),
                (Make(FuseOpcode.Fallocate, 2, u++, Bytes(new FuseFallocateIn { fh = 1, offset = 0, length = 8192 })), 6, 0),
                (Make(FuseOpcode.Interrupt, 0, u++, Bytes(new FuseInterruptIn { unique = 3 })), 6, 0),
                (Make(FuseOpcode.Destroy, 0, u++), 6, 0)));
        }
        else
        {
            foreach (var (name, data) in RafsSeeds(u))
            {
                yield return (name, data);
            }
        }
    }

    private IEnumerable<(string, byte[])> RafsSeeds(ulong u)
    {
        RafsFileSystem fs = _mount!.FileSystem;
        var ctx = new FuseContext(0, 0, 1, 1);
        fs.Init(FuseInitFlags.None);
        // Node ids of a RAFS image are its inode slots: ask the image rather than guess.
        ulong Node(string path)
        {
            ulong node = FuseConstants.RootId;
            foreach (string part in path.Split('/'))
            {
                if (fs.Lookup(ctx, node, System.Text.Encoding.UTF8.GetBytes(part), out FuseEntry e) != 0)
                {
                    throw new InvalidOperationException($"{path} not in the test image");
                }
                node = e.NodeId;
            }
            return node;
        }
        ulong big = Node("dir/big.bin"), small = Node("small.txt"), link = Node("link"), dir = Node("dir");
        fs.Destroy();
        yield return ("read", Records(
            (Make(FuseOpcode.Lookup, 1, u++, Name("dir")), 6, 0),
            (Make(FuseOpcode.Lookup, dir, u++, Name("big.bin")), 6, 0),
            (Make(FuseOpcode.Open, big, u++, Bytes(new FuseOpenIn())), 6, 0),
            (Make(FuseOpcode.Read, big, u++, Bytes(new FuseReadIn { fh = 1, offset = 60_000, size = 8192 })), 0x88, 100),
            (Make(FuseOpcode.Release, big, u++, Bytes(new FuseReleaseIn { fh = 1 })), 6, 0),
            (Make(FuseOpcode.GetAttr, small, u++, Bytes(new FuseGetattrIn())), 7, 0),
            (Make(FuseOpcode.ReadLink, link, u++), 7, 0)));
        yield return ("dirs-xattrs", Records(
            (Make(FuseOpcode.OpenDir, dir, u++, Bytes(new FuseOpenIn())), 6, 0),
            (Make(FuseOpcode.ReadDirPlus, dir, u++, Bytes(new FuseReadIn { fh = 1, size = 4096 })), 7, 0),
            (Make(FuseOpcode.ReadDir, 1, u++, Bytes(new FuseReadIn { fh = 1, size = 80 })), 5, 0),
            (Make(FuseOpcode.ListXattr, small, u++, Bytes(new FuseGetxattrIn { size = 4096 })), 7, 0),
            (Make(FuseOpcode.GetXattr, small, u++, Bytes(new FuseGetxattrIn { size = 64 }), Name("user.fuzz")), 7, 0),
            (Make(FuseOpcode.StatFs, 1, u++), 7, 0),
            (Make(FuseOpcode.Write, small, u++, Bytes(new FuseWriteIn { fh = 1, size = 1 }), [1]), 6, 0),
            (Make(FuseOpcode.Forget, big, u++, Bytes(new FuseForgetIn { nlookup = 9 })), 0, 0)));
    }

    /// <summary>Frames requests as the target reads them.</summary>
    public static byte[] Records(params (byte[] Request, byte ReplyClass, byte Cut)[] records)
    {
        var bytes = new List<byte>();
        foreach (var (request, replyClass, cut) in records)
        {
            bytes.Add((byte)request.Length);
            bytes.Add((byte)(request.Length >> 8));
            bytes.Add(replyClass);
            bytes.Add(cut);
            bytes.AddRange(request);
        }
        return bytes.ToArray();
    }

    public void Run(ReadOnlySpan<byte> input)
    {
        string? share = null;
        IFileSystem fs;
        PassthroughFileSystem? passthrough = null;
        int fdsBefore = 0;
        if (_backing == Backing.Passthrough)
        {
            if (_shares % 256 == 255)
            {
                EmptyTrash();
            }
            fdsBefore = OpenFds.Count(IsOurs);
            share = NewShare();
            passthrough = new PassthroughFileSystem(new PassthroughOptions { SharedDir = share, Xattr = true }, _watch);
            fs = passthrough;
        }
        else
        {
            fs = _mount!.FileSystem;
        }
        try
        {
            var server = new FuseServer(fs, new FuseServerOptions(), _watch);
            Send(server, Init(), 0x7, 0);
            while (input.Length >= 4)
            {
                int length = Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(input), input.Length - 4);
                Send(server, input.Slice(4, length), input[2], input[3]);
                input = input[(4 + length)..];
            }
        }
        finally
        {
            if (passthrough is not null)
            {
                passthrough.Dispose();
                // A guest may create names that are not UTF-8, which .NET's Directory.Delete cannot enumerate: move the
                // share aside and let rm(1) remove the pile now and then.
                Directory.Move(share!, Path.Combine(_trash, Path.GetFileName(share!)));
            }
            else
            {
                fs.Destroy();
            }
        }
        _watch.ThrowIfSwallowed(Name);
        if (passthrough is not null)
        {
            CheckOutsideUntouched();
            int fdsAfter = OpenFds.Count(IsOurs);
            if (_warm && fdsAfter > fdsBefore)
            {
                throw new FuzzFailure($"{fdsAfter - fdsBefore} fds leaked by one input; open now: {OpenFds.Describe(IsOurs)}");
            }
        }
    }

    private void Send(FuseServer server, ReadOnlySpan<byte> request, byte replyClass, byte cut)
    {
        request.CopyTo(new Span<byte>(_request, request.Length));
        if (_backing == Backing.Passthrough)
        {
            ClampHostAllocation(new Span<byte>(_request, request.Length));
        }
        _buffers.Clear();
        int split = request.Length > 1 && cut != 0 ? 1 + cut % (request.Length - 1) : request.Length;
        _buffers.AddReadable(_request, split);
        if (split < request.Length)
        {
            _buffers.AddReadable(_request + split, request.Length - split);
        }
        int space = ReplySizes[(replyClass & 0x7f) % ReplySizes.Length];
        new Span<byte>(_reply, space).Fill(0xCC);
        if ((replyClass & 0x80) != 0 && space > 1)
        {
            int first = 1 + cut % (space - 1);
            _buffers.AddWritable(_reply, first);
            _buffers.AddWritable(_reply + first, space - first);
        }
        else if (space > 0)
        {
            _buffers.AddWritable(_reply, space);
        }

        FuseReply reply = server.Handle(_buffers);
        _watch.ThrowIfSwallowed(Name);
        CheckReply(request, space, reply);
    }

    private void CheckReply(ReadOnlySpan<byte> request, int space, FuseReply reply)
    {
        if (request.Length < InHeaderSize)
        {
            if (reply.HasReply)
            {
                throw new FuzzFailure($"a {request.Length}-byte request (shorter than fuse_in_header) was answered");
            }
            return;
        }
        FuseInHeader h = MemoryMarshal.Read<FuseInHeader>(request);
        var op = (FuseOpcode)h.opcode;
        if (!reply.HasReply)
        {
            return; // no reply is always allowed: the chain goes back with length 0 and the guest sees an error
        }
        if (op is FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt or FuseOpcode.NotifyReply)
        {
            throw new FuzzFailure($"{op} got a reply (the kernel expects none)");
        }
        if (reply.Length < 16 || reply.Length > space)
        {
            throw new FuzzFailure($"{op}: reply of {reply.Length} bytes in {space} bytes of reply space");
        }
        FuseOutHeader o = MemoryMarshal.Read<FuseOutHeader>(new ReadOnlySpan<byte>(_reply, 16));
        if (o.len != (uint)reply.Length)
        {
            throw new FuzzFailure($"{op}: out.len {o.len} but {reply.Length} bytes written");
        }
        if (o.unique != h.unique)
        {
            throw new FuzzFailure($"{op}: unique {o.unique} answered for request {h.unique}");
        }
        if (o.error > 0 || o.error < -MaxErrno)
        {
            throw new FuzzFailure($"{op}: error {o.error} is not 0 or a -errno");
        }
        if (o.error != 0 && reply.Length != 16)
        {
            throw new FuzzFailure($"{op}: error {o.error} with a {reply.Length - 16}-byte body");
        }
    }

    /// <summary>
    /// FALLOCATE and COPY_FILE_RANGE are honoured by the passthrough as asked (a guest may fill its share); keep the
    /// fuzzer's lengths to 1 MiB so a run cannot fill this machine's disk. Offsets stay as they are.
    /// </summary>
    private static void ClampHostAllocation(Span<byte> request)
    {
        if (request.Length < InHeaderSize)
        {
            return;
        }
        uint opcode = BinaryPrimitives.ReadUInt32LittleEndian(request[4..]);
        int at = opcode switch
        {
            (uint)FuseOpcode.Fallocate => InHeaderSize + 16,     // fuse_fallocate_in.length
            (uint)FuseOpcode.CopyFileRange => InHeaderSize + 40, // fuse_copy_file_range_in.len
            _ => -1,
        };
        if (at >= 0 && request.Length >= at + 8 && BinaryPrimitives.ReadUInt64LittleEndian(request[at..]) > HarnessFileCap)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(request[at..], HarnessFileCap);
        }
    }

    /// <summary>A fresh share: a file, a directory with a file, a symlink out to /etc/passwd and one up to the sentinel.</summary>
    private string NewShare()
    {
        string share = Path.Combine(_base, $"share-{_shares++}");
        Directory.CreateDirectory(Path.Combine(share, "dir"));
        File.WriteAllBytes(Path.Combine(share, "file"), new byte[5000]);
        File.WriteAllText(Path.Combine(share, "dir", "inner"), "inner\n");
        File.CreateSymbolicLink(Path.Combine(share, "link"), "/etc/passwd");
        File.CreateSymbolicLink(Path.Combine(share, "up"), "../outside");
        return share;
    }

    private void CheckOutsideUntouched()
    {
        string[] entries = Directory.GetFileSystemEntries(_base);
        if (entries.Length != 1 || entries[0] != _sentinel || File.ReadAllText(_sentinel) != SentinelText)
        {
            throw new FuzzFailure($"something outside the share changed: {string.Join(", ", entries)}");
        }
    }



    /// <summary>Fds into the shares (every fd the passthrough opens is one).</summary>
    private bool IsOurs(string target) => target.StartsWith(_base, StringComparison.Ordinal) || target.StartsWith(_trash, StringComparison.Ordinal);

    public void Dispose()
    {
        _mount?.Dispose();
        _buffers.Dispose();
        NativeMemory.Free(_request);
        NativeMemory.Free(_reply);
        Directory.Delete(_base, recursive: true);
        EmptyTrash();
        Directory.Delete(_trash);
    }

    private void EmptyTrash()
    {
        foreach (string dir in Directory.GetDirectories(_trash))
        {
            using var rm = System.Diagnostics.Process.Start("rm", ["-rf", "--one-file-system", dir]);
            rm.WaitForExit();
        }
    }
}
