#!/usr/bin/env bash
# Build time and output size of `vfs-image create` against mksquashfs (and mkfs.erofs) on the same tree, in one run,
# following benchmarks/lib/harness.sh: alternating order, N rounds (default 5), every exit status checked, results in
# benchmarks/results/image-build.csv, medians with their spread and the ratio vfs-image / peer.
#
#   benchmarks/ImageBuild/run.sh [--rounds N] [--results FILE] [SOURCE_TREE] [SIZE_MB]
#
# Without SOURCE_TREE, a tree of real files (~SIZE_MB, default 400) is copied from /usr into a temp dir.
# Two settings, the same both ways:
#   lz4-1m:   lz4 and 1 MiB blocks (vfs-image --compressor lz4_block --chunk-size 0x100000; mksquashfs -comp lz4
#             -b 1M; mkfs.erofs -zlz4 -C1048576);
#   defaults: each tool as a user runs it with no options (vfs-image: zstd, 1 MiB chunks, BLAKE3; mksquashfs: gzip,
#             128 KiB blocks; mkfs.erofs: uncompressed).
# Output check: every vfs-image build passes `vfs-image check`, and a round's output is byte-identical to round 1's
# (the build is reproducible with SOURCE_DATE_EPOCH).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$repo/benchmarks/lib/harness.sh"
bench_parse_rounds "$@"
set -- "${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}"
size_mb="${2:-400}"
work="$(mktemp -d /tmp/vfs-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
for t in mksquashfs mkfs.erofs; do command -v $t > /dev/null || { echo "apt-get install squashfs-tools erofs-utils" >&2; exit 1; }; done

src="${1:-}"
if [[ -z "$src" ]]; then
  src="$work/tree"
  mkdir -p "$src"
  # Real files: copy /usr/lib, /usr/share, /usr/bin until the size budget is used.
  budget=$((size_mb * 1024 * 1024))
  (cd / && find usr/lib usr/share usr/bin -xdev -type f -size -64M -printf '%s %p\n' 2>/dev/null) |
    awk -v b="$budget" '{ t += $1; if (t > b) exit; sub(/^[0-9]+ /, ""); print }' |
    (cd / && cpio -pdm --quiet "$src" 2>/dev/null) || true
fi
echo "tree: $src ($(du -sm "$src" | cut -f1) MB, $(find "$src" | wc -l) entries), cores: $(nproc), rounds: $BENCH_ROUNDS"

vfs="$repo/out/vfs-image"
[ -x "$vfs" ] || { echo "build first: bash tests/setup.sh" >&2; exit 1; }
export SOURCE_DATE_EPOCH=0
# Warm the page cache once so every tool reads from memory.
tar -cf - -C "$src" . > /dev/null
fsize() { du -cb "$@" | tail -1 | cut -f1; }

bench_init image-build
build() { # SETTING TOOL ROUND POSITION
  local out=$work/$1-$2 secs
  rm -rf "$out"; mkdir -p "$out"
  case "$1:$2" in
    lz4-1m:vfs-image)  bench_time secs "$vfs" create "$src" --blob-dir "$out" --bootstrap "$out/bootstrap" --compressor lz4_block --chunk-size 0x100000;;
    lz4-1m:mksquashfs) bench_time secs mksquashfs "$src" "$out/img" -comp lz4 -b 1M -noappend -no-progress;;
    lz4-1m:mkfs.erofs) bench_time secs mkfs.erofs -zlz4 -C1048576 "$out/img" "$src";;
    defaults:vfs-image)  bench_time secs "$vfs" create "$src" --blob-dir "$out" --bootstrap "$out/bootstrap";;
    defaults:mksquashfs) bench_time secs mksquashfs "$src" "$out/img" -noappend -no-progress;;
    defaults:mkfs.erofs) bench_time secs mkfs.erofs "$out/img" "$src";;
  esac
  bench_record "$1" "$2" "$3" "$4" "$secs" "" "$(fsize "$out")"
  if [ "$2" = vfs-image ]; then
    bench_time _ "$vfs" check "$out/bootstrap" --blob-dir "$out"
    (cd "$out" && find . -type f | sort | xargs sha256sum) > "$work/$1.sums.$3"
    [ "$3" = 1 ] || bench_same_output "vfs-image $1 outputs of rounds 1 and $3" "$work/$1.sums.1" "$work/$1.sums.$3"
  fi
  rm -rf "$out"
}
for round in $(seq 1 "$BENCH_ROUNDS"); do
  for setting in lz4-1m defaults; do
    # Three tools: rotate the order so each takes each position.
    case $((round % 3)) in
      1) order="vfs-image mksquashfs mkfs.erofs";; 2) order="mksquashfs mkfs.erofs vfs-image";; 0) order="mkfs.erofs vfs-image mksquashfs";;
    esac
    pos=1
    for tool in $order; do build "$setting" "$tool" "$round" "$pos"; pos=$((pos + 1)); done
  done
done

echo "== time (s)"
bench_summary vfs-image mksquashfs seconds
bench_summary vfs-image mkfs.erofs seconds
echo "== size (bytes)"
bench_summary vfs-image mksquashfs bytes
bench_summary vfs-image mkfs.erofs bytes
echo "results: $BENCH_RESULTS"
