#!/bin/sh
# Quick tier (busybox sh, PID 1's child in the initramfs VM): run each root integration test
# binary given as an argument, one after the other, with FFRTMP_REQUIRE_ROOT_TESTS=1 (a
# skipped root test fails), then measure exec -> placed of the real daemon on this kernel.
#   quick-run.sh quick-tests.sh /abs/path/daemon_cgroups-<hash> ...   (see xtask/src/vm.rs)
# Env: QUICK_TEST_THREADS (default 2) is passed as --test-threads; QUICK_BIN_TIMEOUT (default
# 150 s; a healthy binary takes 2-15 s) ends a binary that hangs (it fails; the next one still runs); QUICK_FFRTMP is the ffrtmp
# binary (its CARGO_BIN_EXE path; no measurement without it); QUICK_EXECS (default 20);
# QUICK_FORKS (default 300 fork+exit, half as many fork+exec, per round; 0: none);
# QUICK_UL_MOUNT (default /usr/lib/ffrtmp-vm/mount: util-linux mount, which can turn
# favordynmods off again; busybox's remount keeps the options in effect).
# Prints one line per binary:
#   QUICK PASS <name> (<seconds>s)    or    QUICK FAIL <name> exit <code> (<seconds>s)[: <tests>][ -- <panic>]
#                                     or    QUICK FAIL <name> timed out after <s>s (killed)
# then the measurement: `ffrtmp watch` with a config of its own (target: a copy of /bin/sleep
# named ffmpeg -- a short name, as the real one: the 6.1 comm bug missed short names only --
# cgroup_root /ffrtmp-quick, reconcile_interval 1h, so a placement can only come from an exec
# event), QUICK_EXECS targets started one after the other, each killed once placed; the
# figures are the daemon's own "exec→placed" log values:
#   QUICK KERNEL <uname -r> exec→placed p50 <ms> max <ms> (n=<N>, placed from events <k>/<N>)[; <feature>: <fallback>]
#   QUICK KERNEL <uname -r> favordynmods exec→placed ...   (the same with the cgroup2 mount
#                                                         option on; or why it cannot be)
#   QUICK KERNEL <uname -r> favordynmods cost: fork+exit A -> B µs (..%), fork+exec ...
#                                             (busybox sh loops, off/on interleaved)
#   QUICK PASS|FAIL exec-placement ...   (FAIL: a target not placed from its exec event)
# Exits 1 if anything failed.
export FFRTMP_REQUIRE_ROOT_TESTS=1 RUST_BACKTRACE=0
fail=0
: >/tmp/quick-results
kernel=$(uname -r)
echo "quick tier: kernel $kernel; cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control); mount: $(awk '$2 == "/sys/fs/cgroup" {print $4}' /proc/mounts)"
for bin in "$@"; do
    name=$(basename "$bin" | sed 's/-[0-9a-f]\{16\}$//')
    echo
    echo "=== $name"
    t0=$(cut -d' ' -f1 /proc/uptime)
    # Into a file, then shown: a pipe would wait for every process still holding it (a
    # test's stopped or orphaned child), and the tier would hang. A new file each time:
    # what an earlier binary left behind writes to the one it has.
    rm -f /tmp/quick-out
    timeout -s KILL "${QUICK_BIN_TIMEOUT:-150}" "$bin" --test-threads="${QUICK_TEST_THREADS:-2}" >/tmp/quick-out 2>&1
    rc=$?
    cat /tmp/quick-out
    # Which tests failed, and the first panic's message: the result line must say it (a log
    # is often read from its tail only).
    why=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' /tmp/quick-out | paste -sd, -)
    panic=$(grep -m1 -A1 "panicked at" /tmp/quick-out | tail -n 1 | cut -c1-300)
    why=${why:+: $why}
    [ -z "$panic" ] || why="${why:-:} -- $panic"
    secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc -eq 0 ]; then
        echo "QUICK PASS $name (${secs}s)" | tee -a /tmp/quick-results
    elif [ $rc -eq 137 ] && awk -v s="$secs" -v t="${QUICK_BIN_TIMEOUT:-150}" 'BEGIN {exit !(s >= t - 1)}'; then
        echo "QUICK FAIL $name timed out after ${QUICK_BIN_TIMEOUT:-150}s (killed; its output above)" | tee -a /tmp/quick-results
        fail=1
        # The daemons it started would outlive it and disturb the next binary.
        for d in /proc/[0-9]*; do
            [ "$(readlink "$d/exe" 2>/dev/null)" = "${QUICK_FFRTMP:-/nonexistent}" ] && kill -9 "${d#/proc/}" 2>/dev/null
        done
    else
        echo "QUICK FAIL $name exit $rc (${secs}s)$why" | tee -a /tmp/quick-results
        fail=1
    fi
    # What a failed test left behind would disturb the next binary: report it.
    left=$(find /sys/fs/cgroup -mindepth 1 -type d -name 'ffrtmp-test-*' | head -n 3)
    [ -z "$left" ] || echo "note: cgroups left behind by $name: $left"
done

# --- exec -> placed of the daemon on this kernel -------------------------------------------
M=/tmp/quick-measure
N=${QUICK_EXECS:-20}
BURSTS=${QUICK_BURSTS:-3}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# wait_s SECONDS CMD...: poll CMD every 20 ms until it succeeds; false on timeout.
wait_s() {
    _end=$(awk -v n="$(uptime_s)" -v s="$1" 'BEGIN {print n + s}'); shift
    while ! "$@"; do
        awk -v n="$(uptime_s)" -v d="$_end" 'BEGIN {exit !(n > d)}' && return 1
        sleep 0.02
    done
}
placed() { grep -q '^0::/ffrtmp-quick/' "/proc/$1/cgroup" 2>/dev/null; }
# placed_logged PID: placed, and the daemon has said so. It checks the move once more
# after the kernel shows it, so a target killed in between is logged as gone, not placed.
placed_logged() { placed "$1" && grep -q "Limits applied to PID $1 " "$log"; }
cg2_opts() { awk '$2 == "/sys/fs/cgroup" && $3 == "cgroup2" {print $4}' /proc/mounts; }
has_favor() { case ,$(cg2_opts), in *,favordynmods,*) return 0 ;; esac; return 1; }
UL_MOUNT=${QUICK_UL_MOUNT:-/usr/lib/ffrtmp-vm/mount}
favor_off() { # util-linux: ignore the options in effect, give all but favordynmods again
    [ -x "$UL_MOUNT" ] || return 1
    "$UL_MOUNT" --options-mode=ignore -o "remount,$(cg2_opts | tr ',' '\n' | grep -vx -e favordynmods -e rw | paste -sd, -)" /sys/fs/cgroup \
        && ! has_favor
}
# forks N: "<fork+exit µs> <fork+exec µs>": N subshells `(:)` and N/2 runs of /usr/bin/cat
forks() {
    _n=$1; _m=$(($1 / 2)); _i=0; _t0=$(uptime_s)
    while [ $_i -lt "$_n" ]; do (:); _i=$((_i + 1)); done
    _t1=$(uptime_s); _i=0
    while [ $_i -lt "$_m" ]; do /usr/bin/cat </dev/null; _i=$((_i + 1)); done
    awk -v a="$_t0" -v b="$_t1" -v c="$(uptime_s)" -v n="$_n" -v m="$_m" 'BEGIN {printf "%.0f %.0f\n", (b - a) / n * 1e6, (c - b) / m * 1e6}'
}
# med FILE COLUMN: the median of a column
med() { awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rel() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.0f %%", (b - a) / a * 100}'; }
started() { grep -q 'Event source .* started' "$1" || ! kill -0 "$2" 2>/dev/null; }

# round LABEL [watch flags...]: start the daemon, N targets one at a time, stop it; sets
# R_LINE (the figures), R_NOTE (features and fallbacks seen in its log), R_K, R_PLACED.
round() {
    label=$1; shift
    log=$M/$label.log
    rm -f "$M/state.json" "$M/pids"
    "$QUICK_FFRTMP" watch --config "$M/config.yaml" "$@" >"$log" 2>&1 </dev/null &
    dpid=$!
    wait_s 60 started "$log" "$dpid"
    if ! kill -0 "$dpid" 2>/dev/null; then
        wait "$dpid"; rc=$?
        R_LINE="" R_NOTE="the daemon exited ($rc) at start: $(grep -m1 -iE 'error|fail' "$log" | cut -c1-200)"
        return 1
    fi
    i=0 hits=0 N_RUN=$N
    if [ -n "${R_BURST:-}" ]; then
        # Bursts: all N started at once, then each waited for (10 s); $BURSTS times. A
        # kernel that runs the hook preemptibly skips it for some (tp_btf on 7.x did).
        b=0; : >"$M/all-pids"
        while [ $b -lt "$BURSTS" ]; do
            b=$((b + 1)); i=0; : >"$M/pids"
            while [ $i -lt "$N" ]; do
                i=$((i + 1)); "$M/ffmpeg" 30 & echo "$!" >>"$M/pids"
            done
            for p in $(cat "$M/pids"); do
                if wait_s 10 placed_logged "$p"; then hits=$((hits + 1)); else echo "note: burst target $p not placed within 10 s (comm $(cat "/proc/$p/comm" 2>/dev/null), exe $(readlink "/proc/$p/exe" 2>/dev/null), $(cat "/proc/$p/cgroup" 2>/dev/null))"; fi
            done
            for p in $(cat "$M/pids"); do kill "$p"; wait "$p" 2>/dev/null; done
            cat "$M/pids" >>"$M/all-pids"
        done
        mv "$M/all-pids" "$M/pids"
        i=$N N_RUN=$((N * BURSTS))
    fi
    while [ $i -lt "$N" ]; do
        i=$((i + 1))
        # Started three ways in turn (a shell's fork+exec, exec from dash, setpriv's exec):
        # what the kernel leaves in the program's stack differs by path (the 6.1 comm bug
        # showed only on some).
        case $((i % 3)) in
            0) "$M/ffmpeg" 30 & ;;
            1) /bin/dash -c 'exec "$0" 30' "$M/ffmpeg" & ;;
            2) /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups "$M/ffmpeg" 30 & ;;
        esac
        p=$!
        echo "$p" >>"$M/pids"
        if wait_s 3 placed_logged "$p"; then
            hits=$((hits + 1))
        else
            echo "note: target $p not placed (and logged) within 3 s ($(cat /proc/$p/cgroup 2>/dev/null))"
        fi
        kill "$p"; wait "$p" 2>/dev/null
        if [ $i -ge 5 ] && [ $hits -eq 0 ]; then
            echo "note: none of the first $i targets placed: round stopped"; N_RUN=$i; break
        fi
        sleep 0.05
    done
    sleep 0.3  # the last placement line
    kill -TERM "$dpid"; wait "$dpid" 2>/dev/null
    : >"$M/$label.ms"
    R_PLACED=0
    for p in $(cat "$M/pids"); do
        l=$(grep -m1 "Limits applied to PID $p " "$log") || {
            echo "note: no 'Limits applied' line for PID $p; its lines: $(grep -E "PID $p( |\)|:|$)" "$log" | cut -c1-200 | head -n 4 | tr '\n' '|')"
            continue
        }
        R_PLACED=$((R_PLACED + 1))
        # Held at the exec gate: the line says read→placed (the process ran nothing).
        echo "$l" | sed -n 's/.*\(exec\|read\)→placed \([0-9.]*\)ms.*/\2/p' >>"$M/$label.ms"
    done
    R_K=$(grep -c . "$M/$label.ms")
    R_LINE=$(sort -n "$M/$label.ms" | awk -v n="$N_RUN" -v k="$R_K" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { printf "exec→placed none (n=%d, placed from events 0/%d)", n, n; exit }
            printf "exec→placed p50 %.3fms max %.3fms (n=%d, placed from events %d/%d)", v[int((NR + 1) / 2)], v[NR], n, k, n
        }')
    hook=$(sed -n 's/.*eBPF exec source: \([a-z_]*\)[^ ]* attached.*/\1/p' "$log" | head -n1)
    msg() { grep -m1 -E "$1" "$log" | sed 's/^[0-9TZ:.-]* *[A-Z]* *\[[a-z]*\] //' | cut -c1-"${2:-160}"; }
    skips=$(sed -n 's/.*Kernel program totals.*, \([0-9]*\) skipped by the kernel,.*/\1/p' "$log" | head -n1)
    [ -z "${R_BURST:-}" ] || [ -z "$skips" ] || R_LINE="$R_LINE; execs the kernel skipped the hook for: $skips"
    if [ "$R_K" -lt "$N_RUN" ]; then
        echo "note: $((N_RUN - R_K)) target(s) not placed from events; the daemon's log ($log), last lines:"
        tail -n 15 "$log" | cut -c1-300 | sed 's/^/    | /'
    fi
    R_NOTE=""
    if grep -q 'using the BTF tracepoint' "$log"; then
        R_NOTE="classic tracepoint unavailable: BTF tracepoint tp_btf/sched_process_exec ($(msg 'classic tracepoint cannot be used' 140))"
    elif [ -n "$hook" ] && [ "$hook" != tracepoint ]; then
        R_NOTE="exec hook $hook"
    fi
    if [ -z "$hook" ]; then
        R_NOTE="${R_NOTE:+$R_NOTE; }no exec hook attached ($(msg 'eBPF.*(fail|cannot|error)|Event source .* failed' 160))"
    fi
    return 0
}

# gate_round LABEL: a round with the exec gate on (the target on the daemon's PATH;
# gate_timeout 1s: under TCG a move can take tens of ms). Sets G_LINE (its read→placed
# figures) and G_WHY (what failed; empty when every target was held).
gate_round() {
    sed 's/^inline_placement: off/inline_placement: on/' "$M/config-events.yaml" >"$M/config.yaml"
    echo "gate_timeout: 1s" >>"$M/config.yaml"
    old_path=$PATH; PATH="$M:$PATH"; export PATH
    G_LINE="" G_WHY=""
    g_ok=0; round "$1" && g_ok=1
    PATH=$old_path; export PATH
    cp "$M/config-events.yaml" "$M/config.yaml"
    if [ $g_ok = 1 ] && grep -q 'held at exec' "$M/$1.log"; then
        G_LINE=$(echo "$R_LINE" | sed 's/exec→placed/read→placed/')
        held=$(grep -c 'Limits applied to PID .*held at exec' "$M/$1.log")
        [ "$held" -eq "$N_RUN" ] || G_WHY="$((N_RUN - held)) of $N_RUN targets not held at the exec gate"
    else
        G_WHY="the exec gate did not hold the targets: $(grep -m1 'Inline placement' "$M/$1.log" | cut -c1-200)"
    fi
}

if [ -n "${QUICK_FFRTMP:-}" ]; then
    echo
    echo "=== exec -> placed on $kernel"
    rm -rf "$M"; mkdir -p "$M"
    cp /bin/sleep "$M/ffmpeg"
    cat >"$M/config.yaml" <<YAML
# quick-tests.sh: exec -> placed of the daemon on this kernel
target_commands: [ffmpeg]
cgroup_root: /ffrtmp-quick
reconcile_interval: 1h
scan_interval: 1s
# The exec events' path; the gate has a round of its own below.
inline_placement: off
state_path: $M/state.json
metrics_addr: ""
default_limits:
  cpu_quota: 50
  memory_limit: 64
  pids_max: 16
YAML
    mp_fail=""
    if round default; then
        line="QUICK KERNEL $kernel $R_LINE${R_NOTE:+; $R_NOTE}"
        [ "$R_K" -eq "$N" ] || mp_fail="$((N_RUN - R_K)) of $N_RUN targets not placed from their exec event ($R_PLACED placed at all)"
    else
        # The eBPF source cannot run here: what the daemon does with --fallback-scan.
        why=$R_NOTE
        if round fallback --fallback-scan; then
            line="QUICK KERNEL $kernel $R_LINE; eBPF source unavailable ($why): --fallback-scan places from the /proc scan (scan_interval 1s)"
        else
            line="QUICK KERNEL $kernel no measurement: $why; with --fallback-scan: $R_NOTE"
        fi
        mp_fail="the eBPF source did not start: $why"
    fi
    echo "$line" | tee -a /tmp/quick-results
    # Several targets at once: the placement thread moves them one after another, each move
    # waiting for its own RCU grace period without favordynmods on 6.0+.
    R_BURST=1
    if [ -z "$mp_fail" ] && round burst; then
        echo "QUICK KERNEL $kernel $BURSTS bursts of $N at once: $R_LINE" | tee -a /tmp/quick-results
        [ "$R_K" -eq "$N_RUN" ] || mp_fail="$((N_RUN - R_K)) of $N_RUN burst targets not placed from their exec event ($R_PLACED placed at all)"
    fi
    R_BURST=
    # The exec gate: the target binary on the daemon's PATH, every exec held until placed.
    cp "$M/config.yaml" "$M/config-events.yaml"
    if [ -z "$mp_fail" ]; then
        gate_round gate
        [ -z "$G_LINE" ] || echo "QUICK KERNEL $kernel exec gate: held at exec, $G_LINE" | tee -a /tmp/quick-results
        [ -z "$G_WHY" ] || mp_fail=$G_WHY
    fi
    if [ -n "$mp_fail" ]; then
        echo "QUICK FAIL exec-placement $mp_fail" | tee -a /tmp/quick-results; fail=1
    else
        echo "QUICK PASS exec-placement ($N targets one at a time and $BURSTS bursts of $N placed from their exec events, and $N held at the exec gate)" | tee -a /tmp/quick-results
    fi
    # The same with the cgroup2 mount option favordynmods (Linux 6.0+), and what it costs
    # fork and exit: rounds interleaved off/on, as the VM's speed drifts.
    opts=$(cg2_opts)
    F=${QUICK_FORKS:-300}
    : >"$M/forks-off"; : >"$M/forks-on"
    [ "$F" -gt 0 ] && [ "${kernel%%.*}" -ge 6 ] && forks "$F" >>"$M/forks-off"  # still off here
    if err=$(mount -o remount,favordynmods /sys/fs/cgroup 2>&1) && has_favor; then
        echo "cgroup2 remounted: $(cg2_opts)"
        if [ "$F" -gt 0 ]; then
            forks "$F" >>"$M/forks-on"
            for r in 2 3; do
                favor_off || break
                forks "$F" >>"$M/forks-off"
                mount -o remount,favordynmods /sys/fs/cgroup && forks "$F" >>"$M/forks-on"
            done
            echo "forks (fork+exit µs, fork+exec µs) off: $(tr '\n' ' ' <"$M/forks-off")on: $(tr '\n' ' ' <"$M/forks-on")"
            fe0=$(med "$M/forks-off" 1); fx0=$(med "$M/forks-off" 2); fe1=$(med "$M/forks-on" 1); fx1=$(med "$M/forks-on" 2)
            echo "QUICK KERNEL $kernel favordynmods cost: fork+exit $fe0 -> $fe1 µs ($(rel "$fe0" "$fe1")), fork+exec $fx0 -> $fx1 µs ($(rel "$fx0" "$fx1")) (median of $(grep -c . "$M/forks-off") off / $(grep -c . "$M/forks-on") on rounds, interleaved, of $F (:) / $((F / 2)) /usr/bin/cat in busybox sh)" \
                | tee -a /tmp/quick-results
        fi
        has_favor || mount -o remount,favordynmods /sys/fs/cgroup
        if round favordynmods; then
            echo "QUICK KERNEL $kernel favordynmods $R_LINE" | tee -a /tmp/quick-results
            R_BURST=1
            if round favordynmods-burst; then
                echo "QUICK KERNEL $kernel favordynmods $BURSTS bursts of $N at once: $R_LINE" | tee -a /tmp/quick-results
                if [ "$R_K" -lt "$N_RUN" ]; then
                    echo "QUICK FAIL exec-placement with favordynmods: $((N_RUN - R_K)) of $N_RUN burst targets not placed from their exec event" | tee -a /tmp/quick-results; fail=1
                fi
            fi
            R_BURST=
            # The gate's hold with favordynmods: the move no longer waits for RCU.
            gate_round favordynmods-gate
            [ -z "$G_LINE" ] || echo "QUICK KERNEL $kernel favordynmods exec gate: held at exec, $G_LINE" | tee -a /tmp/quick-results
            if [ -n "$G_WHY" ]; then
                echo "QUICK FAIL exec-placement with favordynmods: $G_WHY" | tee -a /tmp/quick-results; fail=1
            fi
        else
            echo "QUICK KERNEL $kernel favordynmods no measurement: $R_NOTE" | tee -a /tmp/quick-results
        fi
    else
        echo "QUICK KERNEL $kernel favordynmods not supported (mount -o remount,favordynmods: ${err:-accepted but not in /proc/mounts}); mount stays $opts" \
            | tee -a /tmp/quick-results
    fi
    find /sys/fs/cgroup/ffrtmp-quick -depth -type d -exec rmdir {} \; 2>/dev/null
else
    echo "note: QUICK_FFRTMP not set: no exec -> placed measurement"
fi

echo
echo "=== quick tier summary"
cat /tmp/quick-results
exit $fail
