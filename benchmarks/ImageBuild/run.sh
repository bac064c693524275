#!/usr/bin/env bash
# Build time and output size of `vfs-image create` against mksquashfs and mkfs.erofs on the same tree, same run,
# reported as ratios (vfs-image / peer). Usage: run.sh [SOURCE_TREE] [SIZE_MB]
# Without SOURCE_TREE, a tree of real files (~SIZE_MB, default 400) is copied from /usr into a temp dir.
# The bar: vfs-image --compressor lz4_block no slower than 1.5x `mksquashfs -comp lz4`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
size_mb="${2:-400}"
work="$(mktemp -d /tmp/vfs-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

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
echo "tree: $src ($(du -sm "$src" | cut -f1) MB, $(find "$src" | wc -l) entries), cores: $(nproc)"

dotnet publish "$repo/src/VirtioFs.ImageTool" -c Release -o "$work/bin" -v q --nologo >/dev/null
vfs="$work/bin/vfs-image"
sync

# Times one build. A tool that fails stops the benchmark: the time of a failed run means nothing. (Inside $(...), the
# exit ends the subshell, and set -e then stops the script at the assignment.)
t() {
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/stderr" || { echo "benchmark: '$*' failed (exit $?):" >&2; tail -5 "$work/stderr" >&2; exit 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
fsize() { du -cb "$@" | tail -1 | cut -f1; }

export SOURCE_DATE_EPOCH=0
# Warm the page cache once so every tool reads from memory.
tar -cf - -C "$src" . >/dev/null

vt=$(t "$vfs" create "$src" --blob-dir "$work/vfs" --bootstrap "$work/vfs/bootstrap" --compressor lz4_block)
vs=$(fsize "$work/vfs")
st=$(t mksquashfs "$src" "$work/sq.img" -comp lz4 -noappend -no-progress)
ss=$(fsize "$work/sq.img")
et=$(t mkfs.erofs -zlz4 "$work/erofs.img" "$src")
es=$(fsize "$work/erofs.img")
zt=$(t "$vfs" create "$src" --blob-dir "$work/vfsz" --bootstrap "$work/vfsz/bootstrap" --compressor zstd)
zs=$(fsize "$work/vfsz")

printf '%-32s %10s %14s\n' tool seconds bytes
printf '%-32s %10.2f %14d\n' "vfs-image lz4_block (blake3)" "$vt" "$vs"
printf '%-32s %10.2f %14d\n' "vfs-image zstd (blake3)" "$zt" "$zs"
printf '%-32s %10.2f %14d\n' "mksquashfs -comp lz4" "$st" "$ss"
printf '%-32s %10.2f %14d\n' "mkfs.erofs -zlz4" "$et" "$es"
echo "ratios (vfs-image lz4_block / peer):"
echo "  time vs mksquashfs: $(echo "scale=2; $vt / $st" | bc)   size vs mksquashfs: $(echo "scale=2; $vs / $ss" | bc)"
echo "  time vs mkfs.erofs: $(echo "scale=2; $vt / $et" | bc)   size vs mkfs.erofs: $(echo "scale=2; $vs / $es" | bc)"
ok=$(echo "$vt <= 1.5 * $st" | bc)
[[ "$ok" == 1 ]] && echo "bar met: create lz4_block <= 1.5x mksquashfs -comp lz4" || { echo "bar NOT met"; exit 1; }
