#!/usr/bin/env bash
# End-to-end comparison of vfsd against Debian's C virtiofsd (/usr/lib/qemu/virtiofsd): the same guest, the same
# data, the same run. For each workload it reports the guest-visible time and the daemon's own CPU seconds, and the
# ratio vfsd / virtiofsd (below 1.00 means vfsd is faster or cheaper).
#
#   benchmarks/virtiofs-e2e.sh [--rounds N] [--cache auto|always|never]
#   VFSD_EXTRA_ARGS="--sandbox none --seccomp none" benchmarks/virtiofs-e2e.sh ...   (the sandbox's cost: run both)
#
# Workloads (issue 2): sequential read of a 256 MiB file; find over a 4,000-entry tree; reading every file of that
# tree; creating and deleting 2,000 small files. Guest page cache is dropped before each, so the daemon serves it.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 cache=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2;;
    --cache) cache=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ -x out/vfsd ] || { echo "build first: bash tests/setup.sh" >&2; exit 1; }
peer=/usr/lib/qemu/virtiofsd
[ -x "$peer" ] || { echo "$peer missing (apt-get install qemu-system-x86)" >&2; exit 1; }

work=$(mktemp -d /tmp/vfs-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
data=$work/data
mkdir -p "$data/tree"
head -c $((256 << 20)) /dev/urandom > "$data/big.bin"
# 4,000 entries: 40 directories of 99 files (40 + 3960), sizes 1..16 KiB.
for d in $(seq 1 40); do
  mkdir "$data/tree/d$d"
  for f in $(seq 1 99); do head -c $(( (f * 167) % 16384 + 1 )) /dev/urandom > "$data/tree/d$d/f$f"; done
done
mkdir "$data/scratch"

cat > "$work/guest.sh" <<'GUEST'
cd /mnt/vfs
t() { cut -d' ' -f1 /proc/uptime; }
run() {
  name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches
  echo "@@BEGIN $name"; sleep 0.3
  a=$(t); sh -c "$*" > /dev/null; b=$(t)
  echo "@@END $name $a $b"; sleep 0.3
}
run seqread 'cat big.bin'
run find 'find tree | wc -l'
run readall 'find tree -type f -exec cat {} +'
run createdelete 'cd scratch && i=0; while [ $i -lt 2000 ]; do echo x > f$i; i=$((i+1)); done; rm -f f*'
GUEST

# CPU time of a process and its descendants in nanoseconds: the sum of every thread's on-CPU time from schedstat
# (field 1), so a workload costing a few clock ticks is still resolved (utime+stime count in 10 ms ticks, which made
# the find ratio a matter of one tick). Without schedstat it falls back to utime+stime in ticks.
if [ -r /proc/self/schedstat ]; then
  cpu_of_tree() {
    local total=0 p t ns
    for p in $1 $(pgrep -P "$1" 2>/dev/null); do
      for t in /proc/$p/task/*/schedstat; do
        read -r ns _ < "$t" 2>/dev/null && total=$((total + ns))
      done
    done
    echo $total
  }
  cpu_unit=1000000000
else
  cpu_of_tree() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" 2>/dev/null); do
      [ -r /proc/$p/stat ] || continue
      total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
    done
    echo $total
  }
  cpu_unit=$(getconf CLK_TCK)
fi

results=$work/results
: > "$results"
for round in $(seq 1 "$rounds"); do
  # Alternate which daemon goes first: on a shared host a slow phase then does not always hit the same one.
  order="virtiofsd vfsd"
  [ $((round % 2)) -eq 0 ] && order="vfsd virtiofsd"
  for daemon in $order; do
    sock=$work/$daemon.sock
    rm -f "$sock" "$sock.pid"
    if [ $daemon = vfsd ]; then
      # shellcheck disable=SC2086 # VFSD_EXTRA_ARGS is a list of options
      out/vfsd --socket-path "$sock" --shared-dir "$data" --cache "$cache" --thread-pool-size 1 --log-level warn ${VFSD_EXTRA_ARGS:-} &
    else
      "$peer" --socket-path="$sock" -o source="$data" -o cache="$([ "$cache" = never ] && echo none || echo "$cache")" \
        -o sandbox=chroot > /dev/null 2>&1 &
    fi
    dpid=$!
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
    declare -A cpu_begin=()
    while IFS= read -r line; do
      line=${line%$'\r'}
      case "$line" in
        "@@BEGIN "*) cpu_begin[${line#@@BEGIN }]=$(cpu_of_tree $dpid);;
        "@@END "*)
          set -- ${line#@@END }
          cpu=$(( $(cpu_of_tree $dpid) - ${cpu_begin[$1]} ))
          echo "$daemon $1 $(awk -v a="$2" -v b="$3" 'BEGIN{printf "%.2f", b-a}') $(awk -v c=$cpu -v u=$cpu_unit 'BEGIN{printf "%.4f", c/u}')" >> "$results";;
      esac
    done < <(tests/guest/run-guest.sh --script "$work/guest.sh" --fs vfs="$sock" --mem 1G 2>&1)
    wait $dpid 2>/dev/null || true
    rm -rf "${data:?}/scratch"/*
  done
done

echo "workload      virtiofsd(s) vfsd(s)  time ratio | virtiofsd cpu(s) vfsd cpu(s) cpu ratio   (median of $rounds rounds, cache=$cache)"
for w in seqread find readall createdelete; do
  med() { grep "^$1 $w " "$results" | awk -v col=$2 '{print $col}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  pt=$(med virtiofsd 3); vt=$(med vfsd 3); pc=$(med virtiofsd 4); vc=$(med vfsd 4)
  awk -v w=$w -v pt=$pt -v vt=$vt -v pc=$pc -v vc=$vc 'BEGIN {
    printf "%-13s %12.2f %7.2f %11.2fx | %16.2f %11.2f %9.2fx\n", w, pt, vt, (pt>0?vt/pt:0), pc, vc, (pc>0?vc/pc:0) }'
done
