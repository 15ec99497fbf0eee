#!/bin/bash
# Capability probe (systemd VM): which capabilities does ffrtmp-watch.service need?
#   cargo xtask vm-test --capabilities
# Installs the unit with install-edge.sh, then for each candidate bounding set (the unit's
# set, the set minus one capability at a time, and the unit's set plus the other
# candidates) restarts the service with a drop-in `CapabilityBoundingSet=` and checks what
# works: the eBPF source loads, the job scope is created, another user's ffmpeg is placed
# with its limits (cgroup files, /proc/PID/cgroup), its exe is read (state file), and a
# strict placement continues it (not left stopped). Prints one CAPS line per set and
# `systemd-analyze security` of the unit as shipped.
set -u
cd "$(dirname "$0")" || exit 1
source ./lib.sh
exec > >(tee -a "$OUT/caps.txt") 2>&1

"$REPO/deployment/install-edge.sh" >/dev/null || { echo "CAPS FAIL install-edge.sh failed"; exit 1; }
shipped=$(sed -n 's/^CapabilityBoundingSet=//p' /etc/systemd/system/$UNIT)
echo "shipped set: $shipped"
ALL="CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_KILL CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_SYS_RESOURCE CAP_SYS_NICE CAP_FOWNER"

cat >/etc/ffrtmp/watch-config.yaml <<'YAML'
scan_interval: 1s
target_commands: [ffmpeg]
placement: strict
default_limits:
  cpu_quota: 50
  memory_limit: 256
# The probe's ffmpeg runs in a systemd-run service: moved, so the probe sees a placement.
services: move
YAML
: >/etc/ffrtmp/watch.env
mkdir -p /etc/systemd/system/$UNIT.d
# A daemon without sd_notify support still runs (Type=simple) so the capabilities can be
# probed; with it, the unit as shipped is used.
if [[ ${PROBE_TYPE_SIMPLE:-0} == 1 ]]; then
    printf '[Service]\nType=simple\nWatchdogSec=0\n' >/etc/systemd/system/$UNIT.d/simple.conf
fi

probe() { # probe "SET" [EXTRA-UNIT-LINES]: prints the CAPS line
    local set=$1 extra=${2:-} pid job probs=() cgp state exe t
    extra=$(tr ';' '\n' <<<"$extra")  # "A=x;B=y": two unit lines
    printf '[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=%s\n%s\n' "$set" "$extra" >/etc/systemd/system/$UNIT.d/caps.conf
    systemctl stop "$UNIT" ffrtmp-probe-ff.service 2>/dev/null
    systemctl reset-failed "$UNIT" ffrtmp-probe-ff.service 2>/dev/null
    systemctl daemon-reload
    rm -f /var/lib/ffrtmp/watch-state.json
    # No governed process is left, so the old scope goes away with the daemon.
    wait_for 10 bash -c "[[ ! -d $CG$(scope_cg) ]]"
    if ! systemctl start "$UNIT" 2>/dev/null || ! wait_for 15 bash -c "journalctl -q -o cat _PID=\$(systemctl show -P MainPID $UNIT) | grep -q 'Scan complete'"; then
        probs+=("service did not start: $(journalctl -q -o cat -u "$UNIT" -n 30 | grep -m1 -E 'ffrtmp: error|rror' | cut -c1-240)")
    else
        journal_now | grep -q 'Event source ebpf started' || probs+=("no eBPF source")
        cgp=$(cg_of "$(main_pid)")
        [[ $cgp == */supervisor ]] || probs+=("daemon not in a supervisor leaf ($cgp)")
        pid=$(start_ffmpeg ffrtmp-probe-ff) || probs+=("ffmpeg did not start")
        if [[ -n ${pid:-} ]]; then
            wait_for 10 bash -c "[[ \$(sed -n 's/^0:://p' /proc/$pid/cgroup) == */auto-ffmpeg-$pid ]]" || probs+=("ffmpeg not placed ($(cg_of "$pid"))")
            job=$(cg_of "$pid")
            [[ $(cg_file "$job" cpu.max) == "50000 100000" ]] || probs+=("cpu.max '$(cg_file "$job" cpu.max)'")
            [[ $(cg_file "$job" memory.max) == 268435456 ]] || probs+=("memory.max '$(cg_file "$job" memory.max)'")
            sleep 0.5
            state=$(proc_state "$pid")
            [[ $state != T ]] || probs+=("left stopped after strict placement (SIGCONT refused)")
            wait_for 5 test -s /var/lib/ffrtmp/watch-state.json
            exe=$(jq -r --arg p "$pid" '.processes[$p].exe // empty' /var/lib/ffrtmp/watch-state.json 2>/dev/null)
            [[ $exe == /usr/bin/ffmpeg ]] || probs+=("exe not read ('$exe')")
        fi
        t=$(journal_now | grep -icE 'permission denied|operation not permitted|EPERM|EACCES')
        [[ $t -eq 0 ]] || probs+=("$t permission error(s) in the journal: $(journal_now | grep -iE 'permission denied|operation not permitted|EPERM|EACCES' | head -n1)")
    fi
    systemctl stop ffrtmp-probe-ff.service 2>/dev/null
    local what="[$set]${extra:+ + $(tr '\n' ' ' <<<"$extra")}"
    if [[ ${#probs[@]} -eq 0 ]]; then
        echo "CAPS WORKS   $what"
    else
        echo "CAPS BREAKS  $what: $(join_by '; ' "${probs[@]}")"
    fi
}

probe "$shipped"
pid=$(main_pid)
journalctl -q --no-pager -o verbose _PID="$pid" -n 2 >"$OUT/journal-fields.txt"
if [[ ${PROBE_CAPS:-1} == 1 ]]; then
    for c in $shipped; do
        probe "$(tr ' ' '\n' <<<"$shipped" | grep -vx "$c" | tr '\n' ' ' | sed 's/ $//')"
    done
    probe "$ALL"
fi

# More hardening than the unit has: does the daemon still work with it? (Each line of
# HARDENING_PROBE is one variant, e.g. "ProtectProc=invisible"; ";" separates unit lines.)
while IFS= read -r extra; do
    [[ -n $extra ]] && probe "$shipped" "$extra"
done <<<"${HARDENING_PROBE:-}"

# The scope over D-Bus, alone: which capability does systemd want for StartTransientUnit?
for set in "$shipped" "$shipped CAP_SYS_ADMIN"; do
    rc=0
    out=$(systemd-run --quiet --wait --pipe --property=CapabilityBoundingSet="$set" --property=NoNewPrivileges=yes \
        /usr/bin/systemd-run --scope --quiet --unit=ffrtmp-probe-scope --property=Delegate=yes /bin/true 2>&1) || rc=$?
    if [[ $rc -eq 0 ]]; then echo "SCOPE WORKS  [$set]"; else echo "SCOPE BREAKS [$set]: exit $rc: $out"; fi
done

rm -f /etc/systemd/system/$UNIT.d/caps.conf /etc/systemd/system/$UNIT.d/simple.conf
systemctl daemon-reload
echo
echo "=== systemd-analyze security $UNIT (as shipped)"
systemd-analyze security --no-pager "$UNIT" | tee "$OUT/security.txt" | tail -n 3
systemctl stop "$UNIT"
systemd-analyze syscall-filter @privileged @resources @system-service | grep -nE "^@|^ +(bpf|perf_event_open|setrlimit|prlimit64|pidfd_open|pidfd_send_signal|mount)$" >"$OUT/syscall-groups.txt"
exit 0
