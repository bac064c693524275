#!/usr/bin/env bash
# Runs the microbenchmarks ROUNDS times in one process each (BenchmarkDotNet in-process, many short iterations) and
# appends one row per benchmark and round to a results CSV: the median, min and max of that round's iterations, in ns,
# and the allocation per call. Then prints, per benchmark, the median over rounds and its ratio to the yardstick
# (YardstickBenchmark copy 4 KiB) measured in the same round, so runs taken under different load compare.
#
#   benchmarks/Microbenchmarks/run.sh LABEL [ROUNDS] [RESULTS_CSV] [FILTER]
#   e.g. benchmarks/Microbenchmarks/run.sh before 3 benchmarks/results/microbenchmarks.csv
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
label=${1:?label, e.g. before or after}
rounds=${2:-3}
results=${3:-$here/../results/microbenchmarks.csv}
filter=${4:-*}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dotnet build "$here" -c Release -v q -nologo > "$work/build.log" || { cat "$work/build.log"; exit 1; }
for round in $(seq 1 "$rounds"); do
  dotnet run -c Release --no-build --project "$here" -- --filter "$filter" --inProcess \
    --warmupCount 5 --iterationCount 60 --iterationTime 100 --artifacts "$work/r$round" > "$work/r$round.log" \
    || { tail -50 "$work/r$round.log"; exit 1; }
done
python3 - "$work" "$rounds" "$results" "$label" "$(git -C "$here" rev-parse --short HEAD)" <<'PY'
import csv, glob, os, statistics, sys, datetime
work, rounds, results, label, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
scale = {"ns": 1, "us": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9}
def ns(cell):
    number, unit = cell.replace(",", "").split()
    return float(number) * scale[unit]
def size(cell):
    if cell in ("-", "", "NA"):
        return 0
    number, unit = cell.replace(",", "").split()
    return int(float(number) * {"B": 1, "KB": 1024, "MB": 1 << 20}[unit])
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
rows = []
for r in range(1, rounds + 1):
    for path in sorted(glob.glob(f"{work}/r{r}/results/*-report.csv")):
        klass = os.path.basename(path).split(".")[-1].replace("-report.csv", "")
        for row in csv.DictReader(open(path)):
            rows.append({"label": label, "commit": commit, "round": r, "class": klass, "benchmark": row["Method"].strip("'"),
                         "median_ns": round(ns(row["Median"]), 2), "min_ns": round(ns(row["Min"]), 2),
                         "max_ns": round(ns(row["Max"]), 2), "allocated_bytes": size(row.get("Allocated", "-")), "date": date})
new = not os.path.exists(results)
with open(results, "a", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    if new:
        w.writeheader()
    w.writerows(rows)
yard = {row["round"]: row["median_ns"] for row in rows if row["benchmark"] == "yardstick: copy 4 KiB"}
print(f"{'benchmark':62} {'median ns':>10} {'min-max ns':>20} {'x yardstick':>11} alloc")
for name in dict.fromkeys(row["benchmark"] for row in rows):
    mine = [row for row in rows if row["benchmark"] == name]
    med = statistics.median(row["median_ns"] for row in mine)
    ratio = statistics.median(row["median_ns"] / yard[row["round"]] for row in mine) if yard else float("nan")
    lo, hi = min(row["min_ns"] for row in mine), max(row["max_ns"] for row in mine)
    print(f"{name:62} {med:10.1f} {lo:9.1f}-{hi:<10.1f} {ratio:11.3f} {max(row['allocated_bytes'] for row in mine)}")
PY
