using System.Text;
using VirtioFs.Oci;
using VirtioFs.Oci.Tests.Support;
using Xunit;

namespace VirtioFs.Oci.Tests;

/// <summary>A registry (or a static file server posing as one) may label a manifest application/json; the client then
/// takes the media type from the document, so an index is still walked as an index.</summary>
public sealed class ManifestMediaTypeTests
{
    [Theory]
    [InlineData("application/json")]
    [InlineData("text/plain")]
    [InlineData(null)]
    public async Task A_generic_content_type_is_replaced_by_the_documents_own(string? contentType)
    {
        byte[] index = Encoding.UTF8.GetBytes("""{"schemaVersion":2,"manifests":[]}""");
        byte[] manifest = Encoding.UTF8.GetBytes("""{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}""");
        using var server = new TestHttpServer(req =>
        {
            byte[] body = req.Path.EndsWith("/index", StringComparison.Ordinal) ? index : manifest;
            var r = new TestResponse(200, body);
            if (contentType is not null) r.With("Content-Type", contentType);
            return Task.FromResult(r);
        });
        server.Start();
        using var c = new RegistryClient(new RegistryOptions { Host = server.Authority, Repository = "vfs/sniff" });
        Assert.Equal(OciMediaTypes.ImageIndex, (await c.GetManifestAsync("index")).MediaType);
        Assert.Equal(OciMediaTypes.DockerManifest, (await c.GetManifestAsync("manifest")).MediaType);
    }
}
