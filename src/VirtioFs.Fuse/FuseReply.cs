namespace VirtioFs.Fuse;

/// <summary>Outcome of <see cref="FuseServer.Handle"/>: the reply length, or no reply at all.</summary>
public readonly struct FuseReply : IEquatable<FuseReply>
{
    public FuseReply(int length) => Length = length;

    /// <summary>FORGET, BATCH_FORGET, INTERRUPT, or a request too broken to answer.</summary>
    public static FuseReply None => default;

    /// <summary>Bytes written into the writable segments (out header included); 0 when there is no reply.</summary>
    public int Length { get; }
    public bool HasReply => Length > 0;

    public bool Equals(FuseReply other) => Length == other.Length;
    public override bool Equals(object? obj) => obj is FuseReply r && Equals(r);
    public override int GetHashCode() => Length;
    public static bool operator ==(FuseReply a, FuseReply b) => a.Equals(b);
    public static bool operator !=(FuseReply a, FuseReply b) => !a.Equals(b);
}
