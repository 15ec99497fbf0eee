#!/usr/bin/env bash
# Install ffrtmp watch on an edge node as a systemd service (docs/deployment.md).
#
#   deployment/install-edge.sh [--binary PATH] [--enable] [--fallback-scan] [--favordynmods]
#   deployment/install-edge.sh --check
#   deployment/install-edge.sh --uninstall [--purge]
#
# Installs, as root:
#   /usr/local/bin/ffrtmp                              the binary (--binary, default
#                                                      target/release/ffrtmp of this checkout)
#   /etc/systemd/system/ffrtmp-watch.service           the unit (deployment/systemd/)
#   /etc/ffrtmp/watch-config.yaml, /etc/ffrtmp/watch.env   from examples/, only when absent
#   /var/lib/ffrtmp                                    the state directory
#   /usr/local/share/doc/ffrtmp/deployment.md          the unit's Documentation=
# and records what it installed (with checksums) in /etc/ffrtmp/.installed.
#
# Idempotent: a second run changes nothing and says so. It never overwrites an existing
# config or env file, and --uninstall never removes one that differs from what it installed.
# The service is enabled and started only with --enable (and restarted then if the binary
# or the unit changed). It checks the node (cgroup v2 controllers, BTF, tracefs, kernel,
# systemd) and prints what is missing and what the daemon falls back to.
#
#   --fallback-scan   also install a drop-in that adds --fallback-scan to ExecStart (for
#                     nodes where the eBPF source cannot run: the /proc scan governs instead)
#   --favordynmods    also remount cgroup2 with favordynmods now and at every boot (the unit
#                     ffrtmp-cgroup-favordynmods.service, ordered before ffrtmp-watch.service):
#                     placements stop waiting for an RCU grace period, at the price of slower
#                     fork and exit for every process of the node (numbers: --check, and
#                     docs/deployment.md). Linux 6.0+; --uninstall removes the unit.
#   --check           only check the node; exit 1 if the daemon cannot govern here
#   --purge           with --uninstall: also remove /var/lib/ffrtmp (the state file)
#
# Exit codes: 0 done (or nothing to do), 1 error (message says what to fix), 2 bad usage.
set -euo pipefail

UNIT_NAME=ffrtmp-watch.service
BIN_DST=/usr/local/bin/ffrtmp
UNIT_DST=/etc/systemd/system/$UNIT_NAME
DROPIN_DIR=/etc/systemd/system/$UNIT_NAME.d
FALLBACK_DST=$DROPIN_DIR/fallback-scan.conf
FAVOR_NAME=ffrtmp-cgroup-favordynmods.service
FAVOR_DST=/etc/systemd/system/$FAVOR_NAME
ETC_DIR=/etc/ffrtmp
CONFIG_DST=$ETC_DIR/watch-config.yaml
ENV_DST=$ETC_DIR/watch.env
STATE_DIR=/var/lib/ffrtmp
DOC_DST=/usr/local/share/doc/ffrtmp/deployment.md
MANIFEST=$ETC_DIR/.installed

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/.." && pwd)
UNIT_SRC=$HERE/systemd/$UNIT_NAME
CONFIG_SRC=$CHECKOUT/examples/watch-config.yaml
ENV_SRC=$CHECKOUT/examples/watch.env
DOC_SRC=$CHECKOUT/docs/deployment.md

say() { printf 'install-edge: %s\n' "$*"; }
die() { printf 'install-edge: error: %s\n' "$*" >&2; exit 1; }
usage() { # usage CODE: the header above; to stderr when CODE is not 0
    local text; text=$(sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//')
    if [[ ${1:-0} == 0 ]]; then echo "$text"; else echo "$text" >&2; fi
    exit "${1:-0}"
}

binary=$CHECKOUT/target/release/ffrtmp
mode=install enable=0 purge=0 fallback=0 favordynmods=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) [[ $# -ge 2 ]] || { echo "--binary needs a path" >&2; usage 2; }; binary=$2; shift 2 ;;
        --binary=*) binary=${1#*=}; shift ;;
        --enable) enable=1; shift ;;
        --fallback-scan) fallback=1; shift ;;
        --favordynmods) favordynmods=1; shift ;;
        --uninstall) mode=uninstall; shift ;;
        --purge) purge=1; shift ;;
        --check) mode=check; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install-edge: unknown option '$1'" >&2; usage 2 ;;
    esac
done
[[ $purge == 0 || $mode == uninstall ]] || { echo "install-edge: --purge goes with --uninstall" >&2; exit 2; }
[[ $favordynmods == 0 || $mode == install ]] || { echo "install-edge: --favordynmods goes with an install (not --check or --uninstall)" >&2; exit 2; }

[[ $mode == check || $(id -u) -eq 0 ]] || die "must run as root (it writes /usr/local/bin, /etc and /etc/systemd/system): sudo $0 $*"

have_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

# --- favordynmods -------------------------------------------------------------------------
# Measured in the VM tier (cargo xtask vm-test, systemd scenario 15 on Debian 12 / 6.1 and
# Debian 13 / 6.12, 2 vCPUs under qemu TCG: 20 starts of a real ffmpeg per setting, and
# fork loops with the option off and on interleaved; docs/deployment.md has every number):
FAVOR_GAIN="exec→placed p50 ~24 ms without it, ~10 ms with it (real ffmpeg, VM tier)"
FAVOR_COST="fork+exit and fork+exec, no slowdown measurable in the VM tier (lost in its noise; +28 % / +25 % reported on 2-vCPU KVM guests)"
# The options of the cgroup2 mount at /sys/fs/cgroup (empty if there is none).
cgroup2_opts() { awk '$2 == "/sys/fs/cgroup" && $3 == "cgroup2" {print $4; exit}' /proc/self/mounts 2>/dev/null; }
has_favordynmods() { [[ ,$(cgroup2_opts), == *,favordynmods,* ]]; }
kernel_has_favordynmods() { # Linux 6.0+ (commit 6a010a49b63a)
    local k major minor; k=$(uname -r); major=${k%%.*}; minor=${k#*.}; minor=${minor%%[!0-9]*}
    (( major >= 6 ))
}
# The command that turns the option off again at run time: util-linux's remount keeps the
# options in effect unless told to ignore them, and the kernel knows no "nofavordynmods".
favordynmods_off_cmd() {
    local o; o=$(cgroup2_opts | tr ',' '\n' | grep -vx -e favordynmods -e rw -e ro | paste -sd, -)
    echo "mount --options-mode=ignore -o remount${o:+,$o} /sys/fs/cgroup"
}
favor_unit_text() {
    cat <<UNIT
# Written by install-edge.sh --favordynmods; install-edge.sh --uninstall removes it.
# Remounts cgroup2 with favordynmods before ffrtmp-watch.service starts: a placement (a write
# to cgroup.procs) then does not wait for an RCU grace period ($FAVOR_GAIN).
# Cost: every fork and exit on the node takes the cgroup rwsem's slow path ($FAVOR_COST).
# See $DOC_DST.
[Unit]
Description=cgroup2 mount option favordynmods (fast cgroup moves for ffrtmp)
Documentation=file:$DOC_DST
Before=$UNIT_NAME
ConditionPathIsMountPoint=/sys/fs/cgroup
ConditionKernelVersion=>=6.0

[Service]
Type=oneshot
RemainAfterExit=yes
# util-linux's (and busybox's) remount keeps the options in effect (nsdelegate,
# memory_recursiveprot, nosuid, ...) and adds this one.
ExecStart=/bin/mount -o remount,favordynmods /sys/fs/cgroup
ExecStartPost=/bin/grep -qE '^[^ ]+ /sys/fs/cgroup cgroup2 [^ ]*favordynmods' /proc/self/mounts

[Install]
WantedBy=multi-user.target
UNIT
}

# --- node check ---------------------------------------------------------------------------
# Prints each finding; sets node_ok=0 when the daemon cannot govern at all.
check_node() {
    local fs ctrl missing c kver major minor sdver
    node_ok=1 ebpf_ok=1
    say "checking this node:"
    kver=$(uname -r); major=${kver%%.*}; minor=${kver#*.}; minor=${minor%%[!0-9]*}
    if (( major > 5 || (major == 5 && minor >= 8) )); then
        say "  ok      kernel $kver (>= 5.8: BPF ring buffer)"
    else
        say "  MISSING kernel $kver is older than 5.8 (no BPF ring buffer): the eBPF source cannot run;"
        say "          the daemon needs --fallback-scan (re-run with --fallback-scan) and scans /proc every scan_interval"
        ebpf_ok=0
    fi
    local tp_found=0
    [[ -e /sys/kernel/tracing/events/sched/sched_process_exec || -e /sys/kernel/debug/tracing/events/sched/sched_process_exec ]] && tp_found=1
    local paranoid
    paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)
    if (( tp_found )) && (( paranoid > 2 )) && [[ ! -r /sys/kernel/btf/vmlinux ]]; then
        say "  MISSING kernel.perf_event_paranoid=$paranoid: perf events need CAP_SYS_ADMIN, which the unit does not"
        say "          grant, and without BTF (/sys/kernel/btf/vmlinux) there is no BTF tracepoint to fall back to:"
        say "          the eBPF source cannot attach. Set sysctl kernel.perf_event_paranoid=2 (persist it in"
        say "          /etc/sysctl.d/), or re-run with --fallback-scan"
        ebpf_ok=0
    elif (( tp_found )) && (( paranoid > 2 )); then
        say "  note    kernel.perf_event_paranoid=$paranoid: perf events need CAP_SYS_ADMIN, which the unit does not"
        say "          grant, so the daemon uses the BTF tracepoint tp_btf/sched_process_exec; 7.x kernels skip it"
        say "          for some execs under load (counted, placed by reconciliation). With"
        say "          sysctl kernel.perf_event_paranoid=2 it uses the classic tracepoint, which the kernel skips only while other BPF work runs on that CPU"
    elif (( tp_found )); then
        say "  ok      tracefs with sched/sched_process_exec (exec hook: the classic tracepoint)"
    elif [[ -r /sys/kernel/btf/vmlinux ]]; then
        say "  note    tracefs is not mounted: the daemon uses the BTF tracepoint tp_btf/sched_process_exec, which"
        say "          7.x kernels run preemptibly and skip for some execs under load (counted, found by reconciliation)."
        say "          Mount tracefs at boot (systemctl enable --now sys-kernel-tracing.mount, or fstab:"
        say "          tracefs /sys/kernel/tracing tracefs defaults 0 0)"
    elif grep -qw tracefs /proc/filesystems; then
        say "  MISSING tracefs is not mounted and there is no BTF (/sys/kernel/btf/vmlinux): the daemon would mount"
        say "          tracefs itself, which the unit's capability set does not allow. Mount it at boot"
        say "          (systemctl enable --now sys-kernel-tracing.mount, or fstab: tracefs /sys/kernel/tracing tracefs defaults 0 0)"
        ebpf_ok=0
    else
        say "  MISSING BTF and tracefs: the eBPF source cannot attach; re-run with --fallback-scan (scans /proc)"
        ebpf_ok=0
    fi
    if [[ -r /sys/kernel/btf/vmlinux ]]; then
        say "  ok      BTF at /sys/kernel/btf/vmlinux (the exec's start time, parent, exe and argv[0] from the event)"
    else
        say "  note    no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF): events carry less, /proc is read instead,"
        say "          strict placement is off and aliases are found by reconciliation"
    fi
    fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo none)
    if [[ $fs == cgroup2fs ]]; then
        ctrl=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || true)
        missing=
        for c in cpu memory pids; do [[ " $ctrl " == *" $c "* ]] || missing+=" $c"; done
        if [[ -z $missing ]]; then
            say "  ok      cgroup v2 with controllers: $ctrl"
        else
            say "  MISSING cgroup v2 controller(s):$missing (have: ${ctrl:-none}). Limits of those kinds cannot be"
            say "          applied (the daemon logs each failure and reports degraded health). Enable them on the"
            say "          kernel command line (e.g. cgroup_enable=memory) or stop whatever holds them in cgroup v1"
        fi
        if has_favordynmods; then
            say "  ok      cgroup2 has favordynmods: placements do not wait for an RCU grace period ($FAVOR_GAIN; cost: $FAVOR_COST)"
        elif kernel_has_favordynmods; then
            say "  NOTE    cgroup2 without favordynmods: every placement waits for an RCU grace period ($FAVOR_GAIN); --favordynmods turns it on at boot (cost: $FAVOR_COST)"
        else
            say "  ok      kernel $kver < 6.0: cgroup moves do not wait for an RCU grace period (no favordynmods option needed or known)"
        fi
        if [[ -f $FAVOR_DST ]] && have_systemd; then
            say "          $FAVOR_NAME is installed ($(systemctl is-enabled "$FAVOR_NAME" 2>/dev/null || echo unknown), $(systemctl is-active "$FAVOR_NAME" 2>/dev/null || echo unknown))"
        fi
    elif [[ -d /sys/fs/cgroup/cpu && -d /sys/fs/cgroup/memory ]]; then
        say "  NOTE    cgroup v1 (hybrid/legacy hierarchy): the daemon uses the v1 backend with cgroup_root /ffrtmp;"
        say "          systemd does not delegate v1 hierarchies. For the delegated layout boot with"
        say "          systemd.unified_cgroup_hierarchy=1 (docs/deployment.md)"
        [[ -d /sys/fs/cgroup/pids ]] || say "  MISSING v1 pids hierarchy: pids_max cannot be applied"
    else
        say "  MISSING no cgroup v2 at /sys/fs/cgroup and no v1 cpu/memory hierarchies: nothing can be governed"
        node_ok=0
    fi
    if have_systemd; then
        sdver=$(systemctl --version | awk 'NR==1 {print $2}')
        if command -v systemd-run >/dev/null; then
            say "  ok      systemd $sdver with systemd-run (cgroup_root auto: jobs under ffrtmp-governed.scope)"
        else
            say "  MISSING systemd-run: cgroup_root auto cannot create its scope; the daemon falls back to /ffrtmp"
        fi
    else
        say "  NOTE    systemd is not running here: the unit is installed but cannot be started;"
        say "          run 'ffrtmp watch --config $CONFIG_DST' under your supervisor (cgroup_root auto = /ffrtmp)"
    fi
    check_gate "$kver" "$major"
    if [[ $ebpf_ok == 0 && $fallback == 0 && $mode == install ]]; then
        say "  => the eBPF source cannot run here: without --fallback-scan the service will exit at start"
    fi
}

# The exec gate (docs/inline.md): fanotify exec permission events (5.0), the kernel's
# CONFIG_FANOTIFY_ACCESS_PERMISSIONS, and CAP_SYS_ADMIN, which only the drop-in grants.
check_gate() {
    local kver=$1 major=$2 cfg="" said pid
    if [[ -r /boot/config-$kver ]]; then
        cfg=$(grep -E '^CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y' "/boot/config-$kver" || echo off)
    elif [[ -r /proc/config.gz ]]; then
        cfg=$(zcat /proc/config.gz 2>/dev/null | grep -E '^CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y' || echo off)
    fi
    if (( major < 5 )); then
        say "  note    inline placement is off: kernel $kver has no exec permission events (5.0); targets are placed after they start"
    elif [[ $cfg == off ]]; then
        say "  note    inline placement is off: CONFIG_FANOTIFY_ACCESS_PERMISSIONS is not set in this kernel; targets are placed after they start"
    elif [[ -f $DROPIN_DIR/inline-placement.conf ]]; then
        say "  ok      inline placement: $DROPIN_DIR/inline-placement.conf grants the unit CAP_SYS_ADMIN (targets are held at exec"
        say "          until placed, once systemd has reloaded the unit and restarted it, unless the config says inline_placement: off)"
    else
        say "  note    inline placement is off under the shipped unit (no CAP_SYS_ADMIN): targets are placed after they start."
        say "          To place them before their first instruction, install deployment/systemd/inline-placement.conf (docs/deployment.md)"
    fi
    if have_systemd && systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null; then
        pid=$(systemctl show -P MainPID "$UNIT_NAME" 2>/dev/null)
        if [[ ${pid:-0} -gt 0 ]]; then
            said=$(journalctl _PID="$pid" -o cat 2>/dev/null | grep -E '^Inline placement is (on|off)' | tail -n 1 || true)
            [[ -n $said ]] && say "          the running daemon said: $said"
        fi
    fi
    return 0
}

# --- manifest: "sha256  path" of each file this script installed --------------------------
declare -A recorded=()
load_manifest() {
    local sum path
    [[ -f $MANIFEST ]] || return 0
    while read -r sum path; do [[ -n $path ]] && recorded[$path]=$sum; done <"$MANIFEST"
}
save_manifest() {
    local p tmp
    mkdir -p "$ETC_DIR"
    tmp=$(mktemp "$ETC_DIR/.installed.XXXXXX")
    for p in "${!recorded[@]}"; do printf '%s  %s\n' "${recorded[$p]}" "$p"; done | sort -k2 >"$tmp"
    chmod 0644 "$tmp"
    if [[ -f $MANIFEST ]] && cmp -s "$tmp" "$MANIFEST"; then rm -f "$tmp"; else mv "$tmp" "$MANIFEST"; fi
}
sum_of() { sha256sum "$1" | cut -d' ' -f1; }

changes=()
unit_changed=0 bin_changed=0

# install_file SRC DST MODE: copy when absent or different (atomically), record it.
install_file() {
    local src=$1 dst=$2 m=$3 tmp
    [[ -f $src ]] || die "$src not found (run from a complete checkout)"
    if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
        recorded[$dst]=$(sum_of "$dst")
        return 1
    fi
    mkdir -p "$(dirname "$dst")"
    tmp=$(mktemp "$(dirname "$dst")/.$(basename "$dst").XXXXXX")
    cp "$src" "$tmp"; chmod "$m" "$tmp"; mv -f "$tmp" "$dst"
    recorded[$dst]=$(sum_of "$dst")
    changes+=("installed $dst")
    return 0
}

# install_config SRC DST: only when absent; an existing file (edited or not) is kept.
install_config() {
    local src=$1 dst=$2
    [[ -f $src ]] || die "$src not found (run from a complete checkout)"
    if [[ -e $dst ]]; then
        if [[ -n ${recorded[$dst]:-} && $(sum_of "$dst") == "${recorded[$dst]}" ]]; then
            say "kept $dst (as installed)"
        else
            say "kept $dst (existing file, not touched)"
        fi
        return 0
    fi
    mkdir -p "$(dirname "$dst")"
    install -m 0644 "$src" "$dst"
    recorded[$dst]=$(sum_of "$dst")
    changes+=("installed $dst (from ${src#"$CHECKOUT"/})")
}

# A unit file this script did not install (the predecessor's: ${VAR:-default} in ExecStart,
# User=ffrtmp) is kept as /etc/ffrtmp/ffrtmp-watch.service.replaced-<time> before ours
# replaces it.
set_aside_foreign_unit() {
    local keep
    [[ -f $UNIT_DST && -z ${recorded[$UNIT_DST]:-} ]] || return 0
    cmp -s "$UNIT_SRC" "$UNIT_DST" && return 0
    keep=$ETC_DIR/$UNIT_NAME.replaced-$(date +%Y%m%d%H%M%S)
    mkdir -p "$ETC_DIR"
    mv "$UNIT_DST" "$keep"
    changes+=("moved the existing $UNIT_DST (not installed by this script) to $keep")
}

do_install() {
    local version
    [[ -f $binary ]] || die "binary $binary not found: build it (cargo xtask build-ebpf && cargo build --release -p ffrtmp) or pass --binary PATH"
    [[ -x $binary ]] || die "$binary is not executable"
    version=$("$binary" --version 2>/dev/null) || die "$binary --version failed: is it an ffrtmp binary for this machine (glibc, architecture)?"
    [[ $version == ffrtmp* ]] || die "$binary does not look like ffrtmp (--version printed '$version')"
    check_node
    [[ $node_ok == 1 ]] || say "warning: this node cannot be governed as it is (see above); installing anyway"
    load_manifest
    install_file "$binary" "$BIN_DST" 0755 && bin_changed=1
    set_aside_foreign_unit
    install_file "$UNIT_SRC" "$UNIT_DST" 0644 && unit_changed=1
    if [[ $fallback == 1 ]]; then
        local tmp; tmp=$(mktemp)
        printf '# Written by install-edge.sh --fallback-scan: scan /proc when the eBPF source cannot run.\n[Service]\nExecStart=\nExecStart=%s watch --config %s --fallback-scan\n' \
            "$BIN_DST" "$CONFIG_DST" >"$tmp"
        install_file "$tmp" "$FALLBACK_DST" 0644 && unit_changed=1
        rm -f "$tmp"
    elif [[ -n ${recorded[$FALLBACK_DST]:-} && -f $FALLBACK_DST ]]; then
        say "note: $FALLBACK_DST from an earlier --fallback-scan install is kept (remove it to use eBPF only)"
    fi
    local favor_changed=0
    if [[ $favordynmods == 1 ]]; then
        [[ $(stat -fc %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]] \
            || die "--favordynmods: /sys/fs/cgroup is not cgroup2 here; the option exists only for cgroup v2"
        kernel_has_favordynmods \
            || die "--favordynmods: kernel $(uname -r) is older than 6.0: it has no favordynmods, and its cgroup moves do not wait for an RCU grace period anyway"
        have_systemd || die "--favordynmods: systemd is not running; mount cgroup2 with -o favordynmods at boot yourself (or boot with cgroup_favordynmods=1 on Linux 6.7+)"
        local ftmp; ftmp=$(mktemp)
        favor_unit_text >"$ftmp"
        install_file "$ftmp" "$FAVOR_DST" 0644 && favor_changed=1
        rm -f "$ftmp"
    elif [[ -n ${recorded[$FAVOR_DST]:-} && -f $FAVOR_DST ]]; then
        say "note: $FAVOR_DST from an earlier --favordynmods install is kept (install-edge.sh --uninstall removes it)"
    fi
    if [[ -f $DOC_SRC ]]; then install_file "$DOC_SRC" "$DOC_DST" 0644 || true; fi
    install_config "$CONFIG_SRC" "$CONFIG_DST"
    install_config "$ENV_SRC" "$ENV_DST"
    if [[ ! -d $STATE_DIR ]]; then
        install -d -m 0750 "$STATE_DIR"
        changes+=("created $STATE_DIR")
    fi
    save_manifest

    if have_systemd && [[ $unit_changed == 1 || $favor_changed == 1 ]]; then
        systemctl daemon-reload
        changes+=("systemctl daemon-reload")
    fi
    if [[ $favordynmods == 1 ]]; then
        if ! systemctl is-enabled --quiet "$FAVOR_NAME" 2>/dev/null; then
            systemctl enable --quiet "$FAVOR_NAME"
            changes+=("enabled $FAVOR_NAME (cgroup2 gets favordynmods at every boot, before $UNIT_NAME)")
        fi
        if [[ $favor_changed == 1 ]] || ! systemctl is-active --quiet "$FAVOR_NAME" || ! has_favordynmods; then
            systemctl restart "$FAVOR_NAME" \
                || die "systemctl restart $FAVOR_NAME failed: journalctl -u $FAVOR_NAME -n 20 says why"
            has_favordynmods || die "$FAVOR_NAME ran but /proc/self/mounts shows no favordynmods for /sys/fs/cgroup ($(cgroup2_opts))"
            changes+=("remounted /sys/fs/cgroup: $(cgroup2_opts)")
        fi
        say "favordynmods on: $FAVOR_GAIN; the cost, for every process on the node: $FAVOR_COST"
    fi
    if [[ $enable == 1 ]]; then
        have_systemd || die "--enable: systemd is not running on this machine"
        if ! systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
            systemctl enable --quiet "$UNIT_NAME"
            changes+=("enabled $UNIT_NAME")
        fi
        if ! systemctl is-active --quiet "$UNIT_NAME"; then
            systemctl start "$UNIT_NAME" || die "systemctl start $UNIT_NAME failed: journalctl -u $UNIT_NAME -n 50 says why"
            changes+=("started $UNIT_NAME")
        elif [[ $bin_changed == 1 || $unit_changed == 1 ]]; then
            # Governed processes keep running; the new daemon re-adopts them from the state file.
            systemctl restart "$UNIT_NAME" || die "systemctl restart $UNIT_NAME failed: journalctl -u $UNIT_NAME -n 50 says why"
            changes+=("restarted $UNIT_NAME (new binary or unit)")
        fi
    elif have_systemd && systemctl is-active --quiet "$UNIT_NAME" && [[ $bin_changed == 1 || $unit_changed == 1 ]]; then
        say "note: $UNIT_NAME is running the old binary/unit: systemctl restart $UNIT_NAME (governed processes keep running)"
    fi

    say "$version"
    if [[ ${#changes[@]} -eq 0 ]]; then
        say "already installed; nothing changed"
    else
        local c; for c in "${changes[@]}"; do say "$c"; done
    fi
    if [[ $enable == 0 ]] && ! { have_systemd && systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; }; then
        say "not enabled: systemctl enable --now $UNIT_NAME (or re-run with --enable)"
    fi
}

# remove_recorded PATH WHAT: remove PATH if it still has the checksum recorded at install.
remove_recorded() {
    local p=$1
    [[ -e $p ]] || return 0
    if [[ -z ${recorded[$p]:-} ]]; then
        say "kept $p (not installed by this script)"
    elif [[ $(sum_of "$p") == "${recorded[$p]}" ]]; then
        rm -f "$p"; changes+=("removed $p")
    else
        say "kept $p (changed since it was installed)"
    fi
}

# adopt_if_identical SRC DST: an unrecorded DST identical to SRC counts as installed by us.
adopt_if_identical() {
    if [[ -z ${recorded[$2]:-} && -f $2 ]] && cmp -s "$1" "$2"; then
        recorded[$2]=$(sum_of "$2")
    fi
}

do_uninstall() {
    local p
    load_manifest
    [[ -f $MANIFEST ]] || say "no $MANIFEST: removing only files identical to this checkout's"
    if have_systemd && systemctl cat "$UNIT_NAME" >/dev/null 2>&1; then
        if systemctl is-active --quiet "$UNIT_NAME"; then
            systemctl stop "$UNIT_NAME"; changes+=("stopped $UNIT_NAME (governed processes keep running)")
        fi
        if systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
            systemctl disable --quiet "$UNIT_NAME"; changes+=("disabled $UNIT_NAME")
        fi
    fi
    if have_systemd && [[ -f $FAVOR_DST ]] && systemctl is-enabled --quiet "$FAVOR_NAME" 2>/dev/null; then
        systemctl disable --quiet "$FAVOR_NAME"; changes+=("disabled $FAVOR_NAME")
    fi
    # Without a manifest, files identical to this checkout's count as ours.
    local ftmp; ftmp=$(mktemp); favor_unit_text >"$ftmp"
    adopt_if_identical "$ftmp" "$FAVOR_DST"; rm -f "$ftmp"
    adopt_if_identical "$UNIT_SRC" "$UNIT_DST"
    adopt_if_identical "$CONFIG_SRC" "$CONFIG_DST"
    adopt_if_identical "$ENV_SRC" "$ENV_DST"
    local favor_was=0; [[ -e $FAVOR_DST ]] && favor_was=1
    for p in "$UNIT_DST" "$FALLBACK_DST" "$FAVOR_DST" "$BIN_DST" "$DOC_DST" "$CONFIG_DST" "$ENV_DST"; do
        remove_recorded "$p"
    done
    if [[ $favor_was == 1 && ! -e $FAVOR_DST ]]; then
        if have_systemd; then systemctl stop "$FAVOR_NAME" 2>/dev/null || true; fi
        has_favordynmods && say "note: /sys/fs/cgroup keeps favordynmods until the next boot; to drop it now: $(favordynmods_off_cmd)"
    fi
    rmdir "$DROPIN_DIR" "$(dirname "$DOC_DST")" 2>/dev/null || true
    if have_systemd && [[ ! -e $UNIT_DST ]]; then
        systemctl daemon-reload; systemctl reset-failed "$UNIT_NAME" "$FAVOR_NAME" 2>/dev/null || true
    fi
    if [[ -d $STATE_DIR ]]; then
        if [[ $purge == 1 ]]; then
            rm -rf --one-file-system "$STATE_DIR"; changes+=("removed $STATE_DIR (--purge)")
        else
            say "kept $STATE_DIR (the state file; --uninstall --purge removes it)"
        fi
    fi
    rm -f "$MANIFEST"
    if rmdir "$ETC_DIR" 2>/dev/null; then
        changes+=("removed $ETC_DIR")
    elif [[ -d $ETC_DIR ]]; then
        say "kept $ETC_DIR: $(find "$ETC_DIR" -mindepth 1 -maxdepth 1 -printf '%f ')"
    fi
    if [[ ${#changes[@]} -eq 0 ]]; then
        say "nothing installed; nothing changed"
    else
        for p in "${changes[@]}"; do say "$p"; done
    fi
    say "governed processes were not touched; their cgroups stay until they exit"
}

case $mode in
    check) check_node; [[ $node_ok == 1 ]] ;;
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
