#!/usr/bin/env bash
# Reading every file of a ~400 MB image, vfsd against its peers in the same run, as ratios (vfsd / peer; below 1.00
# means vfsd is faster), with the CPU time each host daemon spent (the steadier figure on a busy machine):
#   host: `vfsd mount` of a RAFS image (vfs-image create --compressor lz4_block) through /dev/fuse against squashfuse
#         on a squashfs of the same tree (mksquashfs -comp lz4), cold (host page cache dropped) and warm (read again);
#         vfsd runs both without a chunk cache (reads decompress from the blob, like squashfuse) and with an empty
#         --cache-dir (first read fills it);
#   guest: a QEMU guest reads the image served by `vfsd --bootstrap` and the same tree served by the C virtiofsd
#         (-o cache=auto), each cold on the host.
#
# Where vfsd's host CPU goes on a cold read (perf, 400 MB): BLAKE3 of every fetched chunk ~30% (squashfuse checks
# nothing), lz4 ~10%, the rest kernel copies and FUSE round trips. The Blake3 package's 8-lane AVX2 path runs about
# 1.6 GB/s in a NativeAOT x86-64-v3 binary (tests/setup.sh) and 3-4.5 GB/s with x86-64-v4 on an AVX-512 host, where
# vfsd's cold CPU drops by about a fifth.
# A later profile (x86-64-v4, no cache, cold, perf -e cpu-clock -g with -p:StripSymbols=false): the blob pread's copy
# out of the page cache (_copy_to_iter) ~37%, BLAKE3 ~12%, liblz4 ~8.5%, schedule() in the /dev/fuse read ~8.5%,
# libc memmove ~6.5% (the decoded-chunk slot copied into the reply when a readahead window covers part of a chunk:
# the kernel's windows grow 256K, 512K, 1M from the first read and so never line up with 1 MiB chunks), the reply
# write's copy into the page cache ~5.5%. One pread per chunk (1047 for 400 MB), no chunk decoded or hashed twice, and
# futex waits are only the slot lock when two READs want the chunk another thread is decoding (strace -c inflates them).
#
#   benchmarks/image-read.sh [--size-mb 400] [--no-guest] [--no-host] [--thread-pool-size N (vfsd's, default 4, the C virtiofsd runs a pool too)]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=400 guest=1 host=1 pool=4
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; shift 2;;
    --no-guest) guest=0; shift;;
    --no-host) host=0; shift;;
    --thread-pool-size) pool=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
for t in out/vfsd out/vfs-image; do [ -x "$t" ] || { echo "build first: bash tests/setup.sh" >&2; exit 1; }; done
command -v mksquashfs squashfuse > /dev/null || { echo "apt-get install squashfs-tools squashfuse" >&2; exit 1; }
peer=/usr/lib/qemu/virtiofsd

work=$(mktemp -d /tmp/vfs-imgbench.XXXXXX)
cleanup() {
  for m in "$work"/mnt-*; do umount -l "$m" 2>/dev/null || true; done
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
src=$work/src

echo "== generating a ${size_mb} MB tree (files of 1 KiB..16 MiB, half random, half text: lz4 compresses it ~1.6x)"
python3 - "$src" "$size_mb" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rnd = random.Random(7)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(4000)]
text = b" ".join(rnd.choice(words) for _ in range(400000))
done = n = 0
while done < total:
    d = os.path.join(root, f"d{n % 97:02d}", f"s{n % 13}")
    os.makedirs(d, exist_ok=True)
    r = rnd.random()
    size = rnd.randint(1 << 10, 64 << 10) if r < 0.80 else rnd.randint(64 << 10, 2 << 20) if r < 0.97 else rnd.randint(4 << 20, 16 << 20)
    size = min(size, total - done)
    half = size // 2
    off = rnd.randrange(0, len(text) - size) if size < len(text) else 0
    body = os.urandom(half) + (text[off:off + size - half] if size - half <= len(text) else text * ((size - half) // len(text) + 1))[: size - half]
    with open(os.path.join(d, f"f{n:06d}"), "wb") as f:
        f.write(body)
    done += size
    n += 1
print(f"{n} files")
PY

echo "== building both images"
t0=$(date +%s.%N)
mksquashfs "$src" "$work/tree.sqfs" -comp lz4 -noappend -quiet -no-progress > /dev/null
t1=$(date +%s.%N)
mkdir -p "$work/blobs"
out/vfs-image create --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --compressor lz4_block "$src" > /dev/null
t2=$(date +%s.%N)
printf 'mksquashfs %.1fs (%s bytes), vfs-image %.1fs (%s bytes)\n' "$(echo "$t1 - $t0" | bc)" "$(stat -c %s "$work/tree.sqfs")" \
  "$(echo "$t2 - $t1" | bc)" "$(du -cb "$work/bootstrap" "$work/blobs" | tail -n 1 | cut -f1)"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
readall() { local s e; s=$(date +%s.%N); (cd "$1" && find . -type f -print0 | xargs -0 -n 256 -P 2 cat > /dev/null); e=$(date +%s.%N); echo "$e - $s" | bc; }
waitmount() { for _ in $(seq 1 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "mount at $1 did not appear" >&2; return 1; }

# CPU seconds (user + system) a process has used: on a shared, noisy machine wall times wander, CPU much less.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo "?"; }

declare -A T
measure() { # name mountpoint pid
  local c0 c1 c2
  c0=$(cpu "$3"); drop; T[$1.cold]=$(readall "$2"); c1=$(cpu "$3"); T[$1.warm]=$(readall "$2"); c2=$(cpu "$3")
  printf '%-22s cold %6.2fs (cpu %5.2fs)  warm %6.2fs (cpu %5.2fs)\n' "$1" "${T[$1.cold]}" "$(echo "$c1 - $c0" | bc)" \
    "${T[$1.warm]}" "$(echo "$c2 - $c1" | bc)"
}

ratio() { echo "scale=2; $1 / $2" | bc; }
if [ "$host" = 1 ]; then
echo "== host: read every file (2 parallel readers), cold then warm"
mkdir -p "$work/mnt-sq" "$work/mnt-v1" "$work/mnt-v2"
squashfuse "$work/tree.sqfs" "$work/mnt-sq"; waitmount "$work/mnt-sq"
measure squashfuse "$work/mnt-sq" "$(pgrep -n -f "squashfuse $work/tree.sqfs")"
umount "$work/mnt-sq"

out/vfsd mount --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --log-level warn --thread-pool-size "$pool" "$work/mnt-v1" &
waitmount "$work/mnt-v1"
measure "vfsd (no cache)" "$work/mnt-v1" $!
umount "$work/mnt-v1"; wait

out/vfsd mount --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --cache-dir "$work/cache" --no-prefetch --log-level warn \
  --thread-pool-size "$pool" "$work/mnt-v2" &
waitmount "$work/mnt-v2"
measure "vfsd (--cache-dir)" "$work/mnt-v2" $!
umount "$work/mnt-v2"; wait

echo "== host ratios (vfsd / squashfuse; bar 1.25, goal < 1.00)"
for v in "vfsd (no cache)" "vfsd (--cache-dir)"; do
  printf '%-22s cold %sx  warm %sx\n' "$v" "$(ratio "${T[$v.cold]}" "${T[squashfuse.cold]}")" "$(ratio "${T[$v.warm]}" "${T[squashfuse.warm]}")"
done

fi

[ "$guest" = 1 ] || exit 0
[ -x "$peer" ] || { echo "$peer missing: guest comparison skipped" >&2; exit 0; }
echo "== guest: read every file of the image (vfsd --bootstrap) and of the tree (C virtiofsd), each cold on the host"
# Two boots, one per order: the guest's first pass also pays for TCG translating the guest kernel's read path and
# `cat`, so whichever daemon is read first would look slower. Host caches are dropped before each boot.
guest_run() { # ORDER...
  cat > "$work/guest.sh" <<GUEST
t() { cut -d' ' -f1 /proc/uptime; }
for tag in $*; do
  echo 3 > /proc/sys/vm/drop_caches
  s=\$(t); find /mnt/\$tag -type f | xargs cat > /dev/null; e=\$(t)
  echo "@@TIME \$tag \$s \$e"
done
GUEST
  drop
  out/vfsd --socket-path "$work/vfsd.sock" --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --tag vfs --log-level warn \
    --thread-pool-size "$pool" &
  "$peer" --socket-path="$work/peer.sock" -o source="$src" -o cache=auto > /dev/null 2>&1 &
  for _ in $(seq 1 100); do [ -S "$work/vfsd.sock" ] && [ -S "$work/peer.sock" ] && break; sleep 0.05; done
  tests/guest/run-guest.sh --script "$work/guest.sh" --fs vfs="$work/vfsd.sock" --fs peer="$work/peer.sock" --timeout 1800 \
    | tr -d '\r' | grep '^@@TIME' >> "$work/guest.times" || true
  wait || true
}
: > "$work/guest.times"
guest_run vfs peer
guest_run peer vfs
vfs=$(awk '$2=="vfs"{t+=$4-$3; n++} END {if (n == 2) printf "%.2f", t/n}' "$work/guest.times")
pr=$(awk '$2=="peer"{t+=$4-$3; n++} END {if (n == 2) printf "%.2f", t/n}' "$work/guest.times")
[ -n "$vfs" ] && [ -n "$pr" ] || { echo "guest run failed" >&2; exit 1; }
echo "guest passes (tag start end): $(awk '{printf "%s %.2fs  ", $2, $4-$3}' "$work/guest.times")"
printf 'guest read-all (mean of both orders): vfsd %.2fs, virtiofsd %.2fs, ratio %sx (bar 1.25, goal < 1.00)\n' "$vfs" "$pr" "$(ratio "$vfs" "$pr")"
