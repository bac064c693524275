using System.Security.Cryptography;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>A whole-blob download given the descriptor's size stops at the first byte past it (or at a lying
/// Content-Length) instead of writing whatever the registry sends until the digest check fails at the end.</summary>
public sealed class DownloadSizeTests
{
    [Theory]
    [InlineData(true)]   // Content-Length announces the oversized body
    [InlineData(false)]  // close-delimited: the size only shows while reading
    public async Task A_body_longer_than_the_descriptor_is_refused_early(bool announce)
    {
        var real = RandomNumberGenerator.GetBytes(1000);
        string digest = OciDigest.Sha256(real);
        var hostile = new byte[4 << 20]; // what a hostile registry sends instead
        using var server = new TestHttpServer(_ =>
        {
            return Task.FromResult(new TestResponse(200, hostile) { CloseDelimited = !announce });
        });
        using var c = new RegistryClient(new RegistryOptions { Host = server.Authority, Repository = "vfs/size", Transport = new() { RetryLimit = 3 } });
        using var dest = new MemoryStream();
        var e = await Assert.ThrowsAsync<RegistryException>(() => c.DownloadBlobAsync(digest, dest, expectedSize: real.Length));
        Assert.False(e.Transient);
        Assert.True(dest.Length <= real.Length, $"{dest.Length} bytes written");
        Assert.Equal(1, server.Requests); // not retried: the registry's answer will not change
    }
}
