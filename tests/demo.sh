#!/usr/bin/env bash
# The main job, end to end on a fresh Debian machine: install and build (tests/setup.sh), build an image from a
# directory with vfs-image, serve it with vfsd to a Linux guest booted under QEMU, and print what the guest sees.
#
#   bash tests/demo.sh [DIR]      (default: a small generated tree)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
work=$(mktemp -d /tmp/vfs-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

src=${1:-}
if [ -z "$src" ]; then
  src=$work/src
  mkdir -p "$src/etc" "$src/bin" "$src/data"
  echo "hello from a VirtioFs image" > "$src/etc/motd"
  printf '#!/bin/sh\necho running inside the guest\n' > "$src/bin/hello"; chmod 755 "$src/bin/hello"
  head -c 3000000 /dev/urandom > "$src/data/blob.bin"
  cp "$src/data/blob.bin" "$src/data/copy-of-blob.bin"   # identical chunks are stored once
  ln -s ../etc/motd "$src/data/motd-link"
fi

echo "== building the image (vfs-image create)"
mkdir -p "$work/blobs"
out/vfs-image create --blob-dir "$work/blobs" --bootstrap "$work/image.boot" --compressor lz4_block "$src"
echo "== vfs-image check"
out/vfs-image check --blob-dir "$work/blobs" "$work/image.boot"

cat > "$work/guest.sh" <<'GUEST'
echo "== the guest sees (mounted at /mnt/image):"
cd /mnt/image
find . | sort | while read -r f; do ls -ld "$f"; done
echo "== cat etc/motd:"; cat etc/motd
echo "== sha256 of data files:"; find . -type f -name '*.bin' | sort | xargs sha256sum | sed 's/^/@@HASH /' 
echo "== writing is refused:"; touch new-file 2>&1 || true
echo "== mount:"; grep virtiofs /proc/mounts
GUEST

echo "== on the host, the source's data files hash to:"
(cd "$src" && find . -type f -name '*.bin' | sort | xargs -r sha256sum) | tee "$work/host.sha"

echo "== serving the image to a QEMU guest: vfsd --bootstrap ... --blob-dir ..."
out/vfsd --socket-path "$work/vfsd.sock" --bootstrap "$work/image.boot" --blob-dir "$work/blobs" \
  --cache-dir "$work/cache" --log-level warn &
for _ in $(seq 1 100); do [ -S "$work/vfsd.sock" ] && break; sleep 0.05; done
[ -S "$work/vfsd.sock" ] || { echo "demo: vfsd did not start" >&2; exit 1; }
tests/guest/run-guest.sh --script "$work/guest.sh" --fs image="$work/vfsd.sock" > "$work/guest.out"
grep -v '^\[' "$work/guest.out" | sed -n '/@@GUEST-READY/,/@@EXIT/p' | sed 's/^@@HASH //' | grep -v '^@@'
wait

# The guest read the image's files through virtio-fs: their hashes must be the host's, byte for byte.
sed -n 's/^@@HASH //p' "$work/guest.out" | tr -d '\r' > "$work/guest.sha"
if [ ! -s "$work/host.sha" ] || ! cmp -s "$work/host.sha" "$work/guest.sha"; then
  echo "demo: FAILED: the guest's hashes differ from the host's" >&2
  diff "$work/host.sha" "$work/guest.sha" >&2 || true
  exit 1
fi
echo "== demo: the guest's hashes match the host's ($(wc -l < "$work/host.sha") files)"
