#!/usr/bin/env bash
# Installs what building and testing VirtioFs needs on a fresh Debian 12 machine (run as root), then builds the
# executables into out/. Safe to run again: apt skips what is there, the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 linux-image-amd64 busybox-static cpio fuse3 attr erofs-utils squashfs-tools squashfuse fio
          gcc libc6-dev linux-libc-dev docker-registry
          binutils                     # readelf: the ELF dependency tests compare vfsd's reading of ELF files with it
          uidmap                       # newuidmap/newgidmap: vfsd's unprivileged --sandbox namespace with --uid-map
          linux-libc-dev-arm64-cross   # aarch64 headers: native-shim checks seccomp_aarch64.list against them
          debootstrap b3sum python3-venv   # the bom tests' Debian tree, file digests and Python venv
          rpm sqlite3 db5.3-util)          # rpmbuild and rpm 4.18 (sqlite rpmdb), a WAL writer and libdb's db_load: rpm bom tests
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /tmp/vfs-apt.log 2>&1 || { tail -n 30 /tmp/vfs-apt.log; exit 1; }
fi
# A subordinate id range for nobody, so the rootless sandbox test (SandboxTests.Rootless.cs) can run newuidmap.
grep -q '^nobody:' /etc/subuid 2>/dev/null || usermod --add-subuids 1065536-1131071 nobody
grep -q '^nobody:' /etc/subgid 2>/dev/null || usermod --add-subgids 1065536-1131071 nobody
command -v dotnet > /dev/null || { echo "setup: the .NET 10 SDK is required (dotnet on PATH)" >&2; exit 1; }
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

# The Debian tree the bom tests catalog (tests/VirtioFs.ImageTool.Tests/BomTests.cs), built once and kept: debootstrap
# takes minutes, and the tests compare against dpkg-query on the same tree, so an older tree is as good as a new one.
bom_tree=${VFS_BOM_DEBIAN_TREE:-/var/cache/virtiofs-tests/debian-minbase}
if [ ! -d "$bom_tree/var/lib/dpkg" ]; then
  echo "setup: debootstrap --variant=minbase into $bom_tree"
  mkdir -p "$(dirname "$bom_tree")"
  rm -rf "$bom_tree.tmp"
  # The mirror apt uses here (deb822 or one-line sources); none found: debootstrap's default.
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  debootstrap --variant=minbase bookworm "$bom_tree.tmp" $mirror > /tmp/vfs-debootstrap.log 2>&1 \
    || { tail -n 30 /tmp/vfs-debootstrap.log; exit 1; }
  mv "$bom_tree.tmp" "$bom_tree"
fi

# The executables the integration tests and benchmarks run, published NativeAOT for this CPU's x86-64 level: BLAKE3,
# which checks every chunk read, runs about twice as fast with AVX-512 (x86-64-v4) as with AVX2 (v3). A binary for
# other machines: VFS_ISA=x86-64-v3 bash tests/setup.sh (NativeAOT refuses to start on a CPU below its level).
isa=${VFS_ISA:-x86-64-v3}
if [ -z "${VFS_ISA:-}" ] && grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo \
   && grep -qw avx512cd /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
  isa=x86-64-v4
fi
mkdir -p out
for p in Daemon:vfsd ImageTool:vfs-image; do
  proj=src/VirtioFs.${p%%:*}
  dotnet publish "$proj" -c Release -r linux-x64 -p:PublishAot=true -p:IlcInstructionSet=$isa \
    -o out/.publish-${p##*:} -v quiet -nologo > /tmp/vfs-publish-${p##*:}.log 2>&1 \
    || { tail -n 40 /tmp/vfs-publish-${p##*:}.log; exit 1; }
  cp out/.publish-${p##*:}/${p##*:} out/${p##*:}
done
echo "setup: built $(ls out | tr '\n' ' ')for $isa"

# The S3-compatible server the object storage tests start on 127.0.0.1: npm's s3rver, with Debian's Node. Installed
# into out/s3rver (not the system), pinned, and only when missing.
if [ ! -e out/s3rver/node_modules/s3rver/bin/s3rver.js ]; then
  command -v npm > /dev/null || { apt-get install -y -qq --no-install-recommends nodejs npm > /tmp/vfs-apt.log 2>&1 || { tail -n 30 /tmp/vfs-apt.log; exit 1; }; }
  npm install --prefix out/s3rver --no-audit --no-fund --silent s3rver@3.7.1 > /tmp/vfs-npm.log 2>&1 || { tail -n 30 /tmp/vfs-npm.log; exit 1; }
  echo "setup: installed s3rver into out/s3rver"
fi
# AWS's own Signature V4 signer, with which tests/s3rver/s3rver-sigv4.js checks the signatures s3rver does not.
if [ ! -d out/s3rver/node_modules/@smithy/signature-v4 ] || [ ! -d out/s3rver/node_modules/@aws-crypto/sha256-js ]; then
  npm install --prefix out/s3rver --no-audit --no-fund --silent @smithy/signature-v4@5.7.5 @aws-crypto/sha256-js@5.2.0 > /tmp/vfs-npm.log 2>&1 || { tail -n 30 /tmp/vfs-npm.log; exit 1; }
  echo "setup: installed AWS's signature v4 signer into out/s3rver"
fi
