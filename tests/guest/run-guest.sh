#!/usr/bin/env bash
# Boots a throw-away Linux guest under QEMU (TCG) with one or more vhost-user-fs devices, runs a shell script inside it
# and prints the guest's serial console. The script's exit code is printed as "@@EXIT <n>" and becomes ours.
#
# The guest is Debian's 6.1 kernel plus a busybox initramfs built here on each run, so nothing large is committed.
# The vhost-user daemons are started by the caller: this script is the QEMU front-end only.
#
#   run-guest.sh --script FILE [--fs TAG=SOCKET]... [--mem 1G] [--smp 2] [--timeout 600] [--queue-size 1024]
#
# Inside the guest each TAG is mounted at /mnt/TAG (virtiofs), proc/sys/dev/tmp are ready, and $VFS_TAGS lists the tags.
set -euo pipefail

script="" mem=1G smp=2 timeout=600 qsize=1024
fs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --script) script=$2; shift 2;;
    --fs) fs+=("$2"); shift 2;;
    --mem) mem=$2; shift 2;;
    --smp) smp=$2; shift 2;;
    --timeout) timeout=$2; shift 2;;
    --queue-size) qsize=$2; shift 2;;
    *) echo "run-guest: unknown argument $1" >&2; exit 2;;
  esac
done
[ -n "$script" ] && [ -f "$script" ] || { echo "run-guest: --script FILE is required" >&2; exit 2; }

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "run-guest: no kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 3; }
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver/kernel
busybox=$(command -v busybox) || { echo "run-guest: busybox-static is not installed" >&2; exit 3; }

work=$(mktemp -d /tmp/vfs-guest.XXXXXX)
[ -n "${VFS_GUEST_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,mnt,lib/modules,etc}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"; done
# Small static tools busybox lacks (getfattr), built from source each run like the rest of the initramfs.
for tool in "$(dirname "$0")"/tools/*.c; do
  gcc -static -O2 -o "$root/bin/$(basename "$tool" .c)" "$tool" || { echo "run-guest: cannot build $tool (gcc, libc6-dev)" >&2; exit 3; }
done
# Load order matters: each module depends on the ones before it (REFERENCE.md).
mods="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
      drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/fuse/fuse fs/fuse/virtiofs"
for m in $mods; do
  f=$(ls "$moddir/$m.ko"* 2>/dev/null | head -n 1)
  [ -n "$f" ] || { echo "run-guest: module $m missing" >&2; exit 3; }
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$(basename "$m").ko";;
    *.zst) zstd -dcq "$f" > "$root/lib/modules/$(basename "$m").ko";;
    *) cp "$f" "$root/lib/modules/$(basename "$m").ko";;
  esac
done
cp "$script" "$root/test.sh"
tags=""
for spec in "${fs[@]}"; do tags="$tags ${spec%%=*}"; done
cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin VFS_TAGS="$tags" HOME=/tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in $(for m in $mods; do printf '%s ' "$(basename "$m")"; done); do insmod /lib/modules/\$m.ko || echo "@@INSMOD-FAILED \$m"; done
for t in \$VFS_TAGS; do mkdir -p /mnt/\$t; mount -t virtiofs \$t /mnt/\$t || echo "@@MOUNT-FAILED \$t"; done
echo "@@GUEST-READY \$(cut -d' ' -f1 /proc/uptime)"
sh /test.sh
echo "@@EXIT \$?"
for t in \$VFS_TAGS; do umount /mnt/\$t 2>/dev/null; done
sync
poweroff -f
INIT
chmod +x "$root/init" "$root/test.sh"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd"

# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss its ticks and panic
# ("IO-APIC + timer doesn't work!", seen in CI on 2026-12-05); the check only guards against broken timer hardware.
args=(-accel tcg -m "$mem" -smp "$smp" -display none -monitor none -serial stdio -no-reboot
      -kernel "$kernel" -initrd "$work/initrd" -append "console=ttyS0 rdinit=/init quiet loglevel=3 panic=-1 no_timer_check"
      -object "memory-backend-memfd,id=mem,size=$mem,share=on" -numa node,memdev=mem)
i=0
for spec in "${fs[@]}"; do
  args+=(-chardev "socket,id=vfs$i,path=${spec#*=}" -device "vhost-user-fs-pci,chardev=vfs$i,tag=${spec%%=*},queue-size=$qsize")
  i=$((i + 1))
done
out=$work/console
set +e
timeout --kill-after=10 "$timeout" qemu-system-x86_64 "${args[@]}" < /dev/null | tee "$out" | sed -u 's/\r$//'
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 124 ] && { echo "run-guest: guest timed out after ${timeout}s" >&2; exit 124; }
code=$(tr -d '\r' < "$out" | sed -n 's/^@@EXIT \([0-9]*\).*/\1/p' | tail -n 1)
[ -n "$code" ] || { echo "run-guest: guest did not finish its script (qemu exit $rc)" >&2; exit 125; }
exit "$code"
