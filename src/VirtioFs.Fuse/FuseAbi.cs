// FUSE wire ABI, as defined by Linux include/uapi/linux/fuse.h (protocol 7.38).
//
// Every request starts with a fuse_in_header (40 bytes) followed by opcode-specific arguments (fixed structs and
// NUL-terminated names), then optional extensions (total_extlen * 8 bytes). Every reply starts with a fuse_out_header
// (16 bytes, error = -errno) followed by an opcode-specific body. All fields are native (little) endian: /dev/fuse and
// virtio-fs (virtio spec 1.2, 5.11.6) both carry the kernel's in-memory layout.
//
// Struct and field names deliberately match the C header so a generator can emit static_asserts against it.
#pragma warning disable CA1707 // C field names keep their underscores on purpose.
#pragma warning disable CA1051 // Wire structs expose public fields.
#pragma warning disable CA1815 // Wire structs do not need equality.
#pragma warning disable IDE1006 // Naming: C names.
using System.Runtime.InteropServices;

namespace VirtioFs.Fuse;

/// <summary>Protocol version and well-known constants of fuse.h.</summary>
public static class FuseConstants
{
    public const uint KernelVersion = 7;
    /// <summary>The minor we implement (fuse.h FUSE_KERNEL_MINOR_VERSION as shipped with Linux 6.x headers).</summary>
    public const uint KernelMinorVersion = 38;
    /// <summary>Oldest minor accepted: the same floor as Rust virtiofsd (7.27 brought the structs we rely on).</summary>
    public const uint MinimumMinorVersion = 27;
    public const ulong RootId = 1;
    /// <summary>fuse.h FUSE_NOTIFY_RESEND (Linux 6.9, protocol 7.40): replay the requests read but never answered.</summary>
    public const int NotifyResend = 7;
    /// <summary>fuse.h FUSE_UNIQUE_RESEND: bit 63 of a resent request's unique.</summary>
    public const ulong UniqueResend = 1UL << 63;
    /// <summary>fuse.h FUSE_MIN_READ_BUFFER: a /dev/fuse read buffer must be at least this large.</summary>
    public const int MinReadBuffer = 8192;
    /// <summary>Linux FUSE_MAX_MAX_PAGES default (fs/fuse/fuse_i.h); init_out.max_pages above it is clamped by the kernel.</summary>
    public const int MaxMaxPages = 256;

    // fuse_setattr_in.valid
    public const uint FATTR_MODE = 1 << 0;
    public const uint FATTR_UID = 1 << 1;
    public const uint FATTR_GID = 1 << 2;
    public const uint FATTR_SIZE = 1 << 3;
    public const uint FATTR_ATIME = 1 << 4;
    public const uint FATTR_MTIME = 1 << 5;
    public const uint FATTR_FH = 1 << 6;
    public const uint FATTR_ATIME_NOW = 1 << 7;
    public const uint FATTR_MTIME_NOW = 1 << 8;
    public const uint FATTR_LOCKOWNER = 1 << 9;
    public const uint FATTR_CTIME = 1 << 10;
    public const uint FATTR_KILL_SUIDGID = 1 << 11;

    // fuse_open_out.open_flags
    public const uint FOPEN_DIRECT_IO = 1 << 0;
    public const uint FOPEN_KEEP_CACHE = 1 << 1;
    public const uint FOPEN_NONSEEKABLE = 1 << 2;
    public const uint FOPEN_CACHE_DIR = 1 << 3;
    public const uint FOPEN_STREAM = 1 << 4;
    public const uint FOPEN_NOFLUSH = 1 << 5;
    public const uint FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6;

    public const uint FUSE_RELEASE_FLUSH = 1 << 0;
    public const uint FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1;
    public const uint FUSE_GETATTR_FH = 1 << 0;
    public const uint FUSE_LK_FLOCK = 1 << 0;
    public const uint FUSE_WRITE_CACHE = 1 << 0;
    public const uint FUSE_WRITE_LOCKOWNER = 1 << 1;
    public const uint FUSE_WRITE_KILL_SUIDGID = 1 << 2;
    public const uint FUSE_READ_LOCKOWNER = 1 << 1;
    public const uint FUSE_FSYNC_FDATASYNC = 1 << 0;
    public const uint FUSE_ATTR_SUBMOUNT = 1 << 0;
    public const uint FUSE_ATTR_DAX = 1 << 1;
    public const uint FUSE_OPEN_KILL_SUIDGID = 1 << 0;
    public const uint FUSE_SETXATTR_ACL_KILL_SGID = 1 << 0;
}

/// <summary>fuse.h enum fuse_opcode.</summary>
public enum FuseOpcode : uint
{
    Lookup = 1, Forget = 2, GetAttr = 3, SetAttr = 4, ReadLink = 5, Symlink = 6, MkNod = 8, MkDir = 9, Unlink = 10,
    RmDir = 11, Rename = 12, Link = 13, Open = 14, Read = 15, Write = 16, StatFs = 17, Release = 18, Fsync = 20,
    SetXattr = 21, GetXattr = 22, ListXattr = 23, RemoveXattr = 24, Flush = 25, Init = 26, OpenDir = 27, ReadDir = 28,
    ReleaseDir = 29, FsyncDir = 30, GetLk = 31, SetLk = 32, SetLkW = 33, Access = 34, Create = 35, Interrupt = 36,
    Bmap = 37, Destroy = 38, Ioctl = 39, Poll = 40, NotifyReply = 41, BatchForget = 42, Fallocate = 43,
    ReadDirPlus = 44, Rename2 = 45, Lseek = 46, CopyFileRange = 47, SetupMapping = 48, RemoveMapping = 49,
    SyncFs = 50, TmpFile = 51,
}

/// <summary>fuse.h INIT flags; bits 32..63 travel in flags2 when FUSE_INIT_EXT is set.</summary>
[Flags]
public enum FuseInitFlags : ulong
{
    None = 0,
    AsyncRead = 1UL << 0,
    PosixLocks = 1UL << 1,
    FileOps = 1UL << 2,
    AtomicOTrunc = 1UL << 3,
    ExportSupport = 1UL << 4,
    BigWrites = 1UL << 5,
    DontMask = 1UL << 6,
    SpliceWrite = 1UL << 7,
    SpliceMove = 1UL << 8,
    SpliceRead = 1UL << 9,
    FlockLocks = 1UL << 10,
    HasIoctlDir = 1UL << 11,
    AutoInvalData = 1UL << 12,
    DoReaddirplus = 1UL << 13,
    ReaddirplusAuto = 1UL << 14,
    AsyncDio = 1UL << 15,
    WritebackCache = 1UL << 16,
    NoOpenSupport = 1UL << 17,
    ParallelDirops = 1UL << 18,
    HandleKillpriv = 1UL << 19,
    PosixAcl = 1UL << 20,
    AbortError = 1UL << 21,
    MaxPages = 1UL << 22,
    CacheSymlinks = 1UL << 23,
    NoOpendirSupport = 1UL << 24,
    ExplicitInvalData = 1UL << 25,
    MapAlignment = 1UL << 26,
    Submounts = 1UL << 27,
    HandleKillprivV2 = 1UL << 28,
    SetxattrExt = 1UL << 29,
    InitExt = 1UL << 30,
    InitReserved = 1UL << 31,
    SecurityCtx = 1UL << 32,
    HasInodeDax = 1UL << 33,
    HasExpireOnly = 1UL << 35,
    /// <summary>FUSE_DIRECT_IO_ALLOW_MMAP (7.39, Linux 6.6): shared mmap of FOPEN_DIRECT_IO files.</summary>
    DirectIoAllowMmap = 1UL << 36,
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseAttr
{
    public ulong ino;
    public ulong size;
    public ulong blocks;
    public ulong atime;
    public ulong mtime;
    public ulong ctime;
    public uint atimensec;
    public uint mtimensec;
    public uint ctimensec;
    public uint mode;
    public uint nlink;
    public uint uid;
    public uint gid;
    public uint rdev;
    public uint blksize;
    public uint flags;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct FuseKstatfs
{
    public ulong blocks;
    public ulong bfree;
    public ulong bavail;
    public ulong files;
    public ulong ffree;
    public uint bsize;
    public uint namelen;
    public uint frsize;
    public uint padding;
    public fixed uint spare[6];
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseFileLock
{
    public ulong start;
    public ulong end;
    public uint type;
    public uint pid;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseEntryOut
{
    public ulong nodeid;
    public ulong generation;
    public ulong entry_valid;
    public ulong attr_valid;
    public uint entry_valid_nsec;
    public uint attr_valid_nsec;
    public FuseAttr attr;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseForgetIn { public ulong nlookup; }
[StructLayout(LayoutKind.Sequential)] public struct FuseForgetOne { public ulong nodeid; public ulong nlookup; }
[StructLayout(LayoutKind.Sequential)] public struct FuseBatchForgetIn { public uint count; public uint dummy; }
[StructLayout(LayoutKind.Sequential)] public struct FuseGetattrIn { public uint getattr_flags; public uint dummy; public ulong fh; }

[StructLayout(LayoutKind.Sequential)]
public struct FuseAttrOut
{
    public ulong attr_valid;
    public uint attr_valid_nsec;
    public uint dummy;
    public FuseAttr attr;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseMknodIn { public uint mode; public uint rdev; public uint umask; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseMkdirIn { public uint mode; public uint umask; }
[StructLayout(LayoutKind.Sequential)] public struct FuseRenameIn { public ulong newdir; }
[StructLayout(LayoutKind.Sequential)] public struct FuseRename2In { public ulong newdir; public uint flags; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseLinkIn { public ulong oldnodeid; }

[StructLayout(LayoutKind.Sequential)]
public struct FuseSetattrIn
{
    public uint valid;
    public uint padding;
    public ulong fh;
    public ulong size;
    public ulong lock_owner;
    public ulong atime;
    public ulong mtime;
    public ulong ctime;
    public uint atimensec;
    public uint mtimensec;
    public uint ctimensec;
    public uint mode;
    public uint unused4;
    public uint uid;
    public uint gid;
    public uint unused5;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseOpenIn { public uint flags; public uint open_flags; }
[StructLayout(LayoutKind.Sequential)] public struct FuseCreateIn { public uint flags; public uint mode; public uint umask; public uint open_flags; }
[StructLayout(LayoutKind.Sequential)] public struct FuseOpenOut { public ulong fh; public uint open_flags; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseReleaseIn { public ulong fh; public uint flags; public uint release_flags; public ulong lock_owner; }
[StructLayout(LayoutKind.Sequential)] public struct FuseFlushIn { public ulong fh; public uint unused; public uint padding; public ulong lock_owner; }

[StructLayout(LayoutKind.Sequential)]
public struct FuseReadIn
{
    public ulong fh;
    public ulong offset;
    public uint size;
    public uint read_flags;
    public ulong lock_owner;
    public uint flags;
    public uint padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseWriteIn
{
    public ulong fh;
    public ulong offset;
    public uint size;
    public uint write_flags;
    public ulong lock_owner;
    public uint flags;
    public uint padding;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseWriteOut { public uint size; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseStatfsOut { public FuseKstatfs st; }
[StructLayout(LayoutKind.Sequential)] public struct FuseFsyncIn { public ulong fh; public uint fsync_flags; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseSetxattrIn { public uint size; public uint flags; public uint setxattr_flags; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseGetxattrIn { public uint size; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseGetxattrOut { public uint size; public uint padding; }
/// <summary>fuse.h struct fuse_ext_header (also the layout of fuse_secctx_header and fuse_secctx: two u32).</summary>
[StructLayout(LayoutKind.Sequential)] public struct FuseExtHeader { public uint size; public uint type; }

[StructLayout(LayoutKind.Sequential)]
public struct FuseLkIn
{
    public ulong fh;
    public ulong owner;
    public FuseFileLock lk;
    public uint lk_flags;
    public uint padding;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseLkOut { public FuseFileLock lk; }
[StructLayout(LayoutKind.Sequential)] public struct FuseAccessIn { public uint mask; public uint padding; }

[StructLayout(LayoutKind.Sequential)]
public unsafe struct FuseInitIn
{
    public uint major;
    public uint minor;
    public uint max_readahead;
    public uint flags;
    public uint flags2;
    public fixed uint unused[11];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct FuseInitOut
{
    public uint major;
    public uint minor;
    public uint max_readahead;
    public uint flags;
    public ushort max_background;
    public ushort congestion_threshold;
    public uint max_write;
    public uint time_gran;
    public ushort max_pages;
    public ushort map_alignment;
    public uint flags2;
    public fixed uint unused[7];
}

[StructLayout(LayoutKind.Sequential)] public struct FuseInterruptIn { public ulong unique; }

[StructLayout(LayoutKind.Sequential)]
public struct FuseFallocateIn
{
    public ulong fh;
    public ulong offset;
    public ulong length;
    public uint mode;
    public uint padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseInHeader
{
    public uint len;
    public uint opcode;
    public ulong unique;
    public ulong nodeid;
    public uint uid;
    public uint gid;
    public uint pid;
    public ushort total_extlen;
    public ushort padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseOutHeader
{
    public uint len;
    public int error;
    public ulong unique;
}

/// <summary>fuse_dirent without its flexible name (24 bytes); the name follows, padded to 8 bytes.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FuseDirent
{
    public ulong ino;
    public ulong off;
    public uint namelen;
    public uint type;
}

/// <summary>fuse_direntplus without the dirent name: entry_out then dirent header (152 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FuseDirentplus
{
    public FuseEntryOut entry_out;
    public FuseDirent dirent;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseLseekIn { public ulong fh; public ulong offset; public uint whence; public uint padding; }
[StructLayout(LayoutKind.Sequential)] public struct FuseLseekOut { public ulong offset; }

[StructLayout(LayoutKind.Sequential)]
public struct FuseCopyFileRangeIn
{
    public ulong fh_in;
    public ulong off_in;
    public ulong nodeid_out;
    public ulong fh_out;
    public ulong off_out;
    public ulong len;
    public ulong flags;
}

[StructLayout(LayoutKind.Sequential)] public struct FuseSyncfsIn { public ulong padding; }
