# Helpers for the scenario scripts that run inside the systemd-tier VM (bash, as root).
# Source it; do not run it. The payload disk is the cwd (/payload); results go to out/.
# shellcheck shell=bash

UNIT=ffrtmp-watch.service
SCOPE=ffrtmp-governed.scope
CG=/sys/fs/cgroup
# shellcheck disable=SC2034  # used by the scripts that source this
REPO=$PWD/repo
OUT=$PWD/out
mkdir -p "$OUT"

log() { printf '  %s\n' "$*"; }
now() { cut -d' ' -f1 /proc/uptime; }

# --- scenario bookkeeping: one PASS/FAIL line per scenario --------------------------------
# scenario N "title"; check ...; note ...; end_scenario
declare -A RESULT=()
SC_N='' SC_TITLE='' SC_FAILS=() SC_NOTES=() SC_T0=0
scenario() {
    SC_N=$1 SC_TITLE=$2 SC_FAILS=() SC_NOTES=() SC_T0=$(now)
    echo
    echo "=== scenario $SC_N: $SC_TITLE"
}
# check "what" CMD...: CMD must succeed.
check() {
    local what=$1; shift
    if "$@"; then log "ok: $what"; else log "FAILED: $what"; SC_FAILS+=("$what"); fi
}
# fail "what": record a failure found another way.
fail() { log "FAILED: $*"; SC_FAILS+=("$*"); }
# note "fact": a number or fact the scenario measured (shown on its result line).
note() { log "measured: $*"; SC_NOTES+=("$*"); }
join_by() { local sep=$1 out=''; shift; for x in "$@"; do out+=${out:+$sep}$x; done; printf '%s' "$out"; }
end_scenario() {
    local secs line notes
    secs=$(awk -v a="$SC_T0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
    notes=$(join_by '; ' "${SC_NOTES[@]}")
    if [[ ${#SC_FAILS[@]} -eq 0 ]]; then
        line="SCENARIO $SC_N PASS $SC_TITLE (${secs}s)${notes:+: $notes}"
    else
        line="SCENARIO $SC_N FAIL $SC_TITLE (${secs}s): $(join_by '; ' "${SC_FAILS[@]}")${notes:+ | $notes}"
    fi
    RESULT[$SC_N]=$line
    echo "$line"
    echo "$line" >>"$OUT/results.txt"
}
# Print every result again, in order; exit status 1 if any failed.
summary() {
    local k rc=0
    echo
    echo "=== summary"
    for k in $(printf '%s\n' "${!RESULT[@]}" | sort -V); do
        echo "${RESULT[$k]}"
        [[ ${RESULT[$k]} == "SCENARIO $k PASS"* ]] || rc=1
    done
    return $rc
}

# --- waiting --------------------------------------------------------------------------------
# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds; false on timeout.
wait_for() {
    local deadline; deadline=$(awk -v n="$(now)" -v s="$1" 'BEGIN {print n + s}'); shift
    while :; do
        "$@" && return 0
        awk -v n="$(now)" -v d="$deadline" 'BEGIN {exit !(n > d)}' && return 1
        sleep 0.1
    done
}

# --- the service --------------------------------------------------------------------------
prop() { systemctl show -P "$2" "$1"; }
main_pid() { prop "$UNIT" MainPID; }
is_active() { [[ $(prop "$UNIT" ActiveState) == active ]]; }
# Journal of the current main process of the unit. (By PID: after the daemon moves into
# its scope, journald files its lines under the scope's unit and invocation.)
journal_now() {
    local pid; pid=$(main_pid)
    [[ $pid -gt 0 ]] || return 0
    journalctl -q --no-pager -o cat _PID="$pid" 2>/dev/null
}
journal_all() { journalctl -q --no-pager -o cat -u "$UNIT"; }
# timed_start [start|restart]: run systemctl; print how long it took (it returns at READY=1).
timed_start() {
    local t0 t1
    t0=$(now)
    systemctl "${1:-start}" "$UNIT" || return 1
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}'
}

# --- cgroups ---------------------------------------------------------------------------------
# The cgroup v2 path of PID ("0::" line of /proc/PID/cgroup).
cg_of() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }
# The slice the unit runs in, from its ControlGroup (/system.slice/ffrtmp-watch.service).
unit_slice() { dirname "$(prop "$UNIT" ControlGroup)"; }
scope_cg() { echo "$(unit_slice)/$SCOPE"; }
job_cg() { echo "$(scope_cg)/governed/auto-$2-$1"; }  # job_cg PID COMMAND
cg_file() { cat "$CG$1/$2" 2>/dev/null; }
cg_inode() { stat -c %i "$CG$1" 2>/dev/null; }
usage_usec() { awk '/^usage_usec/ {print $2}' "$CG$1/cpu.stat"; }
# cpu_share CGROUP SECONDS: CPU used by the cgroup per second of wall time over SECONDS.
cpu_share() {
    local u0 t0 u1 t1
    u0=$(usage_usec "$1"); t0=$(now)
    sleep "$2"
    u1=$(usage_usec "$1"); t1=$(now)
    awk -v u=$((u1 - u0)) -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", u / ((b - a) * 1e6)}'
}
in_range() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN {exit !(x >= lo && x <= hi)}'; }
# Every directory named NAME anywhere in the cgroup tree.
find_cgroups() { find "$CG" -type d -name "$1" 2>/dev/null | sed "s|^$CG||"; }

# --- workloads ---------------------------------------------------------------------------------
# start_ffmpeg UNIT [systemd-run options...]: a real, CPU-bound ffmpeg in a transient service
# of its own, as user nobody (so the daemon governs another user's process); prints its PID.
start_ffmpeg() {
    local u=$1; shift
    systemd-run --quiet --unit="$u" --property=User=nobody --working-directory=/ "$@" \
        /usr/bin/ffmpeg -nostdin -hide_banner -loglevel error \
        -f lavfi -i testsrc=size=640x360:rate=30 -f null - || return 1
    local pid=
    wait_for 10 bash -c "[[ \$(systemctl show -P MainPID $u) -gt 0 ]]" || return 1
    pid=$(systemctl show -P MainPID "$u")
    # systemd-run forks, then execs ffmpeg: wait for the exec.
    wait_for 10 bash -c "[[ \$(cat /proc/$pid/comm 2>/dev/null) == ffmpeg ]]" || return 1
    echo "$pid"
}
proc_state() { awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
alive() { [[ -d /proc/$1 && $(proc_state "$1") != Z ]]; }

# --- HTTP (metrics_addr) ------------------------------------------------------------------------
METRICS=${METRICS:-127.0.0.1:9464}
http_get() { curl -sS --max-time 5 "http://$METRICS$1"; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$METRICS$1"; }
# metric TEXT NAME{labels-substring}: the value of the first sample line matching.
metric() {
    awk -v n="$2" 'index($0, n) == 1 {print $NF; exit}' <<<"$1"
}
