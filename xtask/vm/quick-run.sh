#!/usr/bin/env bash
# Quick tier: run one binary as the only program of a throw-away initramfs VM (no systemd)
# with cgroup v2 (+cpu +memory +pids enabled at the root), tracefs, debugfs and bpffs mounted.
#
#   quick-run.sh <binary> [args...]
#
# The binary is copied to the same absolute path inside the VM (so paths compiled into a
# test binary, such as CARGO_BIN_EXE_*, still resolve), together with every library ldd lists.
# Env:
#   FFRTMP_VM_TIMEOUT=300          seconds before the VM is killed (exit 124)
#   FFRTMP_VM_ENV="RUST_LOG ..."   names of host env vars to pass to the binary
#   QUICK_EXTRA_FILES="src[:dst] ..."  more files or directories to copy in (dst defaults to
#                                  src; the libraries of ELF files come too). busybox provides
#                                  sh, sleep, ... in /bin; a real one given here replaces it.
#   FFRTMP_VM_CWD=/                working directory of the binary (created if missing)
#   FFRTMP_VM_KERNEL_IMAGE=path    vmlinuz to boot (default: fetch-kernel.sh's, i.e. the newest of
#                                  FFRTMP_VM_KERNEL_SERIES, default 6.1; a cached one is swapped
#                                  for its uncompressed vmlinux unless FFRTMP_VM_PVH=0)
#   FFRTMP_VM_APPEND="..."         extra kernel command line
#   FFRTMP_VM_CGROUP2_OPTS=...     cgroup2 mount options (e.g. nsdelegate,favordynmods)
#   FFRTMP_VM_MEM=2048 FFRTMP_VM_SMP=2
#   FFRTMP_VM_LOG=path             also keep the console log there
#   FFRTMP_VM_STRIP=1              strip debug info from the ELF files copied in (0: keep it)
# stdout: the VM's serial console. Exit code: the binary's, or 124 (timeout) /
# 125 (VM ended without reporting an exit code, e.g. kernel panic) / 1 (setup error).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -ge 1 ]] || die "usage: $0 <binary> [args...]"
bin=$(readlink -f "$1") || die "binary '$1' not found"; shift
[[ -f $bin && -x $bin ]] || die "'$bin' is not an executable file"
need_host_tools cpio ldd strip
if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
    die "a static /bin/busybox is needed: run $VM_DIR/setup-host.sh (installs busybox-static)"
fi

kernel=${FFRTMP_VM_KERNEL_IMAGE:-$("$VM_DIR/fetch-kernel.sh")}
[[ -f $kernel ]] || die "kernel image '$kernel' not found"
kernel=$(boot_image "$kernel")

work=$(mktemp -d "${TMPDIR:-/tmp}/ffrtmp-quick.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,proc,sys,dev,tmp,run,root,etc,mnt}
chmod 1777 "$root/tmp"  # no tmpfs over /tmp: it would hide binaries copied there
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
cp /bin/busybox "$root/usr/bin/busybox"
for applet in $(/bin/busybox --list); do
    [[ -e $root/usr/bin/$applet ]] || ln -s busybox "$root/usr/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

declare -A copied=()
add_file() { # add_file SRC DST: copy SRC (following links) and, if dynamic ELF, its libraries
    local src=$1 dst=$2 lib
    [[ -n ${copied[$dst]:-} ]] && return 0
    copied[$dst]=1
    mkdir -p "$root$(dirname "$dst")"
    if [[ -d $src ]]; then mkdir -p "$root$dst" && cp -a "$src/." "$root$dst/"; return 0; fi
    [[ -f $src ]] || die "file to copy into the initramfs not found: $src"
    cp -L --remove-destination "$src" "$root$dst"
    # Debug info is most of a Rust binary (43 MB -> 2 MB) and the kernel unpacks every byte
    # of the initramfs at boot. Panic messages keep their file:line without it.
    if [[ ${FFRTMP_VM_STRIP:-1} == 1 && $(head -c4 "$src") == $'\x7fELF' ]]; then
        strip --strip-debug "$root$dst" 2>/dev/null || true
    fi
    # ldd lists 'name => /path (addr)' and the loader as '/path (addr)'; vdso has no path.
    for lib in $(ldd "$src" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        add_file "$lib" "$lib"
    done
}
add_file "$bin" "$bin"
for spec in ${QUICK_EXTRA_FILES:-}; do
    src=${spec%%:*}; dst=${spec#*:}
    [[ $spec == *:* ]] || dst=$(readlink -f "$src")
    add_file "$src" "$dst"
done

# The init script. Values are baked in single-quoted.
{
    echo '#!/bin/sh'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root'
    cat <<'INIT'
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
INIT
    echo "mount -t cgroup2 ${FFRTMP_VM_CGROUP2_OPTS:+-o $(sh_quote "$FFRTMP_VM_CGROUP2_OPTS")} cgroup2 /sys/fs/cgroup"
    cat <<'INIT'
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
echo '+cpu +memory +pids' >/sys/fs/cgroup/cgroup.subtree_control \
    || echo "ffrtmp-vm: enabling +cpu +memory +pids in /sys/fs/cgroup failed"
hostname ffrtmp-quick
ip link set lo up
INIT
    for name in ${FFRTMP_VM_ENV:-}; do
        [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "FFRTMP_VM_ENV: '$name' is not a variable name"
        if [[ -n ${!name+set} ]]; then echo "export $name=$(sh_quote "${!name}")"; fi
    done
    cwd=${FFRTMP_VM_CWD:-/}
    echo "mkdir -p $(sh_quote "$cwd") && cd $(sh_quote "$cwd")"
    printf '%s' "$(sh_quote "$bin")"
    for a in "$@"; do printf ' %s' "$(sh_quote "$a")"; done
    echo ' </dev/null'
    cat <<INIT
rc=\$?
echo
echo "$SENTINEL=\$rc"
sync
poweroff -f
INIT
} >"$root/init"
chmod 755 "$root/init"

(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$work/initramfs.cpio"
log "initramfs: $(du -h "$work/initramfs.cpio" | cut -f1) ($(basename "$bin") + ${#copied[@]} files); booting $kernel"

rc=0
run_vm "${FFRTMP_VM_TIMEOUT:-300}" "$work/console.log" \
    -kernel "$kernel" -initrd "$work/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init ${FFRTMP_VM_APPEND:-}" || rc=$?
[[ -z ${FFRTMP_VM_LOG:-} ]] || cp "$work/console.log" "$FFRTMP_VM_LOG"
exit "$rc"
