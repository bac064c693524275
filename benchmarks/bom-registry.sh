#!/usr/bin/env bash
# vfs-image bom from a registry against the OCI way of listing an image (pull the gzip layers, unpack, list, hash).
#
# The image is the cold-start benchmark's: the debootstrap minbase tree benchmarks/cold-start.sh keeps in
# /var/tmp/vfs-coldstart-rootfs (run it once, or --smoke there, first) plus PAYLOAD MB under /opt/payload (5% text,
# the rest random, as cold-start.sh writes it). It is pushed to Debian's docker-registry (distribution 2.8) on
# loopback as a nydus image (vfs-image create + push) and as two gzip tar layers (base, payload), and every side
# reaches the registry through benchmarks/cold-start/delay-proxy.py with no delay, which counts the bytes each side
# fetched. Caches are dropped before each side. One round: figures, not a harness comparison (benchmarks/lib).
#   bom (cyclonedx, --file-digests bootstrap): catalogers' chunks + bootstrap
#   bom (spdx):  the same: every file's checksum (SPDX needs one per file) comes from the bootstrap's merkle rows
#   OCI:         download + tar -xzf both layers, then list (find, dpkg-query), then b3sum every file; the SPDX
#                document's checksums are compared with that b3sum output
#
#   benchmarks/bom-registry.sh [--payload-mb 700]      needs root, out/vfs-image, docker-registry, python3, b3sum
set -euo pipefail
cd "$(dirname "$0")/.."
payload_mb=700
while [ $# -gt 0 ]; do
  case "$1" in
    --payload-mb) payload_mb=$2; shift 2;;
    *) echo "usage: $0 [--payload-mb N]" >&2; exit 2;;
  esac
done
[[ $payload_mb =~ ^[0-9]+$ ]] || { echo "--payload-mb takes a whole number" >&2; exit 2; }
V=$PWD/out/vfs-image
rootfs=/var/tmp/vfs-coldstart-rootfs
for c in docker-registry python3 b3sum curl; do command -v $c > /dev/null || { echo "$c is missing (bash tests/setup.sh)" >&2; exit 1; }; done
[ -x "$V" ] || { echo "$V is missing (bash tests/setup.sh)" >&2; exit 1; }
[ -x "$rootfs/usr/bin/apt-get" ] || { echo "$rootfs is missing: run benchmarks/cold-start.sh once" >&2; exit 1; }
W=$(mktemp -d /var/tmp/vfs-bom-bench.XXXXXX)
rpid='' ppid=''
trap 'for p in $rpid $ppid; do kill $p 2>/dev/null; done; rm -rf "$W"' EXIT

tree=$W/tree
cp -a "$rootfs" "$tree"
mkdir -p "$tree/opt/payload"
text_mb=$(( payload_mb / 20 )) left=$(( payload_mb - payload_mb / 20 )) i=0
{ yes 'payload: the workload does not read this line; it is here so the image carries some compressible data' || true; } \
  | head -c $(( text_mb << 20 )) > "$tree/opt/payload/notes.txt"
while [ $left -gt 0 ]; do
  n=$(( left < 100 ? left : 100 ))
  head -c $(( n << 20 )) /dev/urandom > "$tree/opt/payload/part-$(printf %02d $i)"
  left=$(( left - n )) i=$(( i + 1 ))
done
echo "tree: $(du -sb "$tree" | cut -f1) bytes, $(find "$tree" -type f | wc -l) regular files"
mkdir -p "$W/nydus" "$W/layers"
"$V" create --bootstrap "$W/nydus/image.boot" --blob-dir "$W/nydus" "$tree" > "$W/create.log"
tar -C "$tree" --numeric-owner --exclude=./opt/payload -cf - . | gzip > "$W/layers/base.tar.gz"
tar -C "$tree" --numeric-owner -cf - ./opt/payload | gzip > "$W/layers/payload.tar.gz"
rm -rf "$tree"

port=$(( 20000 + RANDOM % 20000 )); pport=$(( port + 1 )); cport=$(( port + 2 ))
printf 'version: 0.1\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\nlog: {level: error}\n' "$W/registry" $port > "$W/registry.yml"
docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 & rpid=$!
python3 benchmarks/cold-start/delay-proxy.py 127.0.0.1:$pport 127.0.0.1:$port $cport 0 > "$W/proxy.log" 2>&1 & ppid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/v2/ > /dev/null && break; sleep 0.2; done
"$V" push "$W/nydus/image.boot" --blob-dir "$W/nydus" --target 127.0.0.1:$port/bench/app:nydus > /dev/null
for l in base payload; do # monolithic blob upload (distribution-spec "POST then PUT")
  d=sha256:$(sha256sum "$W/layers/$l.tar.gz" | cut -d' ' -f1)
  loc=$(curl -sf -D - -o /dev/null -X POST http://127.0.0.1:$port/v2/bench/app/blobs/uploads/ | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
  case "$loc" in http*) ;; *) loc=http://127.0.0.1:$port$loc;; esac
  sep='?'; [[ $loc == *\?* ]] && sep='&'
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$W/layers/$l.tar.gz" "$loc${sep}digest=$d" > /dev/null
  echo "$d" > "$W/layers/$l.digest"
done
bytes() { python3 -c "import socket; print(socket.create_connection(('127.0.0.1', $cport)).recv(200).decode().split()[0])"; }
now() { date +%s.%N; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

for side in "cyclonedx --file-digests bootstrap" "spdx"; do
  cold; b0=$(bytes); t0=$(now)
  # shellcheck disable=SC2086
  "$V" bom 127.0.0.1:$pport/bench/app:nydus --format $side -o "$W/bom.json" 2> "$W/bom.err"
  t1=$(now); b1=$(bytes)
  printf 'bom --format %s: %.1f s, %d bytes through the proxy\n' "$side" "$(echo "$t1 - $t0" | bc)" $(( b1 - b0 ))
  sed 's/^/    /' "$W/bom.err"
done
cold; b0=$(bytes); t0=$(now)
mkdir "$W/unpacked"
for l in base payload; do curl -sfL "http://127.0.0.1:$pport/v2/bench/app/blobs/$(cat "$W/layers/$l.digest")" | tar -C "$W/unpacked" -xzf -; done
t1=$(now)
n=$(find "$W/unpacked" -type f | wc -l); dpkg-query -W --admindir="$W/unpacked/var/lib/dpkg" > /dev/null
t2=$(now)
(cd "$W/unpacked" && find . -type f -print0 | xargs -0 b3sum) > "$W/b3sum.txt"
t3=$(now); b1=$(bytes)
printf 'OCI: download + unpack %.1f s, + list %.1f s (%d files), + b3sum of every file %.1f s; %d bytes through the proxy\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)" "$n" "$(echo "$t3 - $t0" | bc)" $(( b1 - b0 ))
# The SPDX document (the last bom side) against b3sum of the unpacked files: every file, the same digest.
python3 - "$W/bom.json" "$W/b3sum.txt" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
got = {f["fileName"]: f["checksums"][0]["checksumValue"] for f in doc["files"]}
want = {}
for line in open(sys.argv[2], encoding="utf-8", errors="surrogateescape"):
    digest, name = line.rstrip("\n").split("  ", 1)
    want[name] = digest
bad = [n for n in want if got.get(n) != want[n]]
print(f"SPDX checksums vs b3sum: {len(want) - len(bad)} of {len(want)} files equal" + (f"; differ: {bad[:5]}" if bad else ""))
sys.exit(1 if bad or len(got) != len(want) else 0)
PY
