#!/usr/bin/env bash
# systemd tier: boot the cached Debian rootfs of FFRTMP_VM_SUITE (bookworm: Debian 12 with its
# 6.1 kernel; trixie: Debian 13 with 6.12; built by build-rootfs.sh on first use) read-only
# (snapshot=on) with a payload disk made from <payload-dir>; the unit ffrtmp-payload.service
# runs <payload-dir>/run.sh as root after multi-user.target, then the VM powers off.
#
#   run-systemd.sh <payload-dir> [timeout-seconds, default 300]
#
# Inside, the payload disk is /payload (cwd of run.sh); whatever run.sh writes under
# /payload/out is copied back to <payload-dir>/out/ (replaced on each run), plus
# out/_vm/{payload.log,exit-code,journal.txt,systemd-analyze.txt,console.log}.
# Env: FFRTMP_VM_SUITE (bookworm), FFRTMP_VM_ENV="NAME ..." (host vars exported to run.sh), FFRTMP_VM_APPEND,
#      FFRTMP_VM_PAYLOAD_SPARE_MB=1024 (free space on the payload disk), FFRTMP_VM_MEM, FFRTMP_VM_SMP.
# stdout: the serial console. Exit code: run.sh's, or 124 (timeout) / 125 (no exit code seen) / 1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 <payload-dir> [timeout-seconds]"
pdir=$(readlink -f "$1"); timeout=${2:-${FFRTMP_VM_TIMEOUT:-300}}
[[ -f $pdir/run.sh ]] || die "$pdir/run.sh not found: the payload directory needs a run.sh"
[[ $timeout =~ ^[0-9]+$ ]] || die "timeout must be a number of seconds, got '$timeout'"
need_host_tools mkfs.ext4 debugfs tar

image=$("$VM_DIR/build-rootfs.sh")
kernel=$(readlink -f "$(dirname "$image")/vmlinuz")
[[ -f $kernel ]] || die "kernel $kernel of the rootfs is missing; run fetch-kernel.sh and build-rootfs.sh"
kernel=$(boot_image "$kernel")

work=$(mktemp -d "${TMPDIR:-/tmp}/ffrtmp-systemd.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/stage"
tar -C "$pdir" --exclude=./out -cf - . | tar -C "$work/stage" -xf -
for name in ${FFRTMP_VM_ENV:-}; do
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "FFRTMP_VM_ENV: '$name' is not a variable name"
    if [[ -n ${!name+set} ]]; then echo "export $name=$(sh_quote "${!name}")"; fi
done >"$work/stage/.ffrtmp-env"
size_mb=$(( $(du -sm "$work/stage" | cut -f1) + ${FFRTMP_VM_PAYLOAD_SPARE_MB:-1024} ))
truncate -s "${size_mb}M" "$work/payload.img"
mkfs.ext4 -q -F -L ffrtmp-payload -d "$work/stage" "$work/payload.img" >&2 \
    || die "mkfs.ext4 -d of the payload disk failed"
log "payload disk ${size_mb} MiB from $pdir; booting $image with $kernel"

rc=0
run_vm "$timeout" "$work/console.log" \
    -kernel "$kernel" \
    -append "console=ttyS0 root=/dev/nvme0n1 rootfstype=ext4 rw quiet panic=-1 systemd.unified_cgroup_hierarchy=1 ${FFRTMP_VM_APPEND:-}" \
    -drive "file=$image,if=none,id=root,format=raw,snapshot=on" \
    -device nvme,drive=root,serial=ffrtmp-root \
    -drive "file=$work/payload.img,if=virtio,format=raw" || rc=$?
# Root is the only NVMe disk (nvme is built into the cloud kernel, so no initrd is needed):
# with two NVMe namespaces or controllers the kernel names them in async probe order and
# root=/dev/nvme0n1 sometimes hit the payload disk. The payload disk is virtio-blk (a module,
# loaded by udev from the rootfs) and is mounted by label.

# Copy back /out from the payload disk (debugfs: no loop device or mount needed).
rm -rf "$pdir/out"
mkdir -p "$work/extract"
if debugfs -R "rdump /out $work/extract" "$work/payload.img" >/dev/null 2>"$work/debugfs.err" \
        && [[ -d $work/extract/out ]]; then
    mv "$work/extract/out" "$pdir/out"
else
    log "warning: no /out on the payload disk (the payload never ran?): $(tr '\n' ' ' <"$work/debugfs.err")"
    mkdir -p "$pdir/out"
fi
mkdir -p "$pdir/out/_vm"
cp "$work/console.log" "$pdir/out/_vm/console.log"
# The console line can be lost (e.g. mangled by kernel messages); the disk has it too.
if [[ $rc -eq 125 && -f $pdir/out/_vm/exit-code ]]; then
    rc=$(cat "$pdir/out/_vm/exit-code")
    log "exit code $rc taken from the payload disk (no $SENTINEL line on the console)"
fi
log "results in $pdir/out/"
exit "$rc"
