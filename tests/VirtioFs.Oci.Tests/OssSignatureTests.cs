using VirtioFs.Oci.ObjectStorage;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>
/// The OSS header signature against the worked example of Alibaba Cloud's OSS API reference, "Include signatures in the
/// Authorization header" (help.aliyun.com/document_detail/31951.html, "Detail analysis"): AccessKeyId
/// 44CF9590006BF252F707, secret OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV, PUT /nelson in bucket oss-example with two
/// x-oss- headers; the document's signature is 26NBxoKdsyly4EDv6inkoDft/yA=.
/// </summary>
public sealed class OssSignatureTests
{
    [Fact]
    public void The_documented_PUT_example_signs_as_published()
    {
        var headers = new KeyValuePair<string, string>[]
        {
            new("Content-Md5", "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM="), new("Content-Type", "text/html"),
            new("Date", "Thu, 17 Nov 2005 18:49:58 GMT"), new("Host", "oss-example.oss-cn-hangzhou.aliyuncs.com"),
            new("X-OSS-Meta-Author", "foo@bar.com"), new("X-OSS-Magic", "abracadabra"),
        };
        string toSign = OssSignature.StringToSign("PUT", "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=", "text/html",
            "Thu, 17 Nov 2005 18:49:58 GMT", headers, "oss-example", "nelson", "");
        Assert.Equal("PUT\nODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=\ntext/html\nThu, 17 Nov 2005 18:49:58 GMT\n"
            + "x-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n/oss-example/nelson", toSign);
        Assert.Equal("OSS 44CF9590006BF252F707:26NBxoKdsyly4EDv6inkoDft/yA=",
            OssSignature.Authorization("44CF9590006BF252F707", "OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV", toSign));
    }

    [Fact]
    public void Only_sub_resources_are_signed_sorted_and_a_bare_one_without_equals()
    {
        // The reference's CanonicalizedResource rules: sub-resources such as uploadId and partNumber, sorted by name;
        // other query parameters (prefix, max-keys) are not part of it.
        Assert.Equal("/b/k?partNumber=2&uploadId=X1", OssSignature.CanonicalizedResource("b", "k", "uploadId=X1&partNumber=2&prefix=p"));
        Assert.Equal("/b/k?uploads", OssSignature.CanonicalizedResource("b", "k", "uploads"));
        Assert.Equal("/b/k", OssSignature.CanonicalizedResource("b", "k", "max-keys=2"));
        // nydus oss.rs reads with no x-oss- header: the Date line is followed by the resource at once.
        Assert.Equal("GET\n\n\nThu, 17 Nov 2005 18:49:58 GMT\n/oss-example/nelson",
            OssSignature.StringToSign("GET", "", "", "Thu, 17 Nov 2005 18:49:58 GMT", [], "oss-example", "nelson", ""));
    }
}
