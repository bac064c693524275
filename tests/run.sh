#!/usr/bin/env bash
# The project's test command: sets up the machine (tests/setup.sh), then runs every test project, unit and integration
# (QEMU guests, /dev/fuse mounts), and prints a closing "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh || exit 1
log=$(mktemp /tmp/vfs-test.XXXXXX)
dotnet test VirtioFs.sln -c Release --nologo -v minimal "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# dotnet test prints one "Failed: F, Passed: P, Skipped: S" summary per test project.
passed=$(sed -n 's/.*Failed: *[0-9]*, *Passed: *\([0-9]*\).*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/.*Failed: *\([0-9]*\), *Passed:.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "${passed:-0} passed, ${failed:-0} failed"
exit "$rc"
