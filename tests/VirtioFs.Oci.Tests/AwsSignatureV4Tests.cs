using VirtioFs.Oci.ObjectStorage;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>
/// The Signature V4 signer against the examples AWS publishes for it: Amazon S3 API Reference, "Signature Calculations
/// for the Authorization Header: Transferring Payload in a Single Chunk (AWS Signature Version 4)"
/// (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html), section "Examples: Signature Calculations":
/// access key AKIAIOSFODNN7EXAMPLE, secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, bucket examplebucket in us-east-1,
/// time 20130524T000000Z. The object storage tests check the signer further against AWS's own (S3Server).
/// </summary>
public sealed class AwsSignatureV4Tests
{
    private const string KeyId = "AKIAIOSFODNN7EXAMPLE";
    private const string Secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    private static readonly DateTime When = new(2013, 5, 24, 0, 0, 0, DateTimeKind.Utc);

    private static KeyValuePair<string, string> H(string name, string value) => new(name, value);

    [Fact]
    public void Example_GET_object_with_a_range_signs_as_published()
    {
        // "Example: GET Object": the first 10 bytes of test.txt.
        var headers = new[]
        {
            H("Host", "examplebucket.s3.amazonaws.com"), H("Range", "bytes=0-9"),
            H("x-amz-content-sha256", AwsSignatureV4.EmptyPayloadHash), H("x-amz-date", "20130524T000000Z"),
        };
        string canonical = AwsSignatureV4.CanonicalRequest("GET", "/test.txt", "", headers, AwsSignatureV4.EmptyPayloadHash, out string signed);
        Assert.Equal("host;range;x-amz-content-sha256;x-amz-date", signed);
        Assert.Equal(
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
            AwsSignatureV4.StringToSign(canonical, When, "20130524/us-east-1/s3/aws4_request"));
        Assert.Equal(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            AwsSignatureV4.Authorization("GET", "/test.txt", "", headers, AwsSignatureV4.EmptyPayloadHash, KeyId, Secret, "us-east-1", When));
    }

    [Fact]
    public void Example_GET_bucket_list_objects_sorts_and_encodes_the_query()
    {
        // "Example: GET Bucket (List Objects)": GET /?max-keys=2&prefix=J.
        var headers = new[]
        {
            H("Host", "examplebucket.s3.amazonaws.com"),
            H("x-amz-content-sha256", AwsSignatureV4.EmptyPayloadHash), H("x-amz-date", "20130524T000000Z"),
        };
        Assert.Equal(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
            + "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            AwsSignatureV4.Authorization("GET", "/", "prefix=J&max-keys=2", headers, AwsSignatureV4.EmptyPayloadHash, KeyId, Secret, "us-east-1", When));
    }

    [Fact]
    public void Example_GET_bucket_lifecycle_signs_a_bare_subresource_as_name_equals_empty()
    {
        // "Example: GET Bucket Lifecycle": GET /?lifecycle.
        var headers = new[]
        {
            H("Host", "examplebucket.s3.amazonaws.com"),
            H("x-amz-content-sha256", AwsSignatureV4.EmptyPayloadHash), H("x-amz-date", "20130524T000000Z"),
        };
        Assert.Equal("lifecycle=", AwsSignatureV4.CanonicalQuery("lifecycle"));
        Assert.EndsWith("Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            AwsSignatureV4.Authorization("GET", "/", "lifecycle", headers, AwsSignatureV4.EmptyPayloadHash, KeyId, Secret, "us-east-1", When));
    }

    [Fact]
    public void Object_keys_are_encoded_once_with_slashes_kept()
    {
        Assert.Equal("/nydus/sha256%3Aab_c-d.e~f", AwsSignatureV4.EncodePath("/nydus/sha256:ab_c-d.e~f"));
        Assert.Equal("test%24file.text", AwsSignatureV4.EncodePath("test$file.text"));
        Assert.Equal("a%20b%2Bc", AwsSignatureV4.EncodePath("a b+c"));
    }
}
