#!/usr/bin/env bash
# Cold start of a container image, lazy (vfsd pulling chunks on demand) against the OCI baseline (pull the gzip
# layers, unpack, then start), side by side in one run over the same shaped link to a real registry.
#
# The image: a Debian bookworm root filesystem (debootstrap --variant=minbase, built once and kept in
# /var/tmp/vfs-coldstart-rootfs) plus PAYLOAD MB under /opt/payload (several large files, ~95% random bytes) that the
# workload barely touches. It is pushed twice to Debian's docker-registry (the CNCF distribution registry), which runs
# in a network namespace this script creates: as a nydus image (`vfs-image create` + `vfs-image push`) and as a plain
# OCI image with two gzip tar layers, base + payload (benchmarks/cold-start/oci.py). Pushing happens inside the
# namespace over its loopback, outside the timed region.
#
# The link: a veth pair into the namespace, each end rate-limited with tc tbf (--rate, 200 Mbit/s by default). This
# kernel has no sch_netem, so the latency is added by benchmarks/cold-start/delay-proxy.py, a small asyncio TCP proxy
# on the host side: each forwarded segment is released DELAY/2 after it arrived, per direction (20 ms more round
# trip by default), without limiting throughput. Both sides reach the registry only through that proxy, which also
# counts the bytes each side fetched.
#
# "Start" = the time until the workload's start-up files have been read: the workload is what starting a container
# runs (a few real programs in `chroot ROOT`, with /proc and /dev mounted as a runtime would), the same command on
# both sides. Timed, with the host page cache dropped before each side:
#   OCI:  download  = manifest + both layers through the link (in parallel, sha256 checked as containerd does)
#         unpack    = tar -xzf of each layer, bottom first, into an empty directory
#         workload  = the workload on that directory
#   lazy: start     = `vfsd mount --image REF --config CFG --cache-dir EMPTY MNT` until MNT is mounted: the daemon
#                     resolves index, manifest and bootstrap layer through the link, then mounts (CFG: registry
#                     backend tuning, no prefetch)
#         workload  = the workload on MNT, every chunk it reads fetched from the registry with a Range request
#   lazy+pf: the same, with fs_prefetch on: vfsd fetches the image's prefetch table from mount on (8 threads). The
#         table lists start-up files, recorded before the build by running ANOTHER container command once on the
#         source tree (atime), as nydus users record theirs: a table recorded from the very workload it then replays
#         would flatter it. The payload file the workload peeks at is left out of it.
#   s3:   the lazy side with its data blobs in a bucket instead: the same nydus image's blobs are also uploaded
#         (`vfs-image push --backend-type s3`) to s3rver (tests/s3rver/s3rver-sigv4.js, signatures checked), which runs
#         in the same namespace behind its own delay proxy on the same shaped link; `vfsd mount --image REF --config
#         S3CFG` takes the bootstrap from the registry and every chunk from the bucket (bytes: both proxies' sum)
# and the ratios OCI total / lazy total, OCI total / lazy+pf total (medians over the rounds, with their spread).
# The workload's output must be the same on every side, or the run fails.
#
# The floor: what a perfect lazy loader could not beat on this link. Its bytes are what an on-demand mount with no
# read-ahead at all (amplify_io 0, no prefetch) moves for the workload, manifest and bootstrap included (measured once
# before the rounds); its time is those bytes at the measured link rate plus four round trips of the link's delay
# (opening the connection, then three requests that depend on each other: the manifest, the bootstrap layer, then all
# the data ranges at once).
#
# It follows benchmarks/lib/harness.sh: rounds rotate the order of the three sides, every side's exit status and
# output are checked, and the results go to benchmarks/results/cold-start.csv (start time and bytes fetched per side
# and round, and the floor), with the bytes-against-time curves of round 1 in cold-start-timeline.csv for
# benchmarks/report.sh.
#
#   benchmarks/cold-start.sh [--rate 200mbit] [--delay-ms 20] [--payload-mb 700] [--rounds N (default 5)] [--smoke]
#                            [--amplify-io BYTES (nydus amplify_io of the lazy sides; default vfsd's, 128 KiB)]
#     --smoke: a busybox tree and 30 MB of payload instead of debootstrap (checks the machinery in seconds)
#     --debug-log DIR: run vfsd at --log-level debug and keep each lazy side's log in DIR: the per-request timeline
#       (event 6051: each backend read's duration and the reads in flight beside it). Logging costs time; profile with
#       it, do not report the times of such a run.
# Needs root, out/vfsd and out/vfs-image and out/s3rver (bash tests/setup.sh), docker-registry, node, python3,
# debootstrap (not for --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/lib/harness.sh
here=benchmarks/cold-start
rate=200mbit delay_ms=20 payload_mb=700 rounds=$BENCH_ROUNDS smoke=0 amplify="" debug_log="" vfsd_log_level=warn
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2;;
    --delay-ms) delay_ms=$2; shift 2;;
    --payload-mb) payload_mb=$2; shift 2;;
    --rounds) rounds=$2; shift 2;;
    --amplify-io) amplify=$2; shift 2;;
    --smoke) smoke=1; shift;;
    --debug-log) debug_log=$2 vfsd_log_level=debug; mkdir -p "$debug_log"; shift 2;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
[ "$smoke" = 1 ] && [ "$payload_mb" = 700 ] && payload_mb=30
[[ $payload_mb =~ ^[0-9]+$ && $rounds =~ ^[1-9][0-9]*$ && $delay_ms =~ ^[0-9]+$ && $amplify =~ ^[0-9]*$ ]] \
  || { echo "--payload-mb, --rounds, --delay-ms and --amplify-io take whole numbers" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (network namespace, tc, mounts, chroot)" >&2; exit 1; }
for t in out/vfsd out/vfs-image; do [ -x "$t" ] || { echo "build first: bash tests/setup.sh" >&2; exit 1; }; done
[ -d out/s3rver/node_modules/@smithy/signature-v4 ] || { echo "s3rver is missing: bash tests/setup.sh" >&2; exit 1; }
for c in docker-registry node python3 tc ip mountpoint; do
  command -v "$c" > /dev/null || { echo "$c is missing (docker-registry: bash tests/setup.sh)" >&2; exit 1; }
done
[ "$smoke" = 1 ] || command -v debootstrap > /dev/null || { echo "apt-get install debootstrap" >&2; exit 1; }

rootfs_cache=/var/tmp/vfs-coldstart-rootfs
work=$(mktemp -d /var/tmp/vfs-coldstart.XXXXXX)
ns=vfscs$$ veth_host=vcs$$h veth_ns=vcs$$n
net=10.213.$(( $$ % 250 + 1 ))
registry_pid='' proxy_pid='' vfsd_pid='' s3_pid='' s3_proxy_pid=''

cleanup() {
  set +e
  for m in "$work"/{lazy/mnt,oci/root,trace}/{proc,dev} "$work"/lazy/mnt "$work"/trace; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  for p in $vfsd_pid $proxy_pid $registry_pid $s3_proxy_pid $s3_pid; do kill "$p" 2>/dev/null; done
  for p in $vfsd_pid $proxy_pid $registry_pid $s3_proxy_pid $s3_pid; do wait "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  ip link del "$veth_host" 2>/dev/null
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------------------------------------------------------
# The workload, in a chroot with /proc and /dev as a container runtime mounts them (the FUSE mount is nodev).
run_workload() { # ROOT OUTFILE [COMMAND]
  mount -t proc proc "$1/proc"
  mount --bind /dev "$1/dev"
  local rc=0
  chroot "$1" /bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$shell" -c "${3:-$workload}" > "$2" 2>&1 || rc=$?
  umount "$1/dev" "$1/proc"
  [ "$rc" = 0 ] || { echo "workload failed in $1 (exit $rc):" >&2; cat "$2" >&2; return 1; }
}

# ---------------------------------------------------------------------------------------------------------------
# The tree: rootfs (cached) + payload.
tree=$work/tree
if [ "$smoke" = 1 ]; then
  echo "== smoke: a busybox tree"
  mkdir -p "$tree"/{bin,etc,proc,dev,tmp,usr/share/doc/busybox}
  cp /bin/busybox "$tree/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$tree/bin/$a" ] || ln -s busybox "$tree/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$tree/etc/passwd"
  printf 'PRETTY_NAME="busybox smoke tree"\n' > "$tree/etc/os-release"
  cp -r /usr/share/doc/busybox-static/. "$tree/usr/share/doc/busybox/" 2>/dev/null || true
  workload='ls -R /etc /usr | wc -l; wc -l < /etc/passwd; cat /etc/os-release; sha256sum /bin/busybox | cut -c1-16;
            head -c 4096 /opt/payload/part-00 | md5sum; ls /proc/self > /dev/null && echo proc ok'
  record_workload='ls /bin /etc > /dev/null; cat /etc/passwd /etc/os-release > /dev/null; sh -c "echo recorded" > /dev/null'
  shell=/bin/sh
else
  if [ ! -x "$rootfs_cache/usr/bin/apt-get" ]; then
    echo "== debootstrap bookworm minbase into $rootfs_cache (once; minutes)"
    rm -rf "$rootfs_cache.tmp"
    debootstrap --variant=minbase bookworm "$rootfs_cache.tmp" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
      || { tail -n 20 "$work/debootstrap.log"; exit 1; }
    rm -rf "$rootfs_cache" && mv "$rootfs_cache.tmp" "$rootfs_cache"
  fi
  echo "== copying the rootfs from $rootfs_cache"
  cp -a "$rootfs_cache" "$tree"
  # What a container start reads: the shell, dpkg's database, apt and its library, perl, the config tree, a few
  # coreutils, and the first page of one payload file (the payload is there, barely touched).
  workload='dpkg -l | wc -l; apt-get --version | head -n 1; ls -R /etc | wc -l; perl -e "print qq(perl \$]\n)";
            bash --version | head -n 1; grep PRETTY /etc/os-release; id; ls -l /usr/bin | wc -l; df -h / > /dev/null;
            head -c 4096 /opt/payload/part-00 | md5sum'
  # Another container command, for the prefetch table: a shell that runs a package query and a perl one-liner. It
  # shares the usual start-up files (the shell, libc, perl, dpkg's database) with the workload, not all of them.
  record_workload='dpkg -s coreutils > /dev/null; perl -MPOSIX -e "print strftime(q(%Y), gmtime(0))" > /dev/null;
            cat /etc/passwd /etc/os-release > /dev/null; bash -c "true"; ls /usr/lib > /dev/null'
  shell=/bin/bash
fi
echo "== payload: $payload_mb MB under /opt/payload"
mkdir -p "$tree/opt/payload"
piece=$(( payload_mb / 3 < 100 ? payload_mb / 3 : 100 )); [ "$piece" -ge 1 ] || piece=1
left=$payload_mb i=0
text_mb=$(( payload_mb / 20 ))
if [ "$text_mb" -gt 0 ]; then # ~5% compressible (logs, text data), the rest random
  { yes 'payload: the workload does not read this line; it is here so the image carries some compressible data' || true; } \
    | head -c $(( text_mb << 20 )) > "$tree/opt/payload/notes.txt"
  left=$(( left - text_mb ))
fi
while [ "$left" -gt 0 ]; do
  n=$(( left < piece ? left : piece ))
  head -c $(( n << 20 )) /dev/urandom > "$tree/opt/payload/part-$(printf %02d $i)"
  left=$(( left - n )) i=$(( i + 1 ))
done
tree_bytes=$(du -sb "$tree" | cut -f1)

# The start-up files, as nydus users record them for an image's prefetch table: run the workload once on the tree
# through a strictatime bind mount, with every atime set to 0 first, and list the files it read.
echo "== recording the start-up files (another container command once on the source tree; files whose atime moved)"
find "$tree" -type f -exec touch -a -d @0 {} +
mkdir -p "$work/trace"
mount --bind "$tree" "$work/trace"
mount --make-private "$work/trace" # /proc and /dev mounted on it must not propagate into $tree
mount -o remount,bind,strictatime "$work/trace"
run_workload "$work/trace" "$work/trace.out" "$record_workload"
umount "$work/trace"
# The payload file the workload peeks at (4 KiB of 100 MB) is left out: a prefetch table names whole files, and
# fetching it would spend the link on bytes nobody reads.
(cd "$tree" && find . -type f -newerat @1 -printf '/%P\n') | grep -v '^/opt/payload/' > "$work/startup.list"
echo "   $(wc -l < "$work/startup.list") files, $(mb "$(cd "$tree" && sed 's|^/|./|' "$work/startup.list" | tr '\n' '\0' | du -cb --files0-from=- | tail -n 1 | cut -f1)")"
echo "   tree: $(mb "$tree_bytes"), $(find "$tree" | wc -l) entries"

# ---------------------------------------------------------------------------------------------------------------
# Both images.
echo "== building the nydus image (vfs-image create) and the OCI layers (tar | gzip)"
mkdir -p "$work/nydus/blobs" "$work/layers"
out/vfs-image create --bootstrap "$work/nydus/image.boot" --blob-dir "$work/nydus/blobs" --prefetch-files "$work/startup.list" \
  "$tree" > "$work/create.log"
tar -C "$tree" --numeric-owner --exclude=./opt/payload -cf - . | gzip > "$work/layers/base.tar.gz"
tar -C "$tree" --numeric-owner -cf - ./opt/payload | gzip > "$work/layers/payload.tar.gz"
nydus_bytes=$(du -cb "$work/nydus/blobs" "$work/nydus/image.boot" | tail -n 1 | cut -f1)
oci_bytes=$(du -cb "$work/layers" | tail -n 1 | cut -f1)
echo "   nydus: $(mb "$nydus_bytes") (bootstrap $(mb "$(stat -c %s "$work/nydus/image.boot")")), OCI gzip layers: $(mb "$oci_bytes")"
rm -rf "$tree"

# ---------------------------------------------------------------------------------------------------------------
# The shaped link and the registry.
echo "== network namespace $ns: veth $net.1 <-> $net.2, tbf $rate each way, +${delay_ms} ms round trip in the proxy"
ip netns add "$ns"
ip link add "$veth_host" type veth peer name "$veth_ns"
ip link set "$veth_ns" netns "$ns"
ip addr add "$net.1/30" dev "$veth_host"
ip link set "$veth_host" up
ip netns exec "$ns" ip addr add "$net.2/30" dev "$veth_ns"
ip netns exec "$ns" ip link set "$veth_ns" up
ip netns exec "$ns" ip link set lo up
# tbf: the bucket holds ~10 ms at 200 Mbit/s; packets wait up to 100 ms before tbf drops them (TCP then backs off).
tc qdisc add dev "$veth_host" root tbf rate "$rate" burst 256kb latency 100ms
ip netns exec "$ns" tc qdisc add dev "$veth_ns" root tbf rate "$rate" burst 256kb latency 100ms

mkdir -p "$work/registry/data"
cat > "$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/data
http:
  addr: 0.0.0.0:5000
  secret: vfs-coldstart
EOF
# wait_in_ns PORT PID LOG: waits until a server started in the namespace accepts on PORT, or shows its log if it died.
wait_in_ns() {
  for _ in $(seq 1 400); do
    ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; exit 1; }
    sleep 0.05
  done
  echo "benchmark: nothing listens on port $1 in the namespace" >&2; cat "$3" >&2; exit 1
}
# start_delay_proxy LISTEN_PORT TARGET CONTROL_PORT TIMELINE LOG: the shaped link's latency (see the header); sets
# delay_proxy_pid once its control port answers.
start_delay_proxy() {
  python3 "$here/delay-proxy.py" "127.0.0.1:$1" "$2" "$3" "$(( delay_ms / 2 ))" "$4" > "$5" 2>&1 &
  delay_proxy_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && break; sleep 0.05; done
}

ip netns exec "$ns" docker-registry serve "$work/registry/config.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
wait_in_ns 5000 "$registry_pid" "$work/registry.log"

proxy_port=$(free_port) control_port=$(free_port)
start_delay_proxy "$proxy_port" "$net.2:5000" "$control_port" "$work/timeline" "$work/proxy.log"
proxy_pid=$delay_proxy_pid
# The proxy's counters: "bytes-down bytes-up connections requests"; delta OLD NEW -> "N MB (R)".
fetched() { local l; exec 3<>"/dev/tcp/127.0.0.1/$control_port"; read -r l <&3; exec 3<&-; echo "$l"; }
delta() { local a b; read -r -a a <<< "$1"; read -r -a b <<< "$2"; echo "$(mb $(( b[0] - a[0] ))) ($(( b[3] - a[3] )))"; }
delta_bytes() { local a b; read -r -a a <<< "$1"; read -r -a b <<< "$2"; echo $(( b[0] - a[0] )); }
registry=127.0.0.1:$proxy_port

# The bucket: s3rver in the same namespace, behind its own delay proxy on the same link.
mkdir -p "$work/s3/data"
ip netns exec "$ns" env NODE_PATH="$PWD/out/s3rver/node_modules" node tests/s3rver/s3rver-sigv4.js "$work/s3/data" 0.0.0.0 9000 coldstart \
  > "$work/s3rver.log" 2>&1 &
s3_pid=$!
wait_in_ns 9000 "$s3_pid" "$work/s3rver.log"
s3_proxy_port=$(free_port) s3_control_port=$(free_port)
start_delay_proxy "$s3_proxy_port" "$net.2:9000" "$s3_control_port" "$work/timeline-s3" "$work/s3-proxy.log"
s3_proxy_pid=$delay_proxy_pid
s3_fetched() { local l; exec 3<>"/dev/tcp/127.0.0.1/$s3_control_port"; read -r l <&3; exec 3<&-; echo "$l"; }
s3_bucket() { # ENDPOINT: the backend's config object (nydus S3Config keys), s3rver's one account
  echo "{\"scheme\": \"http\", \"endpoint\": \"$1\", \"region\": \"us-east-1\", \"bucket_name\": \"coldstart\",
         \"object_prefix\": \"nydus/\", \"access_key_id\": \"S3RVER\", \"access_key_secret\": \"S3RVER\",
         \"timeout\": 30, \"connect_timeout\": 5, \"retry_limit\": 3}"
}
s3_bucket 127.0.0.1:9000 > "$work/s3-push.json"

echo "== pushing both images (inside the namespace, not through the shaped link)"
ip netns exec "$ns" out/vfs-image push "$work/nydus/image.boot" --blob-dir "$work/nydus/blobs" \
  --target 127.0.0.1:5000/coldstart/nydus:latest --plain-http > "$work/push-nydus.log"
ip netns exec "$ns" out/vfs-image push "$work/nydus/image.boot" --blob-dir "$work/nydus/blobs" \
  --backend-type s3 --backend-config "$work/s3-push.json" > "$work/push-s3.log"
ip netns exec "$ns" python3 "$here/oci.py" push 127.0.0.1:5000 coldstart/oci latest \
  "$work/layers/base.tar.gz" "$work/layers/payload.tar.gz" > "$work/push-oci.log"
rm -rf "$work/layers" "$work/nydus"

# The link as the clients see it: round trip of a tiny request, and the rate of a 20 MB range of the largest blob.
rtt=$(curl -s -o /dev/null -w '%{time_total}' "http://$registry/v2/")
big=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$registry/v2/coldstart/oci/manifests/latest" \
  | python3 -c 'import json,sys; print(max(json.load(sys.stdin)["layers"], key=lambda l: l["size"])["digest"])')
speed=$(curl -s -o /dev/null -r 0-20971519 -w '%{speed_download}' "http://$registry/v2/coldstart/oci/blobs/$big")
echo "   through the proxy: GET /v2/ $(awk -v t="$rtt" 'BEGIN { printf "%.0f ms", t * 1000 }'), download $(awk -v s="$speed" 'BEGIN { printf "%.0f Mbit/s", s * 8 / 1e6 }')"

# Two lazy configurations of the same image: chunks fetched only when read (fs_prefetch off), and nydus's usual
# set-up for start-up, the image's prefetch table (the start-up files recorded above) fetched by 8 threads from mount on.
lazy_config() { # FILE PREFETCH(true|false) [AMPLIFY_IO]
  local amplify=${3:-$amplify}
  cat > "$1" <<EOF
{
  "device": {
    "backend": { "type": "registry",
                 "config": { "scheme": "http",
                             "timeout": 30, "connect_timeout": 5, "retry_limit": 3 } },
    "cache": { "type": "blobcache", "config": { "work_dir": "$work/lazy/cache" } }
  },
  "mode": "direct",
  ${amplify:+\"amplify_io\": $amplify,}
  "digest_validate": false,
  "fs_prefetch": { "enable": $2, "threads_count": 8 }
}
EOF
}
lazy_config "$work/lazy.json" false
lazy_config "$work/lazy-prefetch.json" true
lazy_config "$work/floor.json" false 0
# The s3 side: the lazy side's settings with the bucket as the backend.
cat > "$work/s3.json" <<EOF
{
  "device": {
    "backend": { "type": "s3", "config": $(s3_bucket "127.0.0.1:$s3_proxy_port") },
    "cache": { "type": "blobcache", "config": { "work_dir": "$work/lazy/cache" } }
  },
  "mode": "direct",
  ${amplify:+\"amplify_io\": $amplify,}
  "digest_validate": false,
  "fs_prefetch": { "enable": false }
}
EOF

oci_side() { # ROUND -> sets o_dl o_unpack o_work o_total o_fetch
  rm -rf "$work/oci"; mkdir -p "$work/oci/root"
  drop
  local b0 t0 t1 t2 t3
  b0=$(fetched); t0=$(now)
  python3 "$here/oci.py" pull "$registry" coldstart/oci latest "$work/oci/dl" > "$work/oci/layers"
  t1=$(now)
  while read -r layer; do tar -xzf "$layer" -C "$work/oci/root" --numeric-owner; done < "$work/oci/layers"
  t2=$(now)
  run_workload "$work/oci/root" "$work/oci-$1.out"
  t3=$(now)
  local b1; b1=$(fetched)
  o_fetch=$(delta "$b0" "$b1") o_bytes=$(delta_bytes "$b0" "$b1") o_t0=$t0 o_t3=$t3
  o_dl=$(sub "$t1" "$t0") o_unpack=$(sub "$t2" "$t1") o_work=$(sub "$t3" "$t2") o_total=$(sub "$t3" "$t0")
  rm -rf "$work/oci"
}

lazy_side() { # NAME CONFIG -> sets l_mount l_work l_total l_fetch
  rm -rf "$work/lazy"; mkdir -p "$work/lazy/cache" "$work/lazy/mnt"
  drop
  local b0 t0 t2 t3 up=0
  b0=$(fetched); t0=$(now)
  out/vfsd mount --image "$registry/coldstart/nydus:latest" --config "$2" --cache-dir "$work/lazy/cache" \
    --log-level "$vfsd_log_level" "$work/lazy/mnt" > "$work/vfsd-$1.log" 2>&1 &
  vfsd_pid=$!
  for _ in $(seq 1 2000); do
    mountpoint -q "$work/lazy/mnt" && { up=1; break; }
    kill -0 "$vfsd_pid" 2>/dev/null || break
    sleep 0.005
  done
  [ "$up" = 1 ] || { echo "vfsd did not mount:" >&2; cat "$work/vfsd-$1.log" >&2; exit 1; }
  t2=$(now)
  run_workload "$work/lazy/mnt" "$work/$1.out"
  t3=$(now)
  local b1; b1=$(fetched)
  l_fetch=$(delta "$b0" "$b1") l_bytes=$(delta_bytes "$b0" "$b1") l_t0=$t0 l_t3=$t3
  l_mount=$(sub "$t2" "$t0") l_work=$(sub "$t3" "$t2") l_total=$(sub "$t3" "$t0")
  umount "$work/lazy/mnt"
  wait "$vfsd_pid" || { echo "vfsd exited with an error:" >&2; cat "$work/vfsd-$1.log" >&2; exit 1; }
  [ -z "$debug_log" ] || cp "$work/vfsd-$1.log" "$debug_log/"
  vfsd_pid=''
}

s3_side() { # NAME -> sets s_mount s_work s_total s_fetch s_bytes (bootstrap from the registry, chunks from the bucket)
  local b0 b1 c0 c1 r0 r1 q0 q1
  b0=$(fetched); c0=$(s3_fetched)
  lazy_side "$1" "$work/s3.json"
  b1=$(fetched); c1=$(s3_fetched)
  read -r -a r0 <<< "$b0"; read -r -a r1 <<< "$b1"; read -r -a q0 <<< "$c0"; read -r -a q1 <<< "$c1"
  # Registry (bootstrap) and bucket (chunks) together: "N MB (registry requests+bucket requests)".
  s_bytes=$(( r1[0] - r0[0] + q1[0] - q0[0] ))
  s_fetch="$(mb "$s_bytes") ($(( r1[3] - r0[3] ))+$(( q1[3] - q0[3] )))"
  s_mount=$l_mount s_work=$l_work s_total=$l_total
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
row() { printf '%-6s %-8s %-18s %-16s %8ss %8ss %24s\n' "$@"; }

# The floor (see the header): one untimed on-demand run with no read-ahead gives the bytes the workload needs.
echo "== the floor: an on-demand run with amplify_io 0 and no prefetch (not timed)"
lazy_side floor "$work/floor.json"
floor_bytes=$l_bytes
# One connection set-up and three dependent requests, each one round trip of the link's added delay.
floor=$(awk -v b="$floor_bytes" -v r="$speed" -v d="$delay_ms" 'BEGIN { printf "%.3f", b / r + 4 * d / 1000 }')
echo "   the workload needs $(mb "$floor_bytes") (requests: $l_fetch); at the measured $(awk -v s="$speed" 'BEGIN { printf "%.0f Mbit/s", s * 8 / 1e6 }') plus 4 round trips of ${delay_ms} ms: floor ${floor}s"

# Round 1's bytes-against-time curves, from the proxy's timeline (one clock: both use the wall clock).
curve() { # SIDE T0 T3
  awk -v side="$1" -v t0="$2" -v t3="$3" -v base="$4" '$1 >= t0 && $1 <= t3 + 0.05 { printf "%s,%.3f,%d\n", side, $1 - t0, $2 - base }' "$work/timeline"
}

bench_init cold-start
timeline_csv=$(dirname "$BENCH_RESULTS")/cold-start-timeline.csv
echo "side,seconds,bytes" > "$timeline_csv"
echo "== $rounds round(s); each runs OCI, lazy, lazy + prefetch table and s3 in a rotating order, the host page cache dropped before each"
for r in $(seq 1 "$rounds"); do
  case $((r % 3)) in 1) order="oci lazy lazy-prefetch s3";; 2) order="lazy lazy-prefetch s3 oci";; 0) order="lazy-prefetch s3 oci lazy";; esac
  pos=1
  for side in $order; do
    b_before=$(awk 'END { print $2 + 0 }' "$work/timeline" 2>/dev/null || echo 0)
    case $side in
      oci)  oci_side "$r"
            bench_record start oci "$r" "$pos" "$o_total" "" "$o_bytes"
            [ "$r" = 1 ] && curve oci "$o_t0" "$o_t3" "$b_before" >> "$timeline_csv";;
      lazy) lazy_side "lazy-$r" "$work/lazy.json"
            read -r d_mount d_work d_total d_fetch <<< "$l_mount $l_work $l_total $l_fetch"
            bench_record start lazy "$r" "$pos" "$l_total" "" "$l_bytes"
            [ "$r" = 1 ] && curve lazy "$l_t0" "$l_t3" "$b_before" >> "$timeline_csv";;
      lazy-prefetch)
            lazy_side "prefetch-$r" "$work/lazy-prefetch.json"
            read -r p_mount p_work p_total p_fetch <<< "$l_mount $l_work $l_total $l_fetch"
            bench_record start lazy-prefetch "$r" "$pos" "$l_total" "" "$l_bytes"
            [ "$r" = 1 ] && curve lazy+prefetch "$l_t0" "$l_t3" "$b_before" >> "$timeline_csv";;
      s3)   s3_side "s3-$r"
            bench_record start s3 "$r" "$pos" "$s_total" "" "$s_bytes";;
    esac
    pos=$((pos + 1))
  done
  bench_record start floor "$r" 0 "$floor" "" "$floor_bytes"
  for side in floor "lazy-$r" "prefetch-$r" "s3-$r"; do
    bench_same_output "what the workload printed on the OCI and $side sides" "$work/oci-$r.out" "$work/$side.out"
  done
  [ "$r" = 1 ] && printf '\n%-6s %-8s %-18s %-16s %9s %9s %24s\n' round side fetch "unpack / start" workload total "from registry (requests)"
  row "$r" OCI "download ${o_dl}s" "unpack ${o_unpack}s" "$o_work" "$o_total" "$o_fetch"
  row "" lazy "" "start ${d_mount}s" "$d_work" "$d_total" "$d_fetch"
  row "" "lazy+pf" "" "start ${p_mount}s" "$p_work" "$p_total" "$p_fetch"
  row "" s3 "" "start ${s_mount}s" "$s_work" "$s_total" "$s_fetch"
  printf '%-6s ratio OCI / lazy: %sx, OCI / lazy+pf: %sx; lazy / floor: %sx\n' "" "$(ratio "$o_total" "$d_total")" \
    "$(ratio "$o_total" "$p_total")" "$(awk -v a="$d_total" -v b="$floor" 'BEGIN { printf "%.2f", a / b }')"
done
echo
echo "workload output (same on every side):"; sed 's/^/  /' "$work/oci-1.out"
echo
echo "cold start, image $(mb "$tree_bytes") ($([ "$smoke" = 1 ] && echo "busybox smoke tree" || echo "debian bookworm minbase") + ${payload_mb} MB payload), link $rate + ${delay_ms} ms:"
echo "== speed-up, OCI / lazy (bar 5x, goal 20x)"
bench_summary oci lazy seconds
bench_summary oci lazy-prefetch seconds
bench_summary oci s3 seconds
echo "== distance to the floor, lazy / floor (goal 1.5x)"
bench_summary lazy floor seconds
bench_summary lazy-prefetch floor seconds
echo "== bytes fetched"
bench_summary lazy floor bytes
echo "results: $BENCH_RESULTS, $timeline_csv"
