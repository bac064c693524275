#!/usr/bin/env python3
"""Plain OCI images over the registry HTTP API (OCI distribution spec), for benchmarks/cold-start.sh.

  oci.py push HOST REPO TAG LAYER.tar.gz...   uploads the gzip layers (monolithic POST + PUT ?digest=), an image
                                              config naming their diff ids, and an OCI image manifest under TAG
  oci.py pull HOST REPO TAG OUTDIR            resolves TAG, downloads every layer in parallel (as containerd does, up
                                              to 3 at a time) into OUTDIR, checks each blob's sha256 while it streams,
                                              and prints the layer files bottom first, one per line

Plain http only (the benchmark's registry is local). Standard library only.
"""
import concurrent.futures
import gzip
import hashlib
import http.client
import json
import os
import sys
import urllib.parse

BUF = 1 << 20
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def conn(host):
    return http.client.HTTPConnection(host, timeout=600)


def sha256_file(path, decompress=False):
    h = hashlib.sha256()
    with (gzip.open(path, "rb") if decompress else open(path, "rb")) as f:
        while chunk := f.read(BUF):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def upload(host, repo, digest, size, body):
    c = conn(host)
    c.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    r = c.getresponse()
    r.read()
    if r.status == 200:
        return
    c.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    r = c.getresponse()
    r.read()
    if r.status != 202:
        sys.exit(f"oci.py: starting an upload to {repo} gave HTTP {r.status}")
    loc = urllib.parse.urlsplit(r.getheader("Location"))
    query = (loc.query + "&" if loc.query else "") + "digest=" + urllib.parse.quote(digest)
    c.request("PUT", f"{loc.path}?{query}", body=body,
              headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
    r = c.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"oci.py: uploading {digest} gave HTTP {r.status}")
    c.close()


def push(host, repo, tag, layers):
    descs, diff_ids = [], []
    for path in layers:
        digest, size = sha256_file(path), os.path.getsize(path)
        with open(path, "rb") as f:
            upload(host, repo, digest, size, f)
        descs.append({"mediaType": LAYER_GZIP, "digest": digest, "size": size})
        diff_ids.append(sha256_file(path, decompress=True))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/bash"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload(host, repo, config_digest, len(config), config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
                           "layers": descs}).encode()
    c = conn(host)
    c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers={"Content-Type": MANIFEST})
    r = c.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"oci.py: putting the manifest gave HTTP {r.status}")
    print(f"pushed {host}/{repo}:{tag} ({len(layers)} layers)")


def download(host, repo, desc, path):
    c = conn(host)
    c.request("GET", f"/v2/{repo}/blobs/{desc['digest']}")
    r = c.getresponse()
    if r.status != 200:
        sys.exit(f"oci.py: GET {desc['digest']} gave HTTP {r.status}")
    h = hashlib.sha256()
    n = 0
    with open(path, "wb") as f:
        while chunk := r.read(BUF):
            h.update(chunk)
            f.write(chunk)
            n += len(chunk)
    c.close()
    if n != desc["size"] or "sha256:" + h.hexdigest() != desc["digest"]:
        sys.exit(f"oci.py: {desc['digest']} arrived damaged ({n} bytes)")
    return path


def pull(host, repo, tag, outdir):
    c = conn(host)
    c.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"oci.py: GET manifest {tag} gave HTTP {r.status}")
    manifest = json.loads(body)
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, f"layer{i}.tar.gz") for i in range(len(manifest["layers"]))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(lambda a: download(host, repo, *a), zip(manifest["layers"], paths)))
    for p in done:
        print(p)


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "push":
        push(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif len(sys.argv) == 6 and sys.argv[1] == "pull":
        pull(*sys.argv[2:6])
    else:
        sys.exit(__doc__.strip())


if __name__ == "__main__":
    main()
