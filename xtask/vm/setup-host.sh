#!/usr/bin/env bash
# Install the host tools the VM tiers need. Idempotent: a second run installs nothing.
# qemu-system-x86 comes from bookworm-backports through a private apt source list
# (the machine's apt configuration is not changed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
need_cmd apt-get "This script needs a Debian/Ubuntu host with apt."

PACKAGES=(qemu-system-x86 busybox-static debootstrap e2fsprogs cpio util-linux coreutils zstd lz4 binutils)

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    log "host already set up: $(qemu-system-x86_64 --version | head -n1); nothing to do"
    exit 0
fi

log "installing: ${missing[*]}"
with_lock apt apt_private_update
# -t bookworm-backports: qemu-system-x86 must match the backports qemu-utils already on
# these machines; for other packages apt still picks the newest candidate.
with_lock apt apt_private install -y --no-install-recommends -t "$SUITE-backports" "${missing[@]}" >&2 \
    || die "apt-get install of ${missing[*]} failed (see above)"

for pkg in "${missing[@]}"; do
    installed "$pkg" || die "$pkg is still not installed after apt-get install"
done
log "installed: ${missing[*]}; $(qemu-system-x86_64 --version | head -n1)"
