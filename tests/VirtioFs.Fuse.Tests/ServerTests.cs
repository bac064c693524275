using System.Runtime.InteropServices;
using static VirtioFs.Fuse.Tests.Harness;

namespace VirtioFs.Fuse.Tests;

public class InitTests
{
    [Theory]
    [InlineData(26u, false)]
    [InlineData(0u, false)]
    [InlineData(27u, true)]
    [InlineData(31u, true)]
    [InlineData(38u, true)]
    [InlineData(40u, true)]
    public void Minor_below_27_is_refused_with_eproto(uint minor, bool accepted)
    {
        using var h = new Harness(new FakeFs());
        FuseReply r = h.Init(minor);
        Assert.True(r.HasReply);
        Assert.Equal(1UL, h.ReplyHeader.unique);
        if (accepted)
        {
            Assert.Equal(0, h.ReplyHeader.error);
            Assert.Equal(16 + 64, r.Length);
            var o = h.ReplyBody<FuseInitOut>();
            Assert.Equal(7u, o.major);
            Assert.Equal(38u, o.minor);
            Assert.True(h.Server.IsInitialized);
        }
        else
        {
            Assert.Equal(-Errno.EPROTO, h.ReplyHeader.error);
            Assert.Equal(16, r.Length);
            Assert.False(h.Server.IsInitialized);
        }
    }

    [Fact]
    public void Newer_major_gets_only_our_version_so_the_kernel_retries()
    {
        using var h = new Harness(new FakeFs());
        h.Init(major: 8, minor: 0);
        Assert.Equal(0, h.ReplyHeader.error);
        var o = h.ReplyBody<FuseInitOut>();
        Assert.Equal(7u, o.major);
        Assert.Equal(0u, o.flags);
        Assert.False(h.Server.IsInitialized);
        h.Init(major: 6);
        Assert.Equal(-Errno.EPROTO, h.ReplyHeader.error);
    }

    [Fact]
    public void Flags_are_the_intersection_of_offer_and_want()
    {
        var fs = new FakeFs();
        using var h = new Harness(fs, new FuseServerOptions { MaxWrite = 512 * 1024, AnnounceSubmounts = true });
        uint offered = (uint)(FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.WritebackCache
            | FuseInitFlags.DoReaddirplus | FuseInitFlags.PosixLocks | FuseInitFlags.Submounts | FuseInitFlags.MaxPages
            | FuseInitFlags.InitExt);
        h.Init(flags: offered, flags2: 1 /* SECURITY_CTX */);
        var o = h.ReplyBody<FuseInitOut>();
        var got = (FuseInitFlags)(o.flags | ((ulong)o.flags2 << 32));
        Assert.Equal(FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.DoReaddirplus | FuseInitFlags.Submounts
            | FuseInitFlags.MaxPages | FuseInitFlags.InitExt, got);
        Assert.Equal(got, fs.Negotiated);
        Assert.Equal(512u * 1024, o.max_write);
        Assert.Equal(128, o.max_pages);
        Assert.Equal(128u * 1024, o.max_readahead); // never more than the kernel offered
    }

    [Fact]
    public void With_the_daemon_defaults_the_guest_read_size_limits_match_the_C_virtiofsd()
    {
        // qemu tools/virtiofsd/fuse_lowlevel.c do_init: max_readahead is the kernel's offer (conn.max_readahead starts
        // at UINT_MAX), max_write = bufsize - header = FUSE_MAX_MAX_PAGES pages, max_pages = (max_write - 1) / page + 1.
        // A guest (fs/fuse/inode.c fuse_send_init) offers its bdi's ra_pages, 128 KiB by default: both daemons then
        // let it read 128 KiB readahead windows in READs of up to 1 MiB, so neither is measured with larger READs.
        using var h = new Harness(new FakeFs());
        h.Init(flags: (uint)(FuseInitFlags.AsyncRead | FuseInitFlags.MaxPages | FuseInitFlags.BigWrites));
        var o = h.ReplyBody<FuseInitOut>();
        Assert.Equal(128u * 1024, o.max_readahead);
        Assert.Equal(1024u * 1024, o.max_write);
        Assert.Equal(256, o.max_pages);
    }

    [Theory]
    [InlineData(true, true, true)]    // --allow-mmap and a kernel (6.6+) that offers it
    [InlineData(true, false, false)]  // an older guest kernel: not negotiated
    [InlineData(false, true, false)]  // not asked for: never offered back
    public void Direct_io_allow_mmap_is_negotiated_in_flags2_only_when_asked_and_offered(bool asked, bool kernelOffers, bool expected)
    {
        // virtiofsd --allow-mmap sets FUSE_DIRECT_IO_ALLOW_MMAP (bit 36, flags2 bit 4) so cache=never files, which are
        // FOPEN_DIRECT_IO, may still be mmap'd MAP_SHARED in the guest.
        var fs = new FakeFs();
        using var h = new Harness(fs, new FuseServerOptions { DirectIoAllowMmap = asked });
        h.Init(flags: (uint)(FuseInitFlags.AsyncRead | FuseInitFlags.InitExt), flags2: kernelOffers ? 1u << 4 : 0);
        var o = h.ReplyBody<FuseInitOut>();
        var got = (FuseInitFlags)(o.flags | ((ulong)o.flags2 << 32));
        Assert.Equal(expected, (got & FuseInitFlags.DirectIoAllowMmap) != 0);
        Assert.Equal(expected, (o.flags2 & (1u << 4)) != 0);
    }

    [Fact]
    public void Writeback_cache_only_when_asked()
    {
        using var h = new Harness(new FakeFs(), new FuseServerOptions { WritebackCache = true, PosixLocks = true });
        h.Init();
        var o = h.ReplyBody<FuseInitOut>();
        Assert.NotEqual(0u, o.flags & (uint)FuseInitFlags.WritebackCache);
        Assert.NotEqual(0u, o.flags & (uint)FuseInitFlags.PosixLocks);
    }

    [Fact]
    public void A_second_init_destroys_the_previous_session_first()
    {
        var fs = new FakeFs();
        using var h = new Harness(fs);
        h.Init();
        Assert.Equal(0, fs.Destroys);
        h.Init();
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Equal(1, fs.Destroys);
        Assert.True(h.Server.IsInitialized);
    }

    [Fact]
    public void Requests_before_init_are_refused()
    {
        var fs = new FakeFs();
        using var h = new Harness(fs);
        h.Send(Request(FuseOpcode.GetAttr, 1, new byte[16]));
        Assert.Equal(-Errno.EIO, h.ReplyHeader.error);
        Assert.False(h.Send(Request(FuseOpcode.Forget, 5, Bytes(new FuseForgetIn { nlookup = 1 }))).HasReply);
        Assert.Empty(fs.Calls);
        Assert.Empty(fs.Forgets);
    }
}

public class DispatchTests
{
    private static Harness Ready(FakeFs? fs = null, FuseServerOptions? options = null)
    {
        var h = new Harness(fs ?? new FakeFs(), options);
        h.Init();
        Assert.Equal(0, h.ReplyHeader.error);
        return h;
    }

    public static TheoryData<int[]> Cuts => new()
    {
        Array.Empty<int>(), new[] { 1 }, new[] { 20, 39 }, new[] { 40 }, new[] { 41, 43 }, Enumerable.Range(1, 45).ToArray(),
    };

    [Theory]
    [MemberData(nameof(Cuts))]
    public void Lookup_parses_headers_split_across_segments(int[] cuts)
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        FuseReply r = h.Send(Request(FuseOpcode.Lookup, 9, Name("hello"), unique: 0x1122334455, uid: 501, gid: 20), cuts, [3, 5, 200]);
        Assert.Equal("hello", fs.LastName);
        Assert.Equal(501u, fs.LastCtx.Uid);
        Assert.Equal(20u, fs.LastCtx.Gid);
        Assert.Equal(42u, fs.LastCtx.Pid);
        Assert.Equal("lookup 9", fs.Calls[^1]);
        Assert.Equal(16 + 128, r.Length);
        Assert.Equal(new FuseOutHeader { len = 144, error = 0, unique = 0x1122334455 }, h.ReplyHeader);
        var e = h.ReplyBody<FuseEntryOut>();
        Assert.Equal(77UL, e.nodeid);
        Assert.Equal(3UL, e.generation);
        Assert.Equal(1UL, e.entry_valid);
        Assert.Equal(500_000_000u, e.entry_valid_nsec);
        Assert.Equal(0x81A4u, e.attr.mode);
    }

    [Fact]
    public void Filesystem_errors_become_negative_errno()
    {
        using var h = Ready();
        FuseReply r = h.Send(Request(FuseOpcode.Lookup, 1, Name("missing"), unique: 99));
        Assert.Equal(16, r.Length);
        Assert.Equal(new FuseOutHeader { len = 16, error = -Errno.ENOENT, unique = 99 }, h.ReplyHeader);
    }

    [Theory]
    [InlineData(FuseOpcode.Bmap)]
    [InlineData(FuseOpcode.Ioctl)]
    [InlineData(FuseOpcode.Poll)]
    [InlineData(FuseOpcode.SetupMapping)]
    [InlineData(FuseOpcode.RemoveMapping)]
    [InlineData((FuseOpcode)7)]
    [InlineData((FuseOpcode)999)]
    [InlineData((FuseOpcode)4096)]
    [InlineData(FuseOpcode.Fallocate)] // implemented by the server, not by FakeFs: the interface default answers ENOSYS
    public void Unsupported_opcodes_get_enosys(FuseOpcode op)
    {
        using var h = Ready();
        h.Send(Request(op, 1, new byte[64]));
        Assert.Equal(-Errno.ENOSYS, h.ReplyHeader.error);
    }

    [Fact]
    public void Truncated_requests_get_an_error_and_never_crash()
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        // Shorter than fuse_in_header: nothing to answer to.
        Assert.False(h.Send(new byte[39]).HasReply);
        Assert.False(h.Send([]).HasReply);
        // len claims more than was sent.
        h.Send(Request(FuseOpcode.Lookup, 1, Name("x"), lenOverride: 4000));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        // len smaller than the header.
        h.Send(Request(FuseOpcode.Lookup, 1, Name("x"), lenOverride: 12));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        // Name without its NUL.
        h.Send(Request(FuseOpcode.Lookup, 1, "abc"u8));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        // Fixed args cut short.
        h.Send(Request(FuseOpcode.GetAttr, 1, new byte[15]));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        h.Send(Request(FuseOpcode.Read, 1, new byte[39]));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        h.Send(Request(FuseOpcode.Rename2, 1, Concat(Bytes(new FuseRename2In { newdir = 2 }), Name("only-one"))));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        // Extensions longer than the request.
        byte[] ext = Request(FuseOpcode.Lookup, 1, Name("x"));
        ext[36] = 200; // total_extlen
        h.Send(ext);
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        // No room for a reply at all.
        Assert.False(h.Send(Request(FuseOpcode.Lookup, 1, Name("x")), replySegments: [8]).HasReply);
        // A body that does not fit the reply space is an error, not an overflow.
        h.Send(Request(FuseOpcode.Lookup, 1, Name("x")), replySegments: [100]);
        Assert.Equal(-Errno.ERANGE, h.ReplyHeader.error);
        Assert.DoesNotContain(fs.Calls, c => c.StartsWith("getattr", StringComparison.Ordinal));
    }

    [Fact]
    public void Random_bytes_get_a_well_formed_reply_or_none()
    {
        // FuseServer.Handle catches whatever a filesystem throws, so "did not throw" proves nothing: check each reply
        // instead, and count the exceptions it swallowed (FileSystemThrew, event 4003) through its logger.
        var log = new ErrorCountingLogger();
        using var h = new Harness(new FakeFs(), logger: log);
        h.Init();
        Assert.Equal(0, h.ReplyHeader.error);
        var rng = new Random(1234);
        int replies = 0, dispatched = 0;
        for (int i = 0; i < 3000; i++)
        {
            byte[] req = new byte[rng.Next(0, 300)];
            rng.NextBytes(req);
            ulong unique = 0;
            if (req.Length >= 40)
            {
                // Keep len plausible half of the time so dispatch is reached; opcode in the valid range.
                if (i % 2 == 0) BitConverter.TryWriteBytes(req.AsSpan(0, 4), (uint)req.Length);
                BitConverter.TryWriteBytes(req.AsSpan(4, 4), (uint)rng.Next(1, 60));
                if (req[4] is 14 or 26) continue; // Open throws in FakeFs (tested apart); INIT would reset state
                unique = BitConverter.ToUInt64(req, 8);
                if (i % 2 == 0) dispatched++;
            }
            int[] cuts = req.Length > 2 ? [rng.Next(1, req.Length)] : [];
            int[] space = [rng.Next(0, 64), 4096];
            FuseReply r = h.Send(req, cuts, space);
            if (!r.HasReply)
            {
                continue;
            }
            replies++;
            // A reply is at least an out header, fits the space the request offered, says its own length, echoes the
            // request's unique, and carries 0 or a negated errno the kernel knows (1..4095).
            Assert.InRange(r.Length, 16, space.Sum());
            FuseOutHeader o = h.ReplyHeader;
            Assert.Equal((uint)r.Length, o.len);
            Assert.Equal(unique, o.unique);
            Assert.InRange(o.error, -4095, 0);
            if (o.error != 0)
            {
                Assert.Equal(16, r.Length);
            }
        }
        Assert.True(replies > 500, $"only {replies} replies: the generator no longer reaches dispatch");
        Assert.True(dispatched > 1000);
        Assert.Equal(0, log.Errors);
    }

    private sealed class ErrorCountingLogger : Microsoft.Extensions.Logging.ILogger
    {
        public int Errors;

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId,
            TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= Microsoft.Extensions.Logging.LogLevel.Error || exception is not null)
            {
                Interlocked.Increment(ref Errors);
            }
        }
    }

    [Fact]
    public void Filesystem_exception_becomes_eio()
    {
        using var h = Ready();
        h.Send(Request(FuseOpcode.Open, 5, Bytes(new FuseOpenIn { flags = 0 })));
        Assert.Equal(-Errno.EIO, h.ReplyHeader.error);
    }

    [Fact]
    public void Forget_and_batch_forget_have_no_reply()
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        Assert.False(h.Send(Request(FuseOpcode.Forget, 5, Bytes(new FuseForgetIn { nlookup = 3 }))).HasReply);
        // count says 3 but only two entries are present: only two are forgotten.
        byte[] batch = Concat(Bytes(new FuseBatchForgetIn { count = 3 }),
            Bytes(new FuseForgetOne { nodeid = 10, nlookup = 1 }), Bytes(new FuseForgetOne { nodeid = 11, nlookup = 2 }));
        Assert.False(h.Send(Request(FuseOpcode.BatchForget, 0, batch), [45]).HasReply);
        Assert.Equal([(5UL, 3UL), (10UL, 1UL), (11UL, 2UL)], fs.Forgets);
        Assert.False(h.Send(Request(FuseOpcode.Interrupt, 0, Bytes(new FuseInterruptIn { unique = 3 }))).HasReply);
    }

    [Fact]
    public unsafe void Write_payload_is_passed_in_place_not_copied()
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        byte[] payload = new byte[10_000];
        new Random(5).NextBytes(payload);
        byte[] req = Request(FuseOpcode.Write, 3, Concat(Bytes(new FuseWriteIn { fh = 1, offset = 0, size = 10_000 }), payload));
        FuseReply r = h.Send(req, cuts: [80, 4000]);
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Equal(10_000u, h.ReplyBody<FuseWriteOut>().size);
        Assert.Equal(24, r.Length);
        // The payload segments point into the request segments themselves.
        Assert.Equal(2, fs.WriteSegments.Count);
        Assert.Equal((nint)h.Buffers.Readable[1].Pointer, fs.WriteSegments[0].Pointer);
        Assert.Equal(4000 - 80, fs.WriteSegments[0].Length);
        Assert.Equal((nint)h.Buffers.Readable[2].Pointer, fs.WriteSegments[1].Pointer);
        Assert.Equal(req.Length - 4000, fs.WriteSegments[1].Length);

        // A size larger than the payload is refused.
        h.Send(Request(FuseOpcode.Write, 3, Concat(Bytes(new FuseWriteIn { fh = 1, size = 20_000 }), payload)));
        Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
    }

    [Fact]
    public void Read_fills_split_reply_segments()
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        FuseReply r = h.Send(Request(FuseOpcode.Read, 3, Bytes(new FuseReadIn { fh = 1, offset = 1000, size = 6000 })), replySegments: [20, 10, 8000]);
        Assert.Equal(16 + 6000, r.Length);
        Assert.Equal((uint)r.Length, h.ReplyHeader.len);
        for (int i = 0; i < 6000; i++)
        {
            Assert.Equal((byte)((1000 + i) % 251), h.Reply[16 + i]);
        }
        // Reply space smaller than the request: the read is clipped to it.
        r = h.Send(Request(FuseOpcode.Read, 3, Bytes(new FuseReadIn { fh = 1, offset = 0, size = 6000 })), replySegments: [16, 100]);
        Assert.Equal(116, r.Length);
    }

    private static List<(ulong Ino, ulong Off, string Name)> ParseDir(ReadOnlySpan<byte> body, bool plus)
    {
        var list = new List<(ulong, ulong, string)>();
        int header = plus ? 152 : 24;
        while (body.Length > 0)
        {
            int d = plus ? 128 : 0;
            var dirent = MemoryMarshal.Read<FuseDirent>(body[d..]);
            int size = (header + (int)dirent.namelen + 7) & ~7;
            Assert.True(size <= body.Length, "record runs past the reply");
            string name = System.Text.Encoding.ASCII.GetString(body.Slice(header, (int)dirent.namelen));
            Assert.True(body[(header + (int)dirent.namelen)..size].IndexOfAnyExcept((byte)0) < 0, "padding is zero");
            list.Add((dirent.ino, dirent.off, name));
            body = body[size..];
        }
        return list;
    }

    [Theory]
    [InlineData(FuseOpcode.ReadDir, 512u)]
    [InlineData(FuseOpcode.ReadDir, 4096u)]
    [InlineData(FuseOpcode.ReadDirPlus, 4096u)]
    [InlineData(FuseOpcode.ReadDirPlus, 1000u)]
    public void Readdir_fills_the_buffer_exactly_and_resumes_at_the_offset(FuseOpcode op, uint size)
    {
        var fs = new FakeFs { DirEntries = 100 };
        using var h = Ready(fs);
        bool plus = op == FuseOpcode.ReadDirPlus;
        var seen = new List<string>();
        ulong offset = 0;
        while (true)
        {
            FuseReply r = h.Send(Request(op, 1, Bytes(new FuseReadIn { fh = 1, offset = offset, size = size })), replySegments: [7, 33, 9000]);
            Assert.Equal(0, h.ReplyHeader.error);
            int body = r.Length - 16;
            Assert.True(body <= size);
            var entries = ParseDir(h.Reply.AsSpan(16, body), plus);
            if (entries.Count == 0)
            {
                break;
            }
            // Exact: the next entry (if any) would not have fitted.
            int next = (int)entries[^1].Off;
            if (next < fs.DirEntries)
            {
                int nextLen = $"name{next}".Length + next % 9;
                Assert.True(body + (((plus ? 152 : 24) + nextLen + 7) & ~7) > size, "stopped before the buffer was full");
            }
            seen.AddRange(entries.Select(e => e.Name));
            offset = entries[^1].Off;
        }
        Assert.Equal(Enumerable.Range(0, 100).Select(i => $"name{i}" + new string('x', i % 9)), seen);
    }

    [Fact]
    public void Two_name_requests_parse_both_names()
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        h.Send(Request(FuseOpcode.Rename2, 4, Concat(Bytes(new FuseRename2In { newdir = 6, flags = 1 }), Name("old"), Name("new"))), [43, 50]);
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.Equal(("old", "new"), (fs.LastName, fs.LastName2));
        Assert.Equal("rename 4 6 1", fs.Calls[^1]);
        h.Send(Request(FuseOpcode.Rename, 4, Concat(Bytes(new FuseRenameIn { newdir = 8 }), Name("a"), Name("b"))));
        Assert.Equal("rename 4 8 0", fs.Calls[^1]);
        h.Send(Request(FuseOpcode.Symlink, 4, Concat(Name("linkname"), Name("/some/target"))));
        Assert.Equal(("linkname", "/some/target"), (fs.LastName, fs.LastName2));
    }

    [Fact]
    public void Setxattr_uses_the_compat_struct_unless_extended_was_negotiated()
    {
        var fs = new FakeFs();
        using (var h = Ready(fs))
        {
            h.Send(Request(FuseOpcode.SetXattr, 2, Concat(Bytes(new FuseGetxattrIn { size = 3, padding = 1 }), Name("user.a"), "abc"u8.ToArray())));
            Assert.Equal(0, h.ReplyHeader.error);
            Assert.Equal(("user.a", "abc"), (fs.LastName, fs.LastName2));
            Assert.Equal("setxattr 1 0", fs.Calls[^1]);
            // Value size beyond the request is refused.
            h.Send(Request(FuseOpcode.SetXattr, 2, Concat(Bytes(new FuseGetxattrIn { size = 30 }), Name("user.a"), "abc"u8.ToArray())));
            Assert.Equal(-Errno.EINVAL, h.ReplyHeader.error);
        }
        using (var h = Ready(fs, new FuseServerOptions { SetxattrExt = true }))
        {
            h.Send(Request(FuseOpcode.SetXattr, 2, Concat(Bytes(new FuseSetxattrIn { size = 2, flags = 2, setxattr_flags = 1 }), Name("user.b"), "xy"u8.ToArray())));
            Assert.Equal(("user.b", "xy"), (fs.LastName, fs.LastName2));
            Assert.Equal("setxattr 2 1", fs.Calls[^1]);
        }
    }

    [Fact]
    public void Getxattr_size_protocol()
    {
        using var h = Ready();
        h.Send(Request(FuseOpcode.GetXattr, 2, Concat(Bytes(new FuseGetxattrIn { size = 0 }), Name("user.a"))));
        Assert.Equal(9u, h.ReplyBody<FuseGetxattrOut>().size);
        h.Send(Request(FuseOpcode.GetXattr, 2, Concat(Bytes(new FuseGetxattrIn { size = 4 }), Name("user.a"))));
        Assert.Equal(-Errno.ERANGE, h.ReplyHeader.error);
        FuseReply r = h.Send(Request(FuseOpcode.GetXattr, 2, Concat(Bytes(new FuseGetxattrIn { size = 100 }), Name("user.a"))));
        Assert.Equal(16 + 9, r.Length);
        Assert.Equal("the-value", System.Text.Encoding.ASCII.GetString(h.Reply, 16, 9));
    }

    [Fact]
    public void Getattr_passes_the_handle_only_when_flagged()
    {
        var fs = new FakeFs();
        using var h = Ready(fs);
        h.Send(Request(FuseOpcode.GetAttr, 12, Bytes(new FuseGetattrIn { fh = 55 })));
        Assert.Equal("getattr 12 ", fs.Calls[^1]);
        h.Send(Request(FuseOpcode.GetAttr, 12, Bytes(new FuseGetattrIn { getattr_flags = 1, fh = 55 })));
        Assert.Equal("getattr 12 55", fs.Calls[^1]);
        var a = h.ReplyBody<FuseAttrOut>();
        Assert.Equal(2UL, a.attr_valid);
        Assert.Equal(12UL, a.attr.ino);
        h.Send(Request(FuseOpcode.StatFs, 1, []));
        Assert.Equal(4096u, h.ReplyBody<FuseStatfsOut>().st.bsize);
    }

    [Fact]
    public void Destroy_ends_the_session()
    {
        using var h = Ready();
        h.Send(Request(FuseOpcode.Destroy, 0, []));
        Assert.Equal(0, h.ReplyHeader.error);
        Assert.False(h.Server.IsInitialized);
        h.Send(Request(FuseOpcode.GetAttr, 1, new byte[16]));
        Assert.Equal(-Errno.EIO, h.ReplyHeader.error);
    }
}

public class ReadOnlyFileSystemTests
{
    private sealed class TinyImage : ReadOnlyFileSystem
    {
        public override int GetAttr(in FuseContext ctx, ulong nodeId, ulong? handle, out FuseAttr attr, out TimeSpan timeout)
        {
            attr = new FuseAttr { ino = nodeId, mode = 0x416D };
            timeout = TimeSpan.FromHours(1);
            return 0;
        }
    }

    [Theory]
    [InlineData(FuseOpcode.MkDir, Errno.EROFS)]
    [InlineData(FuseOpcode.Unlink, Errno.EROFS)]
    [InlineData(FuseOpcode.SetAttr, Errno.EROFS)]
    [InlineData(FuseOpcode.Create, Errno.EROFS)]
    [InlineData(FuseOpcode.Rename2, Errno.EROFS)]
    [InlineData(FuseOpcode.Lookup, Errno.ENOSYS)]
    [InlineData(FuseOpcode.Release, 0)]
    public void Mutations_are_erofs_and_queries_default_to_enosys(FuseOpcode op, int errno)
    {
        using var h = new Harness(new TinyImage());
        h.Init();
        byte[] args = new byte[200];
        args.AsSpan(100).Fill((byte)'a');
        args.AsSpan(120, 3).Clear(); // NULs so any name parse succeeds
        args.AsSpan(130, 3).Clear();
        h.Send(Harness.Request(op, 1, args));
        Assert.Equal(-errno, h.ReplyHeader.error);
        h.Send(Harness.Request(FuseOpcode.GetAttr, 5, new byte[16]));
        Assert.Equal(0x416Du, h.ReplyBody<FuseAttrOut>().attr.mode);
    }
}
