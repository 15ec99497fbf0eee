#!/usr/bin/env bash
# Download and unpack Debian cloud kernels of the test matrix (kernels.txt) into the cache.
#
#   fetch-kernel.sh [SERIES]   one series (default: FFRTMP_VM_KERNEL_SERIES, else the kernel of
#                              the bookworm rootfs, 6.1); stdout: its vmlinuz path (only that)
#   fetch-kernel.sh --all      every series of kernels.txt, one at a time; stdout: one line
#                              "SERIES VMLINUZ" per series
#
# Each series resolves to the newest package matching its glob that one of its suites serves,
# through private apt lists ($FFRTMP_VM_CACHE/apt-kernels/, never the machine's /etc/apt),
# refreshed once a day (FFRTMP_VM_APT_MAX_AGE minutes). If the newest file cannot be
# downloaded, the next older package of the series is tried (up to 3).
#   FFRTMP_VM_KERNEL=<package>  use exactly this package (must be in the kernel suites' lists;
#                               with a SERIES argument or FFRTMP_VM_KERNEL_SERIES, for that series)
#   FFRTMP_VM_OFFLINE=1         no network: the kernel cached last for each series
# The .debs come from apt's archive when an earlier run fetched them (lib.sh archive_fetch).
# Cache: $FFRTMP_VM_CACHE/kernel/<package>_<version>/ (debs/, root/ unpacked, vmlinuz link,
# vmlinux uncompressed, release, series) and kernel/series-<SERIES> -> the entry in use. An
# apt failure with a cached kernel for the series falls back to it (with a warning).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
need_host_tools dpkg-deb apt-get apt-cache

KDIR="$FFRTMP_VM_CACHE/kernel"
mkdir -p "$KDIR"

all=0 series=
case ${1:-} in
    --all) all=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (usage: $0 [SERIES | --all])" ;;
    '') series=$(default_series) ;;
    *) series=$1 ;;
esac
[[ $# -le 1 ]] || die "usage: $0 [SERIES | --all]"

cached_vmlinuz() { # cached_vmlinuz SERIES: the vmlinuz of the entry series-SERIES points to
    [[ -e $KDIR/series-$1/vmlinuz && -f $KDIR/series-$1/debs.ok ]] || return 1
    readlink -f "$KDIR/series-$1/vmlinuz"
}

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

# candidates SERIES: "package version" of the newest packages of the series (newest first,
# at most 3), each with the highest version one of the series' suites serves.
candidates() {
    local s suites glob _ n found=0 v
    read -r s suites glob _ < <(matrix_row "$1")
    # FFRTMP_VM_KERNEL pins one package: only for a series whose glob it matches, so
    # that --all does not point every series at it.
    # shellcheck disable=SC2254
    if [[ -n ${FFRTMP_VM_KERNEL:-} ]] && case $FFRTMP_VM_KERNEL in $glob) true ;; *) false ;; esac; then
        v=$(kapt_cache policy "$FFRTMP_VM_KERNEL" | awk '/Candidate:/ {print $2}')
        [[ -n $v && $v != "(none)" ]] || die "FFRTMP_VM_KERNEL=$FFRTMP_VM_KERNEL has no candidate in the kernel suites ($KAPT_DIR/sources.list)"
        echo "$FFRTMP_VM_KERNEL $v"; return 0
    fi
    # shellcheck disable=SC2254  # $glob is a pattern on purpose
    for n in $(kapt_cache pkgnames linux-image- | while read -r p; do case $p in $glob) echo "$p" ;; esac; done | sort -rV); do
        # madison: " pkg | version | http://mirror suite/main amd64 Packages"
        v=$(kapt_cache madison "$n" | awk -F'|' -v suites=",$suites," '{
                gsub(/^ +| +$/, "", $2); split($3, w, " "); split(w[2], sc, "/")
                if (index(suites, "," sc[1] ",")) print $2 }' | sort -rV | head -n1)
        [[ -n $v ]] || continue
        echo "$n $v"
        (( ++found < 3 )) || break
    done
    (( found )) || die "no package matching '$glob' in the suites $suites (lists in $KAPT_DIR; check kernels.txt)"
}

# fetch_entry SERIES PKG VER: download the package (and its linux-binary-* part, where the
# 7.x packages keep vmlinuz), unpack, extract vmlinux. Fails (1) when a download fails.
fetch_entry() {
    local ser=$1 pkg=$2 ver=$3 dest tmp bin vmlinuz rel d
    dest="$KDIR/${pkg}_${ver//:/%}"
    [[ -f $dest/debs.ok ]] && return 0  # fetched while we waited for the lock
    log "fetching $pkg $ver (series $ser)"
    tmp=$(mktemp -d "$KDIR/.fetch.XXXXXX")
    mkdir -p "$tmp/debs"
    bin=$(kapt_cache show "$pkg=$ver" 2>/dev/null | awk '/^Depends:/ {print; exit}' \
        | grep -o 'linux-binary-[^ ,(]*' | head -n1 || true)
    if ! archive_fetch kapt_cache kapt_get "$tmp/debs" "$pkg=$ver" ${bin:+"$bin=$ver"}; then
        rm -rf "$tmp"; log "warning: fetching $pkg=$ver ${bin:+$bin=$ver} failed"; return 1
    fi
    for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$tmp/root"; done
    vmlinuz=$(cd "$tmp" && find root/boot root/usr/lib/modules -maxdepth 2 \( -name 'vmlinuz-*' -o -name vmlinuz \) -type f 2>/dev/null | head -n1)
    [[ -n $vmlinuz ]] || { rm -rf "$tmp"; die "no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in $pkg ${bin:+/ $bin}"; }
    case $vmlinuz in
        root/boot/vmlinuz-*) rel=${vmlinuz#root/boot/vmlinuz-} ;;
        *) rel=$(basename "$(dirname "$vmlinuz")") ;;
    esac
    ln -s "$vmlinuz" "$tmp/vmlinuz"
    echo "$rel" >"$tmp/release"
    echo "$ser" >"$tmp/series"
    echo "$pkg $ver" >"$tmp/package"
    extract_vmlinux "$tmp/$vmlinuz" "$tmp/vmlinux"
    touch "$tmp/debs.ok"
    chmod 755 "$tmp"
    rm -rf "$dest"; mv "$tmp" "$dest"
    log "kernel $rel ($pkg $ver) unpacked into $dest"
}

# Keep the entry in use and the one before it per series; older ones go.
prune_series() {
    local ser=$1 keep e
    keep=$(readlink "$KDIR/series-$ser")
    for e in $(find "$KDIR" -mindepth 2 -maxdepth 2 -path "$KDIR/linux-*/series" -type f -exec grep -lx "$ser" {} + \
            | xargs -r -n1 dirname | xargs -r ls -1dt | tail -n +3); do
        [[ $(basename "$e") == "$keep" ]] && continue
        log "removing old kernel $e"; rm -rf "$e"
    done
}

# one SERIES: make series-SERIES point to the newest fetchable entry; print its vmlinuz.
one() {
    local ser=$1 pkg ver ok=0 cands
    matrix_row "$ser" >/dev/null
    if [[ ${FFRTMP_VM_OFFLINE:-0} == 1 ]]; then
        cached_vmlinuz "$ser" || die "FFRTMP_VM_OFFLINE=1 but no kernel of series $ser is cached in $KDIR yet; run once online"
        return 0
    fi
    if ! with_lock apt-kernels kapt_update; then
        cached_vmlinuz "$ser" && { log "warning: apt update failed, using the cached kernel of series $ser"; return 0; }
        die "cannot refresh the kernel package lists and no kernel of series $ser is cached"
    fi
    cands=$(candidates "$ser") || exit 1
    while read -r pkg ver; do
        if [[ -f $KDIR/${pkg}_${ver//:/%}/debs.ok ]]; then
            log "kernel $pkg $ver (series $ser) already cached"; ok=1; break
        fi
        if with_lock kernel fetch_entry "$ser" "$pkg" "$ver"; then ok=1; break; fi
    done <<<"$cands"
    if [[ $ok == 0 ]]; then
        cached_vmlinuz "$ser" && { log "warning: no candidate of series $ser could be downloaded; using the cached one"; return 0; }
        die "no package of series $ser could be downloaded (tried: $(tr '\n' ' ' <<<"$cands"))"
    fi
    local dest="$KDIR/${pkg}_${ver//:/%}"
    [[ -e $dest/vmlinux || ${FFRTMP_VM_PVH:-1} != 1 ]] || with_lock kernel extract_vmlinux "$(readlink -f "$dest/vmlinuz")" "$dest/vmlinux"
    ln -sfn "$(basename "$dest")" "$KDIR/series-$ser"
    prune_series "$ser"
    readlink -f "$dest/vmlinuz"
}

if [[ $all == 1 ]]; then
    for s in $(matrix_rows | awk '{print $1}'); do
        v=$(one "$s")
        echo "$s $v"
    done
else
    one "$series"
fi
