# Shared helpers for the ffrtmp VM test scripts. Source it; do not run it.
# shellcheck shell=bash

FFRTMP_VM_CACHE=${FFRTMP_VM_CACHE:-/var/cache/ffrtmp-vm}
VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEBIAN_MIRROR=${FFRTMP_VM_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${FFRTMP_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
export DEBIAN_FRONTEND=noninteractive

log() { printf '[ffrtmp-vm] %s\n' "$*" >&2; }
die() { printf '[ffrtmp-vm] error: %s\n' "$*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$(basename "$0") must run as root (it installs packages / builds images). Re-run with sudo."
}

# need_cmd CMD HINT: die with a hint when CMD is missing.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found. $2"
}

need_host_tools() {
    local c
    for c in "$@"; do
        need_cmd "$c" "Run $VM_DIR/setup-host.sh first (as root)."
    done
}

# Serialize a section on a named lock under the cache dir: with_lock NAME CMD...
with_lock() {
    local name=$1; shift
    mkdir -p "$FFRTMP_VM_CACHE/locks"
    (
        flock 9
        "$@"
    ) 9>"$FFRTMP_VM_CACHE/locks/$name.lock"
}

# --- private apt configuration (never touches /etc/apt) ----------------------
APT_DIR="$FFRTMP_VM_CACHE/apt"

apt_private_init() {
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/sources.list.d"
    cat >"$APT_DIR/sources.list.new" <<SRC
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb $DEBIAN_MIRROR $SUITE-backports main
deb $DEBIAN_SECURITY_MIRROR $SUITE-security main
SRC
    mv "$APT_DIR/sources.list.new" "$APT_DIR/sources.list"
}

# apt-get with the private source list and lists dir.
apt_private() {
    apt-get -q \
        -o DPkg::Lock::Timeout=600 \
        -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
        -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
        -o Dir::State::Lists="$APT_DIR/lists" \
        "$@"
}

apt_cache_private() {
    mkdir -p "$APT_DIR/cache"
    apt-cache \
        -o Dir::Cache="$APT_DIR/cache" -o Dir::Cache::pkgcache=pkgcache.bin -o Dir::Cache::srcpkgcache=srcpkgcache.bin \
        -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
        -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
        -o Dir::State::Lists="$APT_DIR/lists" \
        "$@"
}

# Refresh the private lists if missing or older than FFRTMP_VM_APT_MAX_AGE minutes (default 1 day).
apt_private_update() {
    apt_private_init
    local stamp="$APT_DIR/updated.stamp" max_age=${FFRTMP_VM_APT_MAX_AGE:-1440}
    if [[ -f $stamp && -z $(find "$stamp" -mmin +"$max_age") && ${1:-} != force ]]; then
        return 0
    fi
    log "apt-get update (private lists in $APT_DIR/lists)"
    apt_private update >&2 || die "apt-get update with the private source list failed (is $DEBIAN_MIRROR reachable?)"
    touch "$stamp"
}

# --- apt's archive of downloaded .debs: the one download cache reused across runs --------
# Everything else under $FFRTMP_VM_CACHE is made by these scripts and may be thrown away
# (CI starts every run with an empty one). Packages are kept by content, as apt keeps them:
# <name>_<version>_<arch>.deb, checked against the SHA256 of the package lists.
apt_archive() {
    local A=
    eval "$(apt-config shell A Dir::Cache::archives/d)"
    A=${FFRTMP_APT_ARCHIVE:-${A:-/var/cache/apt/archives/}}
    echo "${A%/}"
}

# archive_fetch APT-CACHE APT-GET DEST PKG=VER...: each package from the archive when an
# earlier run fetched it (same SHA256), else downloaded into it; then linked into DEST.
# APT-CACHE and APT-GET are the functions that read the right lists (apt_cache_private,
# kapt_cache...). Fails (1) when a download fails.
archive_fetch() {
    local show=$1 get=$2 dest=$3 spec file sum arch tmp f
    shift 3
    arch=$(apt_archive)
    mkdir -p "$arch" "$dest"
    for spec in "$@"; do
        read -r file sum < <("$show" show "$spec" 2>/dev/null | awk '
            /^Filename:/ {f = $2} /^SHA256:/ {s = $2}
            /^$/ && f {print f, s; done = 1; exit}
            END {if (!done && f) print f, s}') || true
        [[ -n ${file:-} && -n ${sum:-} ]] || die "$spec: no Filename and SHA256 in the package lists"
        file=${file##*/}
        if [[ -f $arch/$file ]] && sha256sum "$arch/$file" | grep -q "^$sum "; then
            log "$file: from apt's archive ($arch)"
        else
            tmp=$(mktemp -d "$arch/.ffrtmp-fetch.XXXXXX")
            if ! (cd "$tmp" && "$get" -o APT::Sandbox::User=root download "$spec" >&2); then
                rm -rf "$tmp"; log "warning: apt-get download $spec failed"; return 1
            fi
            f=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n1)
            [[ -n $f ]] && sha256sum "$f" | grep -q "^$sum " \
                || { rm -rf "$tmp"; die "$spec: the downloaded file does not match the lists' SHA256"; }
            mv -f "$f" "$arch/$file"; rm -rf "$tmp"
        fi
        ln -f "$arch/$file" "$dest/$file" 2>/dev/null || cp "$arch/$file" "$dest/$file"
    done
}

# --- the test matrix (kernels.txt) and the kernels' private apt lists --------------------
KERNELS_TXT="$VM_DIR/kernels.txt"

# matrix_rows: "series suites package rootfs" per row of kernels.txt, comments stripped.
matrix_rows() {
    [[ -f $KERNELS_TXT ]] || die "$KERNELS_TXT is missing (the kernel matrix)"
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$KERNELS_TXT" | awk -v f="$KERNELS_TXT" '
        NF != 4 { printf "[ffrtmp-vm] error: %s: a row needs 4 columns (series suites package rootfs): %s\n", f, $0 > "/dev/stderr"; bad = 1; next }
        { print $1, $2, $3, $4 }
        END { exit bad }'
}
# matrix_row SERIES: that row; dies naming the known series when there is none.
matrix_row() {
    local row
    row=$(matrix_rows | awk -v s="$1" '$1 == s') || exit 1
    [[ -n $row ]] || die "kernel series '$1' is not in $KERNELS_TXT (known: $(matrix_rows | awk '{printf "%s ", $1}'))"
    echo "$row"
}
# rootfs_series SUITE: the kernel series the systemd-tier rootfs of SUITE boots.
rootfs_series() {
    local s
    s=$(matrix_rows | awk -v r="$1" '$4 == r {print $1; exit}') || exit 1
    [[ -n $s ]] || die "no row of $KERNELS_TXT has rootfs '$1' (known: $(matrix_rows | awk '$4 != "-" {printf "%s ", $4}'))"
    echo "$s"
}
# The series used when none is asked for: the kernel of the bookworm rootfs (what a Debian 12
# node runs), else the first row.
default_series() {
    [[ -z ${FFRTMP_VM_KERNEL_SERIES:-} ]] || { echo "$FFRTMP_VM_KERNEL_SERIES"; return; }
    matrix_rows | awk '$4 == "bookworm" {print $1; f = 1; exit} NR == 1 {first = $1} END {if (!f) print first}'
}

# Kernel packages come from their own private lists (bullseye, bookworm, trixie, backports):
# kept apart from $APT_DIR, whose bookworm lists setup-host.sh installs qemu from, so trixie
# candidates never reach a host install.
KAPT_DIR="$FFRTMP_VM_CACHE/apt-kernels"
kapt_init() {
    local s mirror signed=
    mkdir -p "$KAPT_DIR/lists/partial" "$KAPT_DIR/sources.list.d" "$KAPT_DIR/cache"
    [[ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]] \
        || signed='[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] '
    for s in $(matrix_rows | awk '{print $2}' | tr ',' '\n' | awk '!seen[$0]++'); do
        mirror=$DEBIAN_MIRROR; [[ $s != *-security ]] || mirror=$DEBIAN_SECURITY_MIRROR
        echo "deb $signed$mirror $s main"
    done >"$KAPT_DIR/sources.list.new"
    mv "$KAPT_DIR/sources.list.new" "$KAPT_DIR/sources.list"
}
kapt_opts() {
    printf '%s\n' -o Dir::Etc::SourceList="$KAPT_DIR/sources.list" \
        -o Dir::Etc::SourceParts="$KAPT_DIR/sources.list.d" \
        -o Dir::State::Lists="$KAPT_DIR/lists" \
        -o Dir::Cache="$KAPT_DIR/cache" -o Dir::Cache::pkgcache=pkgcache.bin -o Dir::Cache::srcpkgcache=srcpkgcache.bin \
        -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
}
kapt_get() { local -a o; mapfile -t o < <(kapt_opts); apt-get -q -o DPkg::Lock::Timeout=600 "${o[@]}" "$@"; }
kapt_cache() { local -a o; mapfile -t o < <(kapt_opts); apt-cache "${o[@]}" "$@"; }
# Refresh the kernel lists if missing, older than FFRTMP_VM_APT_MAX_AGE minutes, or made
# for another kernels.txt.
kapt_update() {
    kapt_init
    local stamp="$KAPT_DIR/updated.stamp" max_age=${FFRTMP_VM_APT_MAX_AGE:-1440}
    if [[ -f $stamp && -z $(find "$stamp" -mmin +"$max_age") ]] && cmp -s "$stamp" "$KAPT_DIR/sources.list"; then
        return 0
    fi
    log "apt-get update of the kernel suites (private lists in $KAPT_DIR/lists)"
    kapt_get update >&2 || die "apt-get update of the kernel suites failed (is $DEBIAN_MIRROR reachable? sources: $KAPT_DIR/sources.list)"
    cp "$KAPT_DIR/sources.list" "$stamp"
}

# --- qemu -----------------------------------------------------------------------
QEMU=${FFRTMP_VM_QEMU:-qemu-system-x86_64}
VM_MEM=${FFRTMP_VM_MEM:-2048}
VM_SMP=${FFRTMP_VM_SMP:-2}
SENTINEL=FFRTMP-VM-EXIT

# Common qemu arguments: TCG only (/dev/kvm here is PVM-only and hangs stock kernels).
qemu_base_args() {
    printf '%s\n' \
        -nodefaults -no-user-config -nographic \
        -machine "${FFRTMP_VM_MACHINE:-q35}" -cpu max \
        -accel tcg,thread=multi -smp "$VM_SMP" -m "$VM_MEM" \
        -no-reboot -nic none \
        -chardev stdio,id=con0,signal=off -serial chardev:con0 \
        -monitor none
    # qboot (shipped with qemu) starts -kernel boots faster than SeaBIOS and prints nothing.
    local bios=${FFRTMP_VM_BIOS-/usr/share/qemu/qboot.rom}
    [[ -z $bios || ! -f $bios ]] || printf '%s\n' -bios "$bios"
}

# run_vm TIMEOUT LOGFILE QEMU-ARGS...: boot, stream console (CR stripped) to stdout
# and LOGFILE; return the payload's exit code from the sentinel line.
run_vm() {
    local timeout=$1 logfile=$2; shift 2
    need_host_tools "$QEMU" timeout
    local -a base
    mapfile -t base < <(qemu_base_args)
    local qrc=0 start=$SECONDS
    set +e
    # shellcheck disable=SC2094
    with_lock vm timeout -k 5 "$timeout" "$QEMU" "${base[@]}" "$@" </dev/null 2>&1 \
        | sed -u 's/\r//g' | tee "$logfile"
    qrc=${PIPESTATUS[0]}
    set -e
    local line
    line=$(grep -a -o "^$SENTINEL=[0-9]*" "$logfile" | tail -n1 || true)
    if [[ -n $line ]]; then
        log "VM finished in $((SECONDS - start)) s; payload exit code ${line#*=}"
        return "${line#*=}"
    fi
    if [[ $qrc -eq 124 ]]; then
        log "error: timed out after ${timeout}s without the '$SENTINEL=' line (console output above)"
        return 124
    fi
    log "error: VM ended (qemu exit $qrc) without printing '$SENTINEL=' (kernel panic or init crash? console output above)"
    return 125
}

# kernel_entry PATH: the cache entry (kernel/<pkg>_<ver>/) a vmlinuz path lies in, or nothing.
kernel_entry() {
    local d=$1
    case $d in
        */root/*) d=${d%/root/*} ;;
        */vmlinuz) d=$(dirname "$d") ;;
        *) return 0 ;;
    esac
    [[ ! -f $d/release ]] || echo "$d"
}

# boot_image VMLINUZ: the image to give qemu -kernel: the uncompressed PVH vmlinux that
# fetch-kernel.sh extracts next to a vmlinuz from the cache, if there is one, else VMLINUZ.
boot_image() {
    local entry
    entry=$(kernel_entry "$1")
    if [[ -n $entry && -f $entry/vmlinux && ${FFRTMP_VM_PVH:-1} == 1 ]]; then
        echo "$entry/vmlinux"
    else
        echo "$1"
    fi
}

# Single-quote a string for POSIX sh.
sh_quote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
