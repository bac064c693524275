#!/usr/bin/env bash
# Reading every file of a ~400 MB image, vfsd against its peers in the same run, as ratios (vfsd / peer; below 1.00
# means vfsd is faster), with the CPU time each host daemon spent (the steadier figure on a busy machine):
#   host: `vfsd mount` of a RAFS image (vfs-image create --compressor lz4_block) through /dev/fuse against squashfuse
#         on a squashfs of the same tree (mksquashfs -comp lz4), cold (host page cache dropped) and warm (read again);
#         vfsd runs both without a chunk cache (reads decompress from the blob, like squashfuse) and with an empty
#         --cache-dir (first read fills it);
#   guest: a QEMU guest reads the image served by `vfsd --bootstrap` (from the blob, and, as tool vfsd-cache, from a
#         --cache-dir filled beforehand as a registry image's is) and the same tree served by the C virtiofsd
#         (-o cache=auto), each cold on the host, after a warm-up the sides share (see below), with each daemon's
#         CPU seconds (schedstat of it and its children) over its timed pass; then each again with the host's page
#         cache warm (the blob, the cache file and the tree cached there by the first pass, as on a node that has
#         started the image before: guest-readall-hostwarm). The guest drops its own page cache before every pass.
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
# Since then the local backend lends blobs mapped (Storage/Backend/BlobMapping.cs) and the cache decodes and verifies
# straight from the page cache: no pread copy. Profile after (same settings, 2026-12-05, a machine shared with other
# work): no cache: lz4 ~25%, BLAKE3 ~29% (it now pays the first touch of the page-cache pages the copy used to pay),
# user memmove ~6.5%, FUSE copies ~8%, _copy_to_iter gone; --cache-dir fill: BLAKE3 ~25%, lz4 ~15%, the cache pwrite
# ~7%, FUSE copies ~7%. vfsd CPU seconds for 400 MB cold, 7 alternating runs, medians: no cache 0.45 -> 0.37, cache
# fill 0.54 -> 0.47 (squashfuse 0.44 in 5 runs beside it, each figure +-0.1 on that machine).
# Profiles of 2026-12-05 (200 MB tree, x86-64-v4 with symbols, perf -e cpu-clock -g, a machine at load 14-18):
#   host, no cache, cold: liblz4 17%, BLAKE3 23.5% (the Blake3 package's 16-lane AVX-512 path: Compress16,
#   TryHash16Chunks), the kernel's FUSE copy into the page cache ~17%, sleeping and waking in poll ~14% plus ~6% of
#   wake-ups; 2,950 requests cost 4,261 context switches, so the two readers' shared poll wastes at most a few ms.
#   guest (vfsd --bootstrap, its sandboxed child): the managed K4os decoder 25% (liblz4 could not be loaded after
#   pivot_root; now preloaded by the sandbox: liblz4 21.7%), BLAKE3 24%, the queue thread sleeping on its kick ~15%,
#   the one copy into guest memory ~4-5%. vfsd's CPU per timed pass is close to the C virtiofsd's, which only preadv()s.
#
# It follows benchmarks/lib/harness.sh: N rounds (default 5) rotating which tool goes first, medians with min-max, every
# exit status checked, the files each tool served hashed and compared (round 1, untimed), results in
# benchmarks/results/image-read.csv. Settings are the ones a user passes: none on the host (vfsd mount and squashfuse
# with their defaults), Kata's defaults in the guest (--thread-pool-size=1, cache auto) for both daemons.
#
# Cold host passes start --settle seconds (default 5) after the host's page cache is dropped. On a VM whose balloon
# reports free pages to its host (this machine: virtio_balloon feature bit 5), the freed pages go back to the host a
# second or two after the drop, and the first touch of each one refilled afterwards faults in the host. A pass started
# at once raced that: its cost depended on how far the reporting had got, which is where squashfuse's cold CPU of
# 0.27-0.94 s in one run came from (the same 381 MB blob summed cold: 0.03 s at once, 0.35 s after 2 s, 0.55 s after
# 3 s or more). Settled is the steady state of a node that has been running; the guest passes are settled by the boot.
#
#   benchmarks/image-read.sh [--rounds N] [--results FILE] [--size-mb 400] [--settle 5] [--no-guest] [--no-host]
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/lib/harness.sh
bench_parse_rounds "$@"
set -- "${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}"
size_mb=400 guest=1 host=1 settle=5
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; shift 2;;
    --settle) settle=$2; shift 2;;
    --no-guest) guest=0; shift;;
    --no-host) host=0; shift;;
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

echo "== generating a ${size_mb} MB tree (files of 1 KiB..16 MiB, half random, half text: lz4 stores it in ~0.94 of its size)"
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
readall() { (cd "$1" && find . -type f -print0 | xargs -0 -n 256 -P 2 cat > /dev/null); }
waitmount() { for _ in $(seq 1 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "mount at $1 did not appear" >&2; return 1; }
treesum() { (cd "$1" && find . -type f | sort | xargs -d '\n' sha256sum) | sha256sum | cut -d' ' -f1; }
# CPU seconds (user + system) a process has used: on a shared, noisy machine wall times wander, CPU much less.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# The same for a process and its children (vfsd serves from a re-executed child; each thread's on-CPU time from
# schedstat, as virtiofs-e2e.sh measures it), in nanoseconds, or ticks without schedstat.
if [ -r /proc/self/schedstat ]; then
  cpu_unit=1000000000
  cpu_of_tree() {
    local total=0 p t ns
    for p in $1 $(pgrep -P "$1" 2>/dev/null); do
      for t in /proc/$p/task/*/schedstat; do read -r ns _ < "$t" 2>/dev/null && total=$((total + ns)); done
    done
    echo $total
  }
else
  cpu_unit=$(getconf CLK_TCK)
  cpu_of_tree() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" 2>/dev/null); do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo $total
  }
fi
bytes=$(du -sb --apparent-size "$src" | cut -f1)
treesum "$src" > "$work/src.sum"
bench_init image-read

host_round() { # TOOL ROUND POSITION
  local mnt=$work/mnt-$1 pid c0 c1 c2 cold warm
  mkdir -p "$mnt"
  case $1 in
    squashfuse) squashfuse "$work/tree.sqfs" "$mnt"; waitmount "$mnt"; pid=$(pgrep -n -f "squashfuse $work/tree.sqfs");;
    vfsd) out/vfsd mount --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --log-level warn "$mnt" &
          pid=$!; waitmount "$mnt";;
    vfsd-cache) rm -rf "$work/cache"
          out/vfsd mount --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --cache-dir "$work/cache" --no-prefetch \
            --log-level warn "$mnt" &
          pid=$!; waitmount "$mnt";;
  esac
  drop; sleep "$settle"; c0=$(cpu "$pid")
  bench_time cold readall "$mnt"; c1=$(cpu "$pid")
  bench_time warm readall "$mnt"; c2=$(cpu "$pid")
  bench_record host-cold "$1" "$2" "$3" "$cold" "$(echo "$c1 - $c0" | bc)" "$bytes"
  bench_record host-warm "$1" "$2" "$3" "$warm" "$(echo "$c2 - $c1" | bc)" "$bytes"
  if [ "$2" = 1 ]; then
    treesum "$mnt" > "$work/$1.sum"
    bench_same_output "files served by $1 and the source tree" "$work/src.sum" "$work/$1.sum"
  fi
  umount "$mnt"
  [ "$1" = squashfuse ] || wait "$pid" || { echo "benchmark: vfsd mount exited with status $?" >&2; exit 1; }
}

if [ "$host" = 1 ]; then
  echo "== host: read every file (2 parallel readers), cold ($settle s after the drop) then warm, $BENCH_ROUNDS rounds"
  for round in $(seq 1 "$BENCH_ROUNDS"); do
    case $((round % 3)) in
      1) order="squashfuse vfsd vfsd-cache";; 2) order="vfsd vfsd-cache squashfuse";; 0) order="vfsd-cache squashfuse vfsd";;
    esac
    pos=1
    for tool in $order; do host_round "$tool" "$round" "$pos"; pos=$((pos + 1)); done
  done
fi

if [ "$guest" = 1 ]; then
  [ -x "$peer" ] || { echo "$peer missing (apt-get install qemu-system-x86)" >&2; exit 1; }
  echo "== guest: read every file of the image (vfsd --bootstrap, from the blob and from a filled chunk cache) and of the tree (C virtiofsd)"
  # One boot per round, the order alternating: the guest's first pass also pays for TCG translating the guest
  # kernel's read path and `cat`, so whichever daemon is read first would look slower.
  # The third side, vfsc: vfsd serving the image from a chunk cache filled beforehand (untimed, through a host mount),
  # as Kata serves a registry image once its chunks are in: reads come from the cache file, checked when fetched.
  mkdir -p "$work/mnt-fill"
  out/vfsd mount --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --cache-dir "$work/gcache" --no-prefetch --log-level warn "$work/mnt-fill" &
  fpid=$!; waitmount "$work/mnt-fill"; readall "$work/mnt-fill"; umount "$work/mnt-fill"
  wait "$fpid" || { echo "benchmark: vfsd mount (filling the guest side's cache) exited with status $?" >&2; exit 1; }
  for round in $(seq 1 "$BENCH_ROUNDS"); do
    case $((round % 3)) in 1) order="vfs peer vfsc";; 2) order="peer vfsc vfs";; 0) order="vfsc vfs peer";; esac
    # Before anything is timed, a warm-up that costs both sides the same: the first files of each mount (TCG translates
    # the guest's FUSE read path and `cat` once, on whichever side comes first) and 700 MB of guest memory touched once
    # (the host faults in the guest RAM the page cache then reuses). Without it the side read first paid 0.4-0.9 s more
    # (2026-12-05, 3 rounds: the same daemon 3.85 s first, 2.88 s second), and with an odd number of rounds the median
    # ratio was that of the side that went first more often. @@BEGIN/@@TIME bracket each timed pass for the host, which
    # reads each daemon's CPU time there.
    cat > "$work/guest.sh" <<GUEST
t() { cut -d' ' -f1 /proc/uptime; }
for tag in $order; do find /mnt/\$tag -type f | head -n 40 | xargs cat > /dev/null; done
dd if=/dev/zero of=/dev/null bs=350M count=1 2>/dev/null & dd if=/dev/zero of=/dev/null bs=350M count=1 2>/dev/null & wait
for pass in cold warm; do
  for tag in $order; do
    echo 3 > /proc/sys/vm/drop_caches
    echo "@@BEGIN \$tag \$pass"
    s=\$(t); find /mnt/\$tag -type f | xargs cat > /dev/null; e=\$(t)
    echo "@@TIME \$tag \$pass \$s \$e"
  done
done
for tag in $order; do echo "@@SUM \$tag \$(cd /mnt/\$tag && find . -type f | sort | xargs md5sum | md5sum | cut -d' ' -f1)"; done
GUEST
    drop
    rm -f "$work/vfsd.sock" "$work/peer.sock"
    out/vfsd --socket-path "$work/vfsd.sock" --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --tag vfs --log-level warn \
      --thread-pool-size=1 &
    vpid=$!
    "$peer" --socket-path="$work/peer.sock" -o source="$src" -o cache=auto --thread-pool-size=1 -o sandbox=chroot > /dev/null 2>&1 &
    ppid_=$!
    rm -f "$work/vfsc.sock"
    out/vfsd --socket-path "$work/vfsc.sock" --bootstrap "$work/bootstrap" --blob-dir "$work/blobs" --cache-dir "$work/gcache" \
      --no-prefetch --tag vfsc --log-level warn --thread-pool-size=1 &
    cpid=$!
    for _ in $(seq 1 100); do [ -S "$work/vfsd.sock" ] && [ -S "$work/peer.sock" ] && [ -S "$work/vfsc.sock" ] && break; sleep 0.05; done
    declare -A dpid=([vfs]=$vpid [peer]=$ppid_ [vfsc]=$cpid) cpu_begin=()
    : > "$work/guest.out"
    while IFS= read -r line; do
      line=${line%$'\r'}
      echo "$line" >> "$work/guest.out"
      case "$line" in
        "@@BEGIN "*) set -- $line; cpu_begin[$2.$3]=$(cpu_of_tree "${dpid[$2]}");;
        "@@TIME "*) set -- $line; echo "$(( $(cpu_of_tree "${dpid[$2]}") - ${cpu_begin[$2.$3]:-0} ))" > "$work/cpu.$2.$3";;
      esac
    done < <(tests/guest/run-guest.sh --script "$work/guest.sh" --fs vfs="$work/vfsd.sock" --fs peer="$work/peer.sock" \
      --fs vfsc="$work/vfsc.sock" --timeout 1800 2>&1 || true)
    wait "$vpid" || { echo "benchmark: vfsd exited with status $? (round $round)" >&2; exit 1; }
    wait "$cpid" || { echo "benchmark: vfsd (from its cache) exited with status $? (round $round)" >&2; exit 1; }
    wait "$ppid_" || { echo "benchmark: virtiofsd exited with status $? (round $round)" >&2; exit 1; }
    for pass in cold warm; do
      pos=1
      for tag in $order; do
        line=$(grep "^@@TIME $tag $pass " "$work/guest.out") || { echo "benchmark: no guest time for $tag, $pass pass (round $round)" >&2; exit 1; }
        set -- $line
        case $tag in vfs) tool=vfsd;; vfsc) tool=vfsd-cache;; *) tool=virtiofsd;; esac
        bench_record "guest-readall$([ "$pass" = warm ] && echo -hostwarm)" "$tool" "$round" "$pos" \
          "$(awk -v a="$4" -v b="$5" 'BEGIN{printf "%.2f", b-a}')" "$(awk -v u="$cpu_unit" '{ printf "%.2f", $1 / u }' "$work/cpu.$tag.$pass")" "$bytes"
        pos=$((pos + 1))
      done
    done
    for tag in vfs peer vfsc; do grep "^@@SUM $tag " "$work/guest.out" | cut -d' ' -f3 > "$work/g.$tag"; done
    [ -s "$work/g.vfs" ] && [ -s "$work/g.vfsc" ] || { echo "benchmark: the guest did not hash the files (round $round)" >&2; exit 1; }
    bench_same_output "files the guest read through vfsd and virtiofsd (round $round)" "$work/g.vfs" "$work/g.peer"
    bench_same_output "files the guest read through vfsd from its cache and virtiofsd (round $round)" "$work/g.vfsc" "$work/g.peer"
  done
fi

echo "== wall time (vfsd / peer; bar 1.10, goal <= 1.00)"
bench_summary vfsd squashfuse seconds
bench_summary vfsd-cache squashfuse seconds
bench_summary vfsd virtiofsd seconds
bench_summary vfsd-cache virtiofsd seconds
echo "== CPU seconds for the same bytes, i.e. CPU per byte (each daemon; in the guest, over the timed pass)"
bench_summary vfsd squashfuse cpu_seconds
bench_summary vfsd-cache squashfuse cpu_seconds
bench_summary vfsd virtiofsd cpu_seconds
bench_summary vfsd-cache virtiofsd cpu_seconds
echo "results: $BENCH_RESULTS"
