using System.Net;
using System.Net.Sockets;
using System.Text;
using VirtioFs.Integration.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace VirtioFs.Integration.Tests;

/// <summary>
/// Kata's <c>virtio-fs-nydus</c> arrangement end to end: vfsd starts with only <c>--apisock</c>, the test mounts a
/// passthrough at /containers and two images at /rafs/&lt;cid&gt;/lowerdir through the nydusd HTTP API, and a guest reads
/// them; one image is then unmounted while the guest keeps reading the other, which must not notice.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class NydusApiGuestTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Images_are_added_and_removed_at_run_time_while_the_guest_reads()
    {
        using var one = new ImageWorkspace();
        using var two = new ImageWorkspace();
        var payload = new byte[3 << 20];
        new Random(11).NextBytes(payload);
        File.WriteAllBytes(one.S("big.bin"), payload);
        File.WriteAllText(one.S("name"), "image one\n");
        File.WriteAllText(two.S("name"), "image two\n");
        one.Build("--compressor", "lz4_block");
        two.Build();
        using var shared = new TestTree();
        File.SetUnixFileMode(shared.Root, (UnixFileMode)Convert.ToInt32("755", 8));

        string apiSocket = Path.Combine(Path.GetTempPath(), $"vfsd-api-{Guid.NewGuid():N}.sock");
        string vhostSocket = Path.Combine(Path.GetTempPath(), $"vfsd-{Guid.NewGuid():N}.sock");
        using var vfsd = ProcessRunner.Start(Repo.Vfsd, ["--apisock", apiSocket, "--socket-path", vhostSocket, "--thread-pool-size", "2"]);
        try
        {
            VfsdApi.WaitFor(() => File.Exists(apiSocket) && File.Exists(vhostSocket), vfsd);
            using var http = VfsdApi.Client(apiSocket);
            Assert.Contains("\"RUNNING\"", await http.GetStringAsync(new Uri("http://vfsd/api/v1/daemon")), StringComparison.Ordinal);
            await VfsdApi.Mount(http, "/containers", "passthrough_fs", shared.Root, "");
            await VfsdApi.Mount(http, "/rafs/c1/lowerdir", "rafs", one.Bootstrap, LocalConfig(one.BlobDir));
            await VfsdApi.Mount(http, "/rafs/c2/lowerdir", "rafs", two.Bootstrap, LocalConfig(two.BlobDir));
            // A mountpoint that is taken is refused, as nydusd does.
            using (var again = await http.PostAsync(new Uri("http://vfsd/api/v1/mount?mountpoint=/rafs/c2/lowerdir"), VfsdApi.Body("rafs", two.Bootstrap, LocalConfig(two.BlobDir))))
            {
                Assert.Equal(HttpStatusCode.BadRequest, again.StatusCode);
            }

            string expected = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(payload));
            // The guest signals through the passthrough (a file the host watches), then keeps reading image one while
            // the host unmounts image two; it checks image two is gone only after the host says so.
            string script = $$"""
                cd /mnt/vfs
                cat rafs/c1/lowerdir/name rafs/c2/lowerdir/name | sed 's/^/@@NAME /'
                ls containers > /dev/null && echo ready > containers/phase1
                n=0; ok=0
                while [ ! -e containers/umounted ] && [ $n -lt 600 ]; do
                  [ "$(sha256sum rafs/c1/lowerdir/big.bin | cut -d' ' -f1)" = "{{expected}}" ] && ok=$((ok+1))
                  echo 3 > /proc/sys/vm/drop_caches; n=$((n+1))
                done
                echo "@@READS $ok $n"
                ls rafs/c2/lowerdir/name > /dev/null 2>&1 && echo "@@C2 still-there" || echo "@@C2 gone"
                cat rafs/c1/lowerdir/name | sed 's/^/@@AFTER /'
                """;
            var guest = Task.Run(() => Guest.Run(script, [("vfs", vhostSocket)], output));
            VfsdApi.WaitFor(() => File.Exists(Path.Combine(shared.Root, "phase1")) || guest.IsCompleted, vfsd, TimeSpan.FromMinutes(5));
            Thread.Sleep(500);
            using (var delete = await http.DeleteAsync(new Uri("http://vfsd/api/v1/mount?mountpoint=/rafs/c2/lowerdir")))
            {
                Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
            }
            string metrics = await http.GetStringAsync(new Uri("http://vfsd/api/v1/metrics/backend"));
            Assert.Contains("/rafs/c1/lowerdir", metrics, StringComparison.Ordinal);
            Assert.DoesNotContain("/rafs/c2/lowerdir", metrics, StringComparison.Ordinal);
            File.WriteAllText(Path.Combine(shared.Root, "umounted"), "");

            GuestResult result = await guest;
            Assert.Equal(0, result.ExitCode);
            Assert.Equal(["image one", "image two"], result.Lines("NAME"));
            string[] reads = result.Single("READS").Split(' ');
            Assert.Equal(reads[1], reads[0]);
            Assert.True(int.Parse(reads[0], System.Globalization.CultureInfo.InvariantCulture) >= 1);
            Assert.Equal("gone", result.Single("C2"));
            Assert.Equal("image one", result.Single("AFTER"));
            Assert.Equal(0, vfsd.WaitForExit(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            output.WriteLine(vfsd.Output);
            File.Delete(apiSocket);
            File.Delete(vhostSocket);
        }
    }

    private static string LocalConfig(string blobDir) =>
        "{\"device\":{\"backend\":{\"type\":\"localfs\",\"config\":{\"dir\":\"" + blobDir + "\"}}}}";
}
