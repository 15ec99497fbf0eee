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

# Uncompressed ELF vmlinux (with the PVH entry note): qemu -kernel boots it directly,
# skipping the in-guest decompression that costs 1.5-2 s under TCG.
extract_vmlinux() {
    local bz=$1 out=$2 ss po pl start tool
    # bzImage setup header: setup_sects at 0x1f1, payload_offset/payload_length at 0x248
    ss=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' '); (( ss )) || ss=4
    read -r po pl < <(od -An -tu4 -j $((0x248)) -N8 "$bz")
    start=$(( (ss + 1) * 512 + po ))
    case $(od -An -tx1 -j "$start" -N4 "$bz" | tr -d ' \n') in
        28b52ffd) tool=zstd ;;  02214c18) tool=lz4 ;;  fd377a58) tool=xz ;;  1f8b08*) tool=gzip ;;
        *) tool=unknown ;;
    esac
    if command -v "$tool" >/dev/null; then
        # the kernel appends the uncompressed size: decompressors may complain; check the result
        tail -c +$((start + 1)) "$bz" | head -c "$pl" | "$tool" -dc 2>/dev/null >"$out.tmp" || true
        if [[ $(head -c4 "$out.tmp") == $'\x7fELF' ]]; then mv "$out.tmp" "$out"; return 0; fi
    fi
    rm -f "$out.tmp"
    log "note: could not extract an uncompressed vmlinux ($tool); VMs boot the compressed vmlinuz (slower)"
}

dest="$KDIR/${pkg}_${ver//:/%}"
fetch() {
    [[ -e $dest/vmlinuz ]] && return 0  # fetched while we waited for the lock
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
    extract_vmlinux "$tmp/$vmlinuz" "$tmp/vmlinux"
    rm -rf "$dest"; mv "$tmp" "$dest"
    trap - EXIT
    log "kernel $(cat "$dest/release") unpacked into $dest"
}
if [[ -e $dest/vmlinuz ]]; then
    log "kernel $pkg $ver already cached in $dest"
    [[ -e $dest/vmlinux ]] || with_lock kernel extract_vmlinux "$dest/vmlinuz" "$dest/vmlinux"
else
    with_lock kernel fetch
fi
ln -sfn "$(basename "$dest")" "$KDIR/current"
readlink -f "$dest/vmlinuz"
