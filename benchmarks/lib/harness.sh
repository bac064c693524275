# The one convention every benchmark here follows (source it from a benchmark script):
#   - both sides run with the same settings, the ones a user or Kata would pass;
#   - rounds alternate the order (round 1: A then B, round 2: B then A, ...), so a slow phase of a shared machine
#     does not always hit the same tool; default 5 rounds (--rounds N);
#   - every tool's exit status is checked: a failed run stops the benchmark, its time means nothing;
#   - outputs are compared (bench_same_output) where the tools produce the same thing;
#   - every measurement goes into a CSV results file (benchmarks/results/NAME.csv, or --results FILE), and the summary
#     prints per workload the median and min-max of each side and the median of the per-round ratios with its min-max.
# benchmarks/report.sh draws the CSV files as charts.

BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_RESULTS=""
BENCH_NAME=""

# bench_init NAME: opens the results file (a new CSV with its header line).
bench_init() {
  BENCH_NAME=$1
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/results"
  mkdir -p "$dir"
  BENCH_RESULTS=${BENCH_RESULTS_FILE:-$dir/$1.csv}
  echo "benchmark,workload,tool,round,position,seconds,cpu_seconds,bytes,host,date" > "$BENCH_RESULTS"
}

# bench_order ROUND A B: prints the two tools in this round's order.
bench_order() {
  if [ $(($1 % 2)) -eq 1 ]; then echo "$2 $3"; else echo "$3 $2"; fi
}

# bench_record WORKLOAD TOOL ROUND POSITION SECONDS [CPU_SECONDS] [BYTES]
bench_record() {
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$BENCH_NAME" "$1" "$2" "$3" "$4" "$5" "${6:-}" "${7:-}" "$(hostname)" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$BENCH_RESULTS"
}

# bench_time OUTVAR COMMAND...: runs COMMAND (output to $BENCH_LOG or /dev/null), stores its wall seconds in OUTVAR, and
# stops the benchmark with the tool's stderr when it fails.
bench_time() {
  local __var=$1 s e rc err
  shift
  err=$(mktemp)
  s=$(date +%s.%N)
  "$@" > "${BENCH_LOG:-/dev/null}" 2> "$err" && rc=0 || rc=$?
  e=$(date +%s.%N)
  if [ "$rc" -ne 0 ]; then
    echo "benchmark: '$*' failed (exit $rc):" >&2
    tail -n 20 "$err" >&2
    rm -f "$err"
    exit 1
  fi
  rm -f "$err"
  printf -v "$__var" '%s' "$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f", e - s }')"
}

# bench_same_output WHAT FILE_A FILE_B: stops the benchmark unless the two tools produced the same bytes.
bench_same_output() {
  if ! cmp -s "$2" "$3"; then
    echo "benchmark: $1 differ between the two tools ($2, $3)" >&2
    diff <(head -c 4096 "$2") <(head -c 4096 "$3") | head -n 20 >&2 || true
    exit 1
  fi
}

# bench_summary SUBJECT PEER [COLUMN]: the median and min-max of each side per workload, and the ratio SUBJECT / PEER
# (median of the per-round ratios, with their min-max) for COLUMN (seconds by default, or cpu_seconds).
bench_summary() {
  local subject=$1 peer=$2 column=${3:-seconds}
  python3 - "$BENCH_RESULTS" "$subject" "$peer" "$column" <<'PY'
import csv, statistics, sys
path, subject, peer, column = sys.argv[1:5]
rows = [r for r in csv.DictReader(open(path)) if r[column] not in ("", None)]
workloads = list(dict.fromkeys(r["workload"] for r in rows))
def values(w, tool):
    return {int(r["round"]): float(r[column]) for r in rows if r["workload"] == w and r["tool"] == tool}
print(f"{'workload':<22} {peer + ' median [min-max]':>28} {subject + ' median [min-max]':>28}   ratio median [min-max]  ({column}, {subject} / {peer})")
for w in workloads:
    a, b = values(w, subject), values(w, peer)
    if not a or not b:
        continue
    rounds = sorted(set(a) & set(b))
    ratios = [a[r] / b[r] for r in rounds if b[r] > 0]
    nd = 0 if column == "bytes" else 3
    fmt = lambda v: f"{statistics.median(v):8.{nd}f} [{min(v):.{nd}f}-{max(v):.{nd}f}]"
    rat = f"{statistics.median(ratios):5.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else "-"
    print(f"{w:<22} {fmt(list(b.values())):>28} {fmt(list(a.values())):>28}   {rat}  ({len(rounds)} rounds)")
PY
}

# bench_parse_rounds "$@": takes --rounds N and --results FILE off the command line; the rest is left in BENCH_ARGS.
bench_parse_rounds() {
  BENCH_ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --rounds) BENCH_ROUNDS=$2; shift 2;;
      --results) BENCH_RESULTS_FILE=$2; shift 2;;
      *) BENCH_ARGS+=("$1"); shift;;
    esac
  done
  [ "$BENCH_ROUNDS" -ge 1 ] 2>/dev/null || { echo "--rounds needs a positive number" >&2; exit 2; }
}
