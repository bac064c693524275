#!/usr/bin/env bash
# End-to-end comparison of vfsd against Debian's C virtiofsd (/usr/lib/qemu/virtiofsd): the same guest, the same
# data, the same run. For each workload it reports the guest-visible time and the daemon's own CPU seconds, and the
# ratio vfsd / virtiofsd (below 1.00 means vfsd is faster or cheaper). It follows benchmarks/lib/harness.sh:
# alternating order, N rounds (default 5), medians with min-max, results in benchmarks/results/virtiofs-e2e.csv.
#
#   benchmarks/virtiofs-e2e.sh [--rounds N] [--results FILE] [--cache auto|always|never] [--sandbox chroot|namespace]
#   benchmarks/virtiofs-e2e.sh --peer vfsd-nosandbox ...   (the sandbox's cost: vfsd against itself with
#       --sandbox none --seccomp none, alternating in one run; results in virtiofs-e2e-sandbox.csv)
#
# Both daemons get the settings Kata gives virtiofsd by default (configuration-qemu.toml: virtio_fs_cache = "auto",
# virtio_fs_extra_args = ["--thread-pool-size=1", "--announce-submounts"]) and the same sandbox mode (chroot: the C
# virtiofsd's namespace sandbox needs more than this machine's test set-up gives it). After the timed workloads the
# guest hashes what it read; both daemons must have served the same bytes.
#
# Workloads: sequential read of a 256 MiB file; find over a 4,000-entry tree; reading every file of that
# tree; creating and deleting 2,000 small files. Guest page cache is dropped before each, so the daemon serves it.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/lib/harness.sh
bench_parse_rounds "$@"
set -- "${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}"
cache=auto sandbox=chroot peer_name=virtiofsd
while [ $# -gt 0 ]; do
  case "$1" in
    --peer) peer_name=$2; shift 2;;
    --cache) cache=$2; shift 2;;
    --sandbox) sandbox=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
rounds=$BENCH_ROUNDS
[ -x out/vfsd ] || { echo "build first: bash tests/setup.sh" >&2; exit 1; }
peer=/usr/lib/qemu/virtiofsd
[ -x "$peer" ] || { echo "$peer missing (apt-get install qemu-system-x86)" >&2; exit 1; }
case "$peer_name" in
  virtiofsd) bench_name=virtiofs-e2e;;
  vfsd-nosandbox) bench_name=virtiofs-e2e-sandbox;;
  *) echo "--peer takes virtiofsd or vfsd-nosandbox" >&2; exit 2;;
esac

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
# Untimed: what the guest read, so the two daemons can be compared.
echo "@@SUM big $(md5sum < big.bin | cut -d' ' -f1)"
echo "@@SUM tree $(find tree | sort | while read -r f; do [ -f "$f" ] && md5sum "$f" || echo "$f"; done | md5sum | cut -d' ' -f1)"
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

bench_init "$bench_name"
for round in $(seq 1 "$rounds"); do
  pos=1
  for daemon in $(bench_order "$round" "$peer_name" vfsd); do
    sock=$work/$daemon.sock
    rm -f "$sock" "$sock.pid"
    if [ $daemon = vfsd ]; then
      # shellcheck disable=SC2086 # VFSD_EXTRA_ARGS is a list of options; given last, they win
      out/vfsd --socket-path "$sock" --shared-dir "$data" --cache "$cache" --thread-pool-size=1 --announce-submounts \
        --sandbox "$sandbox" --log-level warn ${VFSD_EXTRA_ARGS:-} &
    elif [ $daemon = vfsd-nosandbox ]; then
      # The same daemon and settings with no containment at all: the difference is what the sandbox costs (#9).
      out/vfsd --socket-path "$sock" --shared-dir "$data" --cache "$cache" --thread-pool-size=1 --announce-submounts \
        --sandbox none --seccomp none --log-level warn ${VFSD_EXTRA_ARGS:-} &
    else
      "$peer" --socket-path="$sock" -o source="$data" -o cache="$([ "$cache" = never ] && echo none || echo "$cache")" \
        --thread-pool-size=1 -o announce_submounts -o sandbox="$sandbox" > "$work/peer.log" 2>&1 &
    fi
    dpid=$!
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
    [ -S "$sock" ] || { echo "benchmark: $daemon did not start" >&2; cat "$work/peer.log" >&2 2>/dev/null; exit 1; }
    declare -A cpu_begin=()
    ended=0
    while IFS= read -r line; do
      line=${line%$'\r'}
      case "$line" in
        "@@BEGIN "*) cpu_begin[${line#@@BEGIN }]=$(cpu_of_tree $dpid);;
        "@@END "*)
          set -- ${line#@@END }
          cpu=$(( $(cpu_of_tree $dpid) - ${cpu_begin[$1]} ))
          bench_record "$1" "$daemon" "$round" "$pos" "$(awk -v a="$2" -v b="$3" 'BEGIN{printf "%.2f", b-a}')" \
            "$(awk -v c=$cpu -v u=$cpu_unit 'BEGIN{printf "%.4f", c/u}')"
          ended=$((ended + 1));;
        "@@SUM "*) echo "${line#@@SUM }" >> "$work/sums.$daemon.$round";;
      esac
    done < <(tests/guest/run-guest.sh --script "$work/guest.sh" --fs vfs="$sock" --mem 1G 2>&1 | tee "$work/guest.out")
    # The daemon exits when the guest disconnects; a non-zero status is a failed run.
    wait $dpid || { echo "benchmark: $daemon exited with status $? in round $round" >&2; exit 1; }
    if [ "$ended" != 4 ]; then
      echo "benchmark: the guest finished $ended of 4 workloads with $daemon in round $round; its last lines:" >&2
      tail -n 15 "$work/guest.out" >&2
      cat "$work/peer.log" >&2 2>/dev/null || true
      exit 1
    fi
    rm -rf "${data:?}/scratch"/*
    pos=$((pos + 1))
  done
  bench_same_output "what the guest read (round $round)" "$work/sums.$peer_name.$round" "$work/sums.vfsd.$round"
done

echo "== guest-visible time (cache=$cache, vfsd sandbox=$sandbox, thread pool 1, both daemons)"
bench_summary vfsd "$peer_name" seconds
echo "== daemon CPU"
bench_summary vfsd "$peer_name" cpu_seconds
echo "results: $BENCH_RESULTS"
