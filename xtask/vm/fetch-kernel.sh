#!/usr/bin/env bash
# Download and unpack the Debian cloud kernel into the cache; print the vmlinuz path.
#   FFRTMP_VM_KERNEL=<package>      use exactly this package (e.g. linux-image-6.1.0-37-cloud-amd64)
#   FFRTMP_VM_KERNEL_SERIES=6.1     newest kernel of that series only (default: newest of all)
#   FFRTMP_VM_KERNEL_BACKPORTS=1    also consider bookworm-backports kernels (*+bpo-cloud-amd64)
#   FFRTMP_VM_OFFLINE=1             do not touch the network; use the last fetched kernel
# stdout: the vmlinuz path (only that). Cache: $FFRTMP_VM_CACHE/kernel/<package>_<version>/
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
need_host_tools dpkg-deb apt-get

KDIR="$FFRTMP_VM_CACHE/kernel"
mkdir -p "$KDIR"

current_vmlinuz() {
    [[ -e $KDIR/current/vmlinuz ]] || return 1
    readlink -f "$KDIR/current/vmlinuz"
}

if [[ ${FFRTMP_VM_OFFLINE:-0} == 1 ]]; then
    current_vmlinuz || die "FFRTMP_VM_OFFLINE=1 but no kernel cached in $KDIR yet; run once online"
    exit 0
fi

if ! with_lock apt apt_private_update; then
    current_vmlinuz && { log "warning: apt update failed, using cached kernel"; exit 0; }
    die "cannot refresh package lists and no kernel is cached"
fi

pkg=${FFRTMP_VM_KERNEL:-}
if [[ -z $pkg ]]; then
    filter='bpo'; [[ ${FFRTMP_VM_KERNEL_BACKPORTS:-0} == 1 ]] && filter='^$'
    pkg=$(apt_cache_private pkgnames linux-image- \
        | grep -E '^linux-image-[0-9][0-9.]*[-+][0-9a-z.+-]*-cloud-amd64$' \
        | grep -F "linux-image-${FFRTMP_VM_KERNEL_SERIES:-}" \
        | grep -v -e "$filter" | sort -V | tail -n1)
    [[ -n $pkg ]] || die "no linux-image-*-cloud-amd64 package found in the apt lists ($APT_DIR)"
fi
ver=$(apt_cache_private policy "$pkg" | awk '/Candidate:/ {print $2}')
[[ -n $ver && $ver != "(none)" ]] || die "package $pkg has no installable candidate"

dest="$KDIR/${pkg}_${ver//:/%}"
if [[ ! -e $dest/vmlinuz ]]; then
    log "fetching $pkg $ver"
    tmp=$(mktemp -d "$KDIR/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt_private -o APT::Sandbox::User=root download "$pkg=$ver" >&2) \
        || die "apt-get download $pkg=$ver failed"
    deb=$(echo "$tmp"/*.deb)
    dpkg-deb -x "$deb" "$tmp/root"
    mv "$deb" "$tmp/kernel.deb"
    vmlinuz=$(cd "$tmp" && echo root/boot/vmlinuz-*)
    [[ -f $tmp/$vmlinuz ]] || die "no boot/vmlinuz-* in $pkg"
    ln -s "$vmlinuz" "$tmp/vmlinuz"
    echo "${vmlinuz#root/boot/vmlinuz-}" >"$tmp/release"
    rm -rf "$dest"; mv "$tmp" "$dest"
    trap - EXIT
    log "kernel $(cat "$dest/release") unpacked into $dest"
else
    log "kernel $pkg $ver already cached in $dest"
fi
ln -sfn "$(basename "$dest")" "$KDIR/current"
readlink -f "$dest/vmlinuz"
