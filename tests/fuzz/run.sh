#!/usr/bin/env bash
# Long fuzz run of one target: the VirtioFs assemblies instrumented by SharpFuzz, driven by Debian's afl++.
#   bash tests/fuzz/run.sh TARGET SECONDS     fuzz TARGET for SECONDS (default 300), starting from tests/fuzz/corpus/TARGET
#   bash tests/fuzz/run.sh TARGET --seeds     rewrite TARGET's seed files in the corpus (after changing the seeds)
# Targets: vhost-user chain fuse-passthrough fuse-rafs rafs oci auth. Findings go to $VFS_FUZZ_OUT (default
# /tmp/vfs-fuzz)/findings/TARGET/default/{crashes,hangs}; replay one with
#   dotnet $VFS_FUZZ_OUT/bin/VirtioFs.Fuzz.dll TARGET --replay FILE
# and, once fixed, copy it to tests/fuzz/corpus/TARGET/crash-WHAT so the CI replay (tests/VirtioFs.Fuzz.Tests) keeps it.
# Runs as root (the passthrough target creates device nodes and chowns inside its temp share). Not part of tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?usage: run.sh TARGET [SECONDS|--seeds]}
arg=${2:-300}
out=${VFS_FUZZ_OUT:-/tmp/vfs-fuzz}

if [[ $arg == --seeds ]]; then
  dotnet build tests/fuzz/VirtioFs.Fuzz -c Release -v quiet --nologo
  rm -f tests/fuzz/corpus/"$target"/seed-*
  dotnet tests/fuzz/VirtioFs.Fuzz/bin/Release/net10.0/VirtioFs.Fuzz.dll "$target" --seeds tests/fuzz/corpus/"$target"
  exit 0
fi
seconds=$arg

command -v afl-fuzz >/dev/null || apt-get install -y afl++
# The sharpfuzz tool targets an older runtime; roll it forward onto the installed one.
export DOTNET_ROLL_FORWARD=Major
if [[ ! -x $out/tools/sharpfuzz ]]; then
  dotnet tool install --tool-path "$out/tools" SharpFuzz.CommandLine --version 2.3.0
fi

# A fresh build each run (VFS_FUZZ_REUSE=1 keeps the last one): sharpfuzz rewrites assemblies in place and refuses
# to instrument one twice.
if [[ ${VFS_FUZZ_REUSE:-0} != 1 || ! -f $out/bin/.instrumented ]]; then
  rm -rf "$out/bin"
  dotnet build tests/fuzz/VirtioFs.Fuzz -c Release -o "$out/bin" -v quiet --nologo
  for dll in VirtioFs.VhostUser VirtioFs.Virtio VirtioFs.Fuse VirtioFs.Passthrough VirtioFs.Rafs VirtioFs.RafsFs VirtioFs.Storage VirtioFs.Oci; do
    "$out/tools/sharpfuzz" "$out/bin/$dll.dll" >/dev/null
  done
  touch "$out/bin/.instrumented"
fi

findings=$out/findings/$target
rm -rf "$findings"
mkdir -p "$findings"
# -t: per-input time limit (ms) for hang detection; -m none: the .NET runtime reserves far more address space than
# afl's default limit; -V: stop after SECONDS. The .NET host is not afl-instrumented, hence SKIP_BIN_CHECK.
AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
  afl-fuzz -i tests/fuzz/corpus/"$target" -o "$findings" -t 10000 -m none -V "$seconds" \
  -- dotnet "$out/bin/VirtioFs.Fuzz.dll" "$target" > "$findings/afl.log" 2>&1 || {
    echo "afl-fuzz failed; see $findings/afl.log"; tail -20 "$findings/afl.log"; exit 1; }

stats=$findings/default/fuzzer_stats
get() { sed -n "s/^$1 *: *//p" "$stats"; }
echo "$target: $(get run_time) s, $(get execs_done) executions ($(get execs_per_sec)/s), $(get corpus_count) paths" \
  "(corpus $(get corpus_count), found $(get corpus_found)), coverage $(get bitmap_cvg)," \
  "$(get saved_crashes) crashes, $(get saved_hangs) hangs"
ls "$findings/default/crashes" "$findings/default/hangs" 2>/dev/null | grep -v README || true
