#!/usr/bin/env bash
# Build (once, cached) a systemd-tier root filesystem: Debian minbase of FFRTMP_VM_SUITE +
# systemd + rootfs-packages.txt + the cloud kernel of that suite's row in kernels.txt, as an
# ext4 image.
#   FFRTMP_VM_SUITE=bookworm      the distribution: bookworm (Debian 12, systemd 252) or trixie
#                                 (Debian 13, systemd 257); any suite with a row in kernels.txt
#   FFRTMP_VM_KERNEL_SERIES=...   another kernel series of kernels.txt (default: the suite's row)
#   FFRTMP_VM_ROOTFS_SIZE=2G      minimum image size (grown if the tree needs more)
#   FFRTMP_VM_REBUILD=1           rebuild even if cached
# The cache key hashes the suite, the package list, the kernel package and this script; the
# two newest images of each suite are kept. Packages come from apt's archive when an earlier
# run fetched them (debootstrap's --cache-dir and the rootfs's own apt both use it), so a
# fresh $FFRTMP_VM_CACHE rebuilds without downloading again.
# stdout: the image path (only that). Next to it: tree/ (the same root as a directory: the
# package tests' chroot, deployment/debian/chroot-test.sh, copies it), vmlinuz (symlink),
# packages.txt, key.txt, suite.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
need_host_tools debootstrap mkfs.ext4 chroot sha256sum

ROOTFS_SUITE=${FFRTMP_VM_SUITE:-bookworm}
[[ $ROOTFS_SUITE =~ ^[a-z]+$ ]] || die "FFRTMP_VM_SUITE must be a Debian suite name such as bookworm or trixie, got '$ROOTFS_SUITE'"
[[ -e /usr/share/debootstrap/scripts/$ROOTFS_SUITE ]] \
    || die "debootstrap on this host does not know '$ROOTFS_SUITE' (no /usr/share/debootstrap/scripts/$ROOTFS_SUITE): install a newer debootstrap"
kseries=${FFRTMP_VM_KERNEL_SERIES:-$(rootfs_series "$ROOTFS_SUITE")}
vmlinuz=$(FFRTMP_VM_KERNEL_SERIES=$kseries "$VM_DIR/fetch-kernel.sh" "$kseries")
kentry=$(kernel_entry "$vmlinuz")
[[ -n $kentry && -f $kentry/debs.ok ]] || die "kernel packages missing for $vmlinuz; re-run fetch-kernel.sh $kseries"

mapfile -t PKGS < <(sed -e 's/#.*//' -e '/^\s*$/d' "$VM_DIR/rootfs-packages.txt" | tr -d ' \t')
key=$({ echo "$ROOTFS_SUITE"; printf '%s\n' "${PKGS[@]}"; basename "$kentry"; cat "$VM_DIR/build-rootfs.sh"; } | sha256sum | cut -c1-16)
RDIR="$FFRTMP_VM_CACHE/rootfs"
dest="$RDIR/$key"
mkdir -p "$RDIR"

if [[ -f $dest/rootfs.img && ${FFRTMP_VM_REBUILD:-0} != 1 ]]; then
    log "rootfs $key ($ROOTFS_SUITE, kernel $(cat "$kentry/release")) already built: $dest/rootfs.img"
    echo "$dest/rootfs.img"; exit 0
fi

build() {
    [[ -f $dest/rootfs.img && ${FFRTMP_VM_REBUILD:-0} != 1 ]] && return 0  # built while we waited
    local b="$RDIR/.build-$key" t0=$SECONDS
    local root="$b/tree" archive
    archive=$(apt_archive)
    umount_all() {
        umount -R "$root/proc" "$root/sys" 2>/dev/null || true
        umount "$root/var/cache/apt/archives" 2>/dev/null || true
    }
    cleanup() { umount_all; rm -rf --one-file-system "$b"; }
    trap cleanup EXIT
    cleanup
    mkdir -p "$root"

    log "debootstrap $ROOTFS_SUITE minbase into $root"
    mkdir -p "$archive"
    debootstrap --variant=minbase --cache-dir="$archive" \
        "$ROOTFS_SUITE" "$root" "$DEBIAN_MIRROR" >"$b/debootstrap.log" 2>&1 \
        || { tail -n 30 "$b/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    log "debootstrap done ($((SECONDS - t0)) s)"

    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    # The rootfs's apt downloads into (and takes from) the host's archive.
    mount --bind "$archive" "$root/var/cache/apt/archives"
    cat >"$root/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR $ROOTFS_SUITE main
deb $DEBIAN_MIRROR $ROOTFS_SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $ROOTFS_SUITE-security main
SRC
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-ffrtmp-nodoc" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CFG
    mkdir -p "$root/tmp/kernel"
    cp "$kentry"/debs/*.deb "$root/tmp/kernel/"
    local kdebs=(); local d; for d in "$root"/tmp/kernel/*.deb; do kdebs+=("/tmp/kernel/$(basename "$d")"); done
    log "installing ${PKGS[*]} + $(cat "$kentry/release")"
    in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
    { in_root apt-get -q update && \
      in_root apt-get -q -o APT::Sandbox::User=root install -y --no-install-recommends "${PKGS[@]}" "${kdebs[@]}"; } \
        >"$b/apt.log" 2>&1 || { tail -n 30 "$b/apt.log" >&2; die "package install in the rootfs failed (log above)"; }
    log "packages installed ($((SECONDS - t0)) s)"
    # Debian's ffmpeg package as installed, kept in the image: the VM has no network, and
    # the systemd tier reinstalls it (apt-get install --reinstall, scenario 27).
    local ffver
    ffver=$(in_root dpkg-query -W -f '${Version}' ffmpeg)
    mkdir -p "$root/var/lib/ffrtmp-vm/debs"
    cp "$archive"/ffmpeg_"${ffver/:/%3a}"_*.deb "$root/var/lib/ffrtmp-vm/debs/" \
        || die "Debian's ffmpeg $ffver package is not in $archive after its install"

    umount "$root/var/cache/apt/archives"
    configure_rootfs "$root" "$key"
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root/tmp/kernel" "$root/usr/sbin/policy-rc.d"
    in_root dpkg-query -W -f='${Package} ${Version}\n' >"$b/packages.txt"
    umount_all

    local used_mb size_mb min_mb
    used_mb=$(du -sxm "$root" | cut -f1)
    min_mb=$(numfmt --from=iec "${FFRTMP_VM_ROOTFS_SIZE:-2G}" | awk '{print int($1/1048576)}')
    size_mb=$(( used_mb * 5 / 4 + 256 )); (( size_mb > min_mb )) || size_mb=$min_mb
    log "mkfs.ext4 -d: ${used_mb} MiB of files into a ${size_mb} MiB image"
    truncate -s "${size_mb}M" "$b/rootfs.img"
    mkfs.ext4 -q -F -L ffrtmp-root -d "$root" "$b/rootfs.img" >&2 \
        || die "mkfs.ext4 -d failed (e2fsprogs >= 1.43 needed for -d)"
    chmod 0444 "$b/rootfs.img"
    echo "$key" >"$b/key.txt"
    echo "$ROOTFS_SUITE" >"$b/suite"
    ln -s "$vmlinuz" "$b/vmlinuz"
    rm -rf "$dest"; mv "$b" "$dest"
    trap - EXIT
    log "rootfs $key ($ROOTFS_SUITE, kernel $(cat "$kentry/release")) built in $((SECONDS - t0)) s: $dest/rootfs.img"
    # Keep only the two newest images of this suite (older layouts had no suite file: bookworm).
    local old
    for old in $(ls -1dt "$RDIR"/*/); do
        if [[ $(cat "$old/suite" 2>/dev/null || echo bookworm) == "$ROOTFS_SUITE" ]]; then echo "$old"; fi
    done | tail -n +3 | while read -r old; do
        log "removing old rootfs $old"; rm -rf --one-file-system "$old"
    done
}

configure_rootfs() {
    local root=$1 key=$2 u
    echo ffrtmp-vm >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 ffrtmp-vm\n::1 localhost ip6-localhost\n' >"$root/etc/hosts"
    echo '# root is /dev/nvme0n1 (the only NVMe disk), mounted rw by the kernel; booted with snapshot=on' >"$root/etc/fstab"
    # A fixed machine-id: no first-boot logic (presets, firstboot) at every boot.
    printf '%s\n' "$(printf '%s' "$key" | sha256sum | cut -c1-32)" >"$root/etc/machine-id"
    mkdir -p "$root/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/ffrtmp.conf"

    # The payload disk is virtio-blk, a module: load it early instead of waiting for the
    # (slow under TCG) udev coldplug, which came ~12 s into boot.
    echo virtio_blk >"$root/etc/modules-load.d/ffrtmp.conf"
    # Fast boot: no logins (getty, logind: 2 s on the critical path), no timers, no periodic
    # jobs, no first-boot/update work.
    for u in getty@.service serial-getty@.service console-getty.service getty.target \
             systemd-logind.service \
             e2scrub_all.service e2scrub_reap.service apt-daily.service apt-daily-upgrade.service \
             systemd-hwdb-update.service ldconfig.service systemd-firstboot.service \
             $(cd "$root" && find lib/systemd/system etc/systemd/system -name '*.timer' -printf '%f\n' | sort -u); do
        ln -sfn /dev/null "$root/etc/systemd/system/$u"
    done

    install -m 755 /dev/stdin "$root/usr/local/sbin/ffrtmp-payload" <<'RUNNER'
#!/bin/bash
# Mount the payload disk, run /payload/run.sh, record output and exit code, then the unit
# powers the VM off (SuccessAction/FailureAction=poweroff-immediate).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mkdir -p /payload
for _ in $(seq 300); do  # up to 30 s: virtio_blk is a module loaded by udev
    mount -o rw LABEL=ffrtmp-payload /payload 2>/dev/null && break
    sleep 0.1
done
if ! mountpoint -q /payload; then
    echo "ffrtmp-payload: cannot mount the payload disk (LABEL=ffrtmp-payload)"
    printf '\nFFRTMP-VM-EXIT=125\n'; exit 1
fi
mkdir -p /payload/out/_vm
[[ -f /payload/.ffrtmp-env ]] && source /payload/.ffrtmp-env
cd /payload
if [[ -x run.sh ]]; then cmd=(./run.sh); else cmd=(bash ./run.sh); fi
echo "ffrtmp-payload: starting run.sh at uptime $(cut -d' ' -f1 /proc/uptime) s"
"${cmd[@]}" </dev/null 2>&1 | tee /payload/out/_vm/payload.log
rc=${PIPESTATUS[0]}
echo "$rc" >/payload/out/_vm/exit-code
journalctl -b -o short-monotonic --no-pager >/payload/out/_vm/journal.txt 2>&1
systemd-analyze >/payload/out/_vm/systemd-analyze.txt 2>&1  # (blame takes ~7 s under TCG)
cd /
sync
umount /payload || echo "ffrtmp-payload: umount /payload failed"
printf '\nFFRTMP-VM-EXIT=%s\n' "$rc"
RUNNER
    cat >"$root/etc/systemd/system/ffrtmp-payload.service" <<'UNIT'
[Unit]
Description=ffrtmp test payload (/payload/run.sh from the payload disk)
After=multi-user.target
# The runner has synced and unmounted the payload disk, and the root disk is a throw-away
# snapshot: power off at once instead of a slow orderly shutdown.
SuccessAction=poweroff-immediate
FailureAction=poweroff-immediate

[Service]
# exec, not oneshot: boot completes (is-system-running = running) while the payload runs.
Type=exec
ExecStart=/usr/local/sbin/ffrtmp-payload
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    ln -sfn ../ffrtmp-payload.service "$root/etc/systemd/system/multi-user.target.wants/ffrtmp-payload.service"
}

with_lock "rootfs-$key" build
echo "$dest/rootfs.img"
