#!/usr/bin/env bash
# Draws the benchmarks' results files (benchmarks/results/*.csv, written by the scripts through lib/harness.sh) as
# charts in benchmarks/charts/: per workload, the ratio vfsd / peer as the median of the per-round ratios with its
# min-max as an error bar (below the 1.0 line vfsd is faster or cheaper), for wall time and, where measured, CPU; and
# for cold start the time of each side and round 1's bytes fetched against time (OCI, lazy, lazy + prefetch).
#
#   benchmarks/report.sh [RESULTS_DIR] [CHARTS_DIR]
# Needs gnuplot (Debian: gnuplot-nox), installed here when missing.
set -euo pipefail
cd "$(dirname "$0")"
results=${1:-results}
charts=${2:-charts}
mkdir -p "$charts"
if ! command -v gnuplot > /dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox > /dev/null
fi
python3 - "$results" "$charts" <<'PY'
import csv, os, statistics, subprocess, sys
results, charts = sys.argv[1], sys.argv[2]
# (results file, chart name, subject, peer, columns): the comparisons each benchmark makes.
pairs = {
    "virtiofs-e2e": [("vfsd", "virtiofsd")],
    "virtiofs-e2e-sandbox": [("vfsd", "vfsd-nosandbox")],
    "image-read": [("vfsd", "squashfuse"), ("vfsd-cache", "squashfuse"), ("vfsd", "virtiofsd"), ("vfsd-cache", "virtiofsd")],
    "image-build": [("vfs-image", "mksquashfs"), ("vfs-image", "mkfs.erofs")],
    "cold-start": [("lazy", "oci"), ("lazy-prefetch", "oci"), ("s3", "oci"), ("lazy", "floor"), ("lazy-prefetch", "floor"), ("s3", "floor")],
}
made = []
def gnuplot(script, out, width, height):
    """Renders the chart as SVG (for the README) and PNG (for viewers without SVG)."""
    for term, ext in ((f'svg size {width},{height} dynamic font "sans,11"', "svg"), (f'pngcairo size {width},{height} font "sans,10"', "png")):
        subprocess.run(["gnuplot"], input=f'set terminal {term}\nset output "{out}.{ext}"\n' + script, text=True, check=True)
    made.append(out + ".svg")

for name, comparisons in pairs.items():
    path = os.path.join(results, name + ".csv")
    if not os.path.exists(path):
        continue
    rows = list(csv.DictReader(open(path)))
    for column, label in (("seconds", "wall time"), ("cpu_seconds", "CPU")):
        lines = []
        for subject, peer in comparisons:
            for w in dict.fromkeys(r["workload"] for r in rows):
                val = lambda tool: {r["round"]: float(r[column]) for r in rows
                                    if r["workload"] == w and r["tool"] == tool and r[column] not in ("", None)}
                a, b = val(subject), val(peer)
                ratios = [a[k] / b[k] for k in sorted(set(a) & set(b)) if b[k] > 0]
                if ratios:
                    lines.append((f"{w}\\n{subject}/{peer}", statistics.median(ratios), min(ratios), max(ratios), len(ratios)))
        if not lines:
            continue
        dat = os.path.join(charts, f"{name}-{column}.dat")
        with open(dat, "w") as f:
            for i, (lab, med, lo, hi, n) in enumerate(lines):
                f.write(f'{i} "{lab}" {med:.4f} {lo:.4f} {hi:.4f} {n}\n')
        out = os.path.join(charts, f"{name}-{column}")
        rounds = max(l[4] for l in lines)
        gnuplot(f'''
set bmargin 4
set title "{name}: {label}, ratio (median of {rounds} rounds, bar = min-max)"
set style fill solid 0.5
set boxwidth 0.6
set yrange [0:*]
set xrange [-0.6:{len(lines) - 0.4}]
set grid ytics
set ylabel "subject / peer"
set arrow from -0.6,1 to {len(lines) - 0.4},1 nohead dt 2 lc rgb "red"
plot "{dat}" using 1:3:xtic(2) with boxes lc rgb "#4477aa" notitle, \\
     "{dat}" using 1:3:4:5 with yerrorbars lc rgb "black" pt 7 ps 0.5 notitle, \\
     "{dat}" using 1:3:(sprintf("%.2fx", $3)) with labels offset 0,1 notitle
''', out, max(640, 210 * len(lines)), 440)

timeline = os.path.join(results, "cold-start-timeline.csv")
if os.path.exists(timeline):
    series = {}
    for r in csv.DictReader(open(timeline)):
        series.setdefault(r["side"], []).append((float(r["seconds"]), int(r["bytes"]) / 1e6))
    plots = []
    for side, pts in series.items():
        dat = os.path.join(charts, f"cold-start-timeline-{side.replace('+', '-')}.dat")
        with open(dat, "w") as f:
            f.write("0 0\n")
            for t, mb in pts:
                f.write(f"{t:.3f} {mb:.3f}\n")
        plots.append(f'"{dat}" using 1:2 with steps lw 2 title "{side}"')
    out = os.path.join(charts, "cold-start-timeline")
    gnuplot(f'''
set title "cold start, round 1: bytes fetched from the registry against time"
set xlabel "seconds since the side started"
set ylabel "MB fetched"
set logscale x
set xrange [0.01:*]
set grid
set key left top
plot {", ".join(plots)}
''', out, 760, 420)
# The .dat files only feed gnuplot: the CSVs are the data kept.
for f in os.listdir(charts):
    if f.endswith(".dat"):
        os.remove(os.path.join(charts, f))
print("\n".join(made) if made else "no results files in " + results)
PY
