#!/bin/bash
# systemd tier (run inside the Debian 12 VM by ffrtmp-payload.service, as root):
# install ffrtmp with deployment/install-edge.sh, then drive ffrtmp-watch.service through
# the scenarios of issue 4. Every scenario asserts on cgroup files and /proc/PID/cgroup
# (log lines only where the log is the contract, e.g. "State loaded from").
# One line per scenario in out/results.txt: "SCENARIO <n> PASS|FAIL <title> (<s>): <facts>".
#   cargo xtask vm-test --systemd-only        (stages this payload: xtask/src/vm.rs)
#
# Workloads are real ffmpeg processes (lavfi testsrc -> null, CPU-bound) started as user
# nobody in transient units of their own (systemd-run), i.e. by "another unit".
set -u
cd "$(dirname "$0")" || exit 1
source ./lib.sh
exec > >(tee -a "$OUT/scenarios.log") 2>&1
: >"$OUT/results.txt"

INSTALL=$REPO/deployment/install-edge.sh
CONFIG=/etc/ffrtmp/watch-config.yaml
QUOTA=50          # percent of one core
MEM_MIB=256
STATE=/var/lib/ffrtmp/watch-state.json
# WatchdogSec of the shipped unit is 30s; the tier runs with 10s (drop-in) to stay short.
WATCHDOG=10

test_config() { # test_config QUOTA [extra yaml]
    cat <<YAML
# ffrtmp VM-tier test config (an operator's edit of the installed example)
target_commands: [ffmpeg]
scan_interval: 2s
reconcile_interval: 5s
default_limits:
  cpu_quota: $1
  memory_limit: $MEM_MIB
  pids_max: 64
${2:-}
YAML
}
ffmpeg_unit() { start_ffmpeg "$1"; }  # ffmpeg_unit NAME: start one, print its PID
placed_in() { [[ $(cg_of "$1") == "$2" ]]; }
uid_of() { awk '/^Uid:/ {print $2}' "/proc/$1/status"; }
# Monotonic journal time (seconds) of the first line matching REGEX among journalctl ARGS.
jtime() {
    local re=$1; shift
    journalctl -q --no-pager -o short-monotonic "$@" | grep -m1 -E "$re" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p'
}

echo "systemd tier: $(systemctl --version | head -n1); kernel $(uname -r); $(stat -fc %T $CG); nproc $(nproc)"

# ------------------------------------------------------------------------------------------
scenario 0 "install-edge.sh: installs, is idempotent, keeps an edited config"
out1=$("$INSTALL" 2>&1); rc1=$?
echo "$out1" | sed 's/^/    | /'
check "first run exits 0" test "$rc1" -eq 0
for f in /usr/local/bin/ffrtmp /etc/systemd/system/$UNIT /etc/ffrtmp/watch-config.yaml /etc/ffrtmp/watch.env /etc/ffrtmp/.installed; do
    check "$f installed" test -f "$f"
done
check "state directory /var/lib/ffrtmp exists" test -d /var/lib/ffrtmp
check "config is the example" cmp -s "$REPO/examples/watch-config.yaml" "$CONFIG"
check "node check: BTF found" grep -q "ok      BTF" <<<"$out1"
check "node check: cgroup v2 controllers found" grep -q "ok      cgroup v2" <<<"$out1"
check "systemd knows the unit" systemctl cat "$UNIT" >/dev/null
check "not enabled without --enable" test "$(systemctl is-enabled "$UNIT" 2>/dev/null)" = disabled
check "not started without --enable" test "$(prop "$UNIT" ActiveState)" = inactive
before=$(stat -c '%n %Y %i' /usr/local/bin/ffrtmp /etc/systemd/system/$UNIT /etc/ffrtmp/* /etc/ffrtmp/.installed)
out2=$("$INSTALL" 2>&1); rc2=$?
check "second run exits 0" test "$rc2" -eq 0
after=$(stat -c '%n %Y %i' /usr/local/bin/ffrtmp /etc/systemd/system/$UNIT /etc/ffrtmp/* /etc/ffrtmp/.installed)
check "second run exits 0 and says nothing changed" grep -q "nothing changed" <<<"$out2"
check "second run touched no file (mtime, inode)" test "$before" = "$after"
test_config $QUOTA >"$CONFIG"
out3=$("$INSTALL" 2>&1)
check "an edited config is kept" grep -q "kept $CONFIG (existing file" <<<"$out3"
check "edited config content unchanged" grep -q "VM-tier test config" "$CONFIG"
mkdir -p /etc/systemd/system/$UNIT.d
printf '[Service]\nWatchdogSec=%s\n' "$WATCHDOG" >/etc/systemd/system/$UNIT.d/vm-test.conf
systemctl daemon-reload
note "install $(grep -c '^install-edge: installed' <<<"$out1") files; rerun: $(grep -o 'nothing changed' <<<"$out2")"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 1 "service becomes active (READY) with eBPF as its source"
secs=$(timed_start); rc=$?
check "systemctl start returned (READY=1 received)" test "$rc" -eq 0
check "ActiveState active, SubState running" test "$(prop "$UNIT" ActiveState)/$(prop "$UNIT" SubState)" = active/running
main=$(main_pid)
status_text=$(prop "$UNIT" StatusText)
log "StatusText: $status_text"
check "STATUS= names the eBPF source" grep -qi "ebpf" <<<"$status_text"
check "daemon logged 'Event source ebpf started'" wait_for 3 bash -c "journalctl -q -o cat _PID=$main | grep -q 'Event source ebpf started'"
scope=$(scope_cg)
check "MainPID $main is in $scope/supervisor" test "$(cg_of "$main")" = "$scope/supervisor"
check "the service's own cgroup holds no process" test -z "$(cg_file "$(prop "$UNIT" ControlGroup)" cgroup.procs)"
sub=$(cg_file "$scope" cgroup.subtree_control)
check "cpu memory pids enabled on the scope's subtree ($sub)" bash -c "[[ ' $sub ' == *' cpu '* && ' $sub ' == *' memory '* && ' $sub ' == *' pids '* ]]"
check "governed/ exists with cpu memory pids for jobs" bash -c "grep -qw cpu $CG$scope/governed/cgroup.subtree_control && grep -qw memory $CG$scope/governed/cgroup.subtree_control"
check "$SCOPE is a delegated scope" test "$(prop $SCOPE Delegate)" = yes
t_scan=$(jtime 'Scan complete' _PID="$main")
t_ready=$(jtime "Started $UNIT" _PID=1)
log "first scan logged at ${t_scan:-?} s, READY (systemd 'Started') at ${t_ready:-?} s (monotonic)"
check "first scan done before READY (journal order, 50 ms slack for two sockets)" \
    awk -v s="${t_scan:-1e9}" -v r="${t_ready:-0}" 'BEGIN {exit !(s <= r + 0.05)}'
note "start->READY ${secs}s; STATUS=\"$status_text\""
end_scenario

# ------------------------------------------------------------------------------------------
scenario 2 "ffmpeg from another unit is placed with its limits and held to its CPU quota"
ff1=$(ffmpeg_unit ffrtmp-test-ff1) || fail "ffmpeg did not start"
ff1=${ff1:-0}
job1=$(job_cg "$ff1" ffmpeg)
check "ffmpeg PID $ff1 runs as user nobody (uid 65534)" test "$(uid_of "$ff1")" = 65534
check "/proc/$ff1/cgroup is $job1" wait_for 10 placed_in "$ff1" "$job1"
check "$job1/cgroup.procs lists $ff1" grep -qx "$ff1" "$CG$job1/cgroup.procs"
check "cpu.max is '$((QUOTA * 1000)) 100000'" test "$(cg_file "$job1" cpu.max)" = "$((QUOTA * 1000)) 100000"
check "memory.max is $((MEM_MIB * 1048576))" test "$(cg_file "$job1" memory.max)" = $((MEM_MIB * 1048576))
check "pids.max is 64" test "$(cg_file "$job1" pids.max)" = 64
check "its own unit ffrtmp-test-ff1.service is still active" test "$(prop ffrtmp-test-ff1.service ActiveState)" = active
sleep 1
thr0=$(awk '/^nr_throttled/ {print $2}' "$CG$job1/cpu.stat")
share=$(cpu_share "$job1" 5)
thr1=$(awk '/^nr_throttled/ {print $2}' "$CG$job1/cpu.stat")
lo=$(awk -v q=$QUOTA 'BEGIN {printf "%.3f", q / 100 * 0.85}'); hi=$(awk -v q=$QUOTA 'BEGIN {printf "%.3f", q / 100 * 1.15}')
check "CPU share $share within ${lo}..${hi} (quota $((QUOTA))% +-15%)" in_range "$share" "$lo" "$hi"
check "the quota bites: nr_throttled grew ($thr0 -> $thr1)" test "$thr1" -gt "$thr0"
mem=$(cg_file "$job1" memory.current)
check "memory.current $mem is within memory.max" test "${mem:-0}" -gt 0 -a "${mem:-0}" -le $((MEM_MIB * 1048576))
lat=$(journalctl -q -o cat _PID="$(main_pid)" | grep "Limits applied to PID $ff1 " | grep -o 'exec→placed [0-9.]*[a-zµ]*' | head -n1)
note "pid $ff1 in $job1; cpu.max=$(cg_file "$job1" cpu.max); memory.max=$(cg_file "$job1" memory.max); CPU share $share of a core over 5 s (quota 0.$QUOTA); nr_throttled +$((thr1 - thr0)); ${lat:-exec→placed not logged}"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 10 "journald: the daemon's lines are under its unit, with structured fields"
main=$(main_pid)
# journalctl -u matches _SYSTEMD_UNIT (from the sender's cgroup, which is the scope after the
# daemon moved) or, for messages from uid 0, OBJECT_SYSTEMD_UNIT.
check "journalctl -u $UNIT shows the daemon's placement line" bash -c "journalctl -q -o cat -u $UNIT | grep -q 'Limits applied to PID $ff1 '"
check "journalctl -t ffrtmp-watch shows it" bash -c "journalctl -q -o cat -t ffrtmp-watch | grep -q 'Limits applied to PID $ff1 '"
j=$(journalctl -q -o json _PID="$main" | jq -c --arg m "Limits applied to PID $ff1 " 'select(.MESSAGE | contains($m))' | head -n1)
echo "$j" >"$OUT/journal-placement.json"
log "placement entry fields: $(jq -r 'keys | map(select(startswith("_") | not)) | join(" ")' <<<"$j" 2>/dev/null)"
# The daemon's fields carry the prefix FFRTMP_ (tracing-journald's field prefix).
check "placement entry has FFRTMP_JOB=auto-ffmpeg-$ff1" test "$(jq -r '.FFRTMP_JOB // empty' <<<"$j" 2>/dev/null)" = "auto-ffmpeg-$ff1"
check "placement entry has FFRTMP_PID=$ff1" test "$(jq -r '.FFRTMP_PID // empty' <<<"$j" 2>/dev/null)" = "$ff1"
check "placement entry has FFRTMP_COMMAND=ffmpeg" test "$(jq -r '.FFRTMP_COMMAND // empty' <<<"$j" 2>/dev/null)" = ffmpeg
lat_us=$(jq -r '.FFRTMP_LATENCY_US // empty' <<<"$j" 2>/dev/null)
check "placement entry has FFRTMP_LATENCY_US ($lat_us), a number below 10 s" bash -c "[[ '$lat_us' =~ ^[0-9]+$ ]] && (( $lat_us < 10000000 ))"
note "unit of the daemon's lines: $(jq -r '._SYSTEMD_UNIT // "?"' <<<"$j" 2>/dev/null); OBJECT_SYSTEMD_UNIT: $(jq -r '.OBJECT_SYSTEMD_UNIT // "none"' <<<"$j" 2>/dev/null)"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 8a "/metrics and /healthz answer with the numbers the scenario produced (first daemon)"
# (8a runs after 2, 8b at the end on the daemon the watchdog restarted)
metrics_checks() { # metrics_checks EXPECTED-GOVERNED PID...
    local want=$1; shift
    local code body m p job u0 u1 v mcur mv oom hz
    code=$(http_code /healthz)
    hz=$(http_get /healthz)
    log "/healthz $code $hz"
    check "/healthz answers 200" test "$code" = 200
    check "/healthz status healthy" test "$(jq -r .status <<<"$hz")" = healthy
    check "/healthz source ebpf" test "$(jq -r .source <<<"$hz")" = ebpf
    check "/healthz governed $want" test "$(jq -r .governed <<<"$hz")" = "$want"
    check "/healthz events_lost 0" test "$(jq -r .events_lost <<<"$hz")" = 0
    for p in "$@"; do
        job=$(job_cg "$p" ffmpeg)
        u0=$(usage_usec "$job")
        m=$(http_get /metrics)
        u1=$(usage_usec "$job")
        v=$(metric "$m" "ffrtmp_job_cpu_seconds_total{job=\"auto-ffmpeg-$p\"")
        check "job cpu seconds of $p ($v) between the cgroup's usage_usec before and after ($u0, $u1)" \
            awk -v v="${v:-x}" -v a="$u0" -v b="$u1" 'BEGIN {exit !(v != "x" && v * 1e6 >= a - 1000 && v * 1e6 <= b + 1000)}'
        mv=$(metric "$m" "ffrtmp_job_memory_bytes{job=\"auto-ffmpeg-$p\"")
        mcur=$(cg_file "$job" memory.current)
        check "job memory bytes of $p ($mv) within 25 % of memory.current ($mcur)" \
            awk -v v="${mv:-x}" -v c="$mcur" 'BEGIN {exit !(v != "x" && v >= c * 0.75 && v <= c * 1.25)}'
        oom=$(awk '/^oom_kill / {print $2}' "$CG$job/memory.events")
        check "job OOM kills of $p = memory.events oom_kill ($oom)" test "$(metric "$m" "ffrtmp_job_oom_kills_total{job=\"auto-ffmpeg-$p\"")" = "$oom"
        note "auto-ffmpeg-$p: cpu ${v}s (cgroup ${u0}..${u1} us), memory ${mv} B (cgroup $mcur)"
    done
    body=$(http_get /metrics)
    echo "$body" >"$OUT/metrics-$SC_N-$want.txt"
    check "ffrtmp_governed_processes $want" test "$(metric "$body" 'ffrtmp_governed_processes ')" = "$want"
    check "ffrtmp_health{status=\"healthy\"} 1" test "$(metric "$body" 'ffrtmp_health{status="healthy"}')" = 1
    METRIC_EXEC=$(metric "$body" 'ffrtmp_exec_events_total{source="ebpf"}')
    METRIC_PLACED=$(metric "$body" 'ffrtmp_placements_total{result="placed"}')
    METRIC_LAT=$(metric "$body" 'ffrtmp_exec_to_placed_seconds_count')
    METRIC_SCANS=$(metric "$body" 'ffrtmp_scan_duration_seconds_count')
    check "ffrtmp_events_lost_total 0" test "$(metric "$body" 'ffrtmp_events_lost_total ')" = 0
    check "ffrtmp_scan_duration_seconds_count >= 1 (${METRIC_SCANS:-none})" test "${METRIC_SCANS:-0}" -ge 1
}
metrics_checks 1 "$ff1"
check "ffrtmp_exec_events_total{source=\"ebpf\"} >= 1 (${METRIC_EXEC:-none})" test "${METRIC_EXEC:-0}" -ge 1
check "ffrtmp_placements_total{result=\"placed\"} = 1 (${METRIC_PLACED:-none})" test "${METRIC_PLACED:-0}" = 1
check "ffrtmp_exec_to_placed_seconds_count = 1 (${METRIC_LAT:-none})" test "${METRIC_LAT:-0}" = 1
st=$(/usr/local/bin/ffrtmp status --json 2>&1)
echo "$st" >"$OUT/status-1.json"
check "ffrtmp status --json: health healthy" test "$(jq -r .health.status <<<"$st" 2>/dev/null)" = healthy
check "ffrtmp status --json: $ff1 alive in $job1 with CPU use" \
    test "$(jq -r --argjson p "$ff1" '.processes[] | select(.pid == $p) | "\(.alive) \(.cgroup) \(.usage.cpu_usec > 0)"' <<<"$st" 2>/dev/null)" = "true $job1 true"
note "exec events $METRIC_EXEC, placed $METRIC_PLACED, exec->placed samples $METRIC_LAT, scans $METRIC_SCANS"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 3 "systemctl restart: re-adopted, not moved again, no duplicate cgroup"
ino=$(cg_inode "$job1"); old=$(main_pid)
secs=$(timed_start restart)
check "restart succeeded (READY)" is_active
new=$(main_pid)
check "a new main process ($old -> $new)" test "$new" != "$old" -a "$new" -gt 0
check "new daemon in $scope/supervisor" test "$(cg_of "$new")" = "$scope/supervisor"
check "ffmpeg $ff1 still in $job1" placed_in "$ff1" "$job1"
check "same cgroup (inode $ino)" test "$(cg_inode "$job1")" = "$ino"
check "exactly one auto-ffmpeg-$ff1 cgroup on the system" test "$(find_cgroups "auto-ffmpeg-$ff1" | wc -l)" = 1
check "exactly one $SCOPE" test "$(find_cgroups "$SCOPE" | wc -l)" = 1
check "journal: State loaded from $STATE" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'State loaded from $STATE'"
check "journal: re-adopted PID $ff1" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'Re-adopted PID $ff1'"
check "journal: not attached again" bash -c "! journalctl -q -o cat _PID=$new | grep -q 'Attaching to PID $ff1 '"
check "cpu.max unchanged" test "$(cg_file "$job1" cpu.max)" = "$((QUOTA * 1000)) 100000"
note "restart ${secs}s; main $old -> $new; cgroup inode $ino kept"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 4 "systemctl stop: ffmpeg keeps running, governed; daemon-reload moves nothing"
old=$(main_pid)
systemctl stop "$UNIT"
check "service inactive" test "$(prop "$UNIT" ActiveState)" = inactive
check "daemon $old exited" bash -c "! kill -0 $old 2>/dev/null"
check "ffmpeg $ff1 still running" alive "$ff1"
check "still in $job1 (inode $ino)" bash -c "[[ \$(sed -n 's/^0:://p' /proc/$ff1/cgroup) == '$job1' && \$(stat -c %i $CG$job1) == $ino ]]"
check "$SCOPE stays active while it holds the job" test "$(prop $SCOPE ActiveState)" = active
share=$(cpu_share "$job1" 3)
check "still held to its quota with the daemon stopped (share $share)" in_range "$share" "$lo" "$hi"
systemctl daemon-reload
sleep 1
check "after daemon-reload: still in $job1, same inode" bash -c "[[ \$(sed -n 's/^0:://p' /proc/$ff1/cgroup) == '$job1' && \$(stat -c %i $CG$job1) == $ino ]]"
check "after daemon-reload: cpu.max and memory.max unchanged" test "$(cg_file "$job1" cpu.max) $(cg_file "$job1" memory.max)" = "$((QUOTA * 1000)) 100000 $((MEM_MIB * 1048576))"
check "after daemon-reload: its own unit still active" test "$(prop ffrtmp-test-ff1.service ActiveState)" = active
systemctl start "$UNIT"
check "started again and re-adopted $ff1" wait_for 5 bash -c "journalctl -q -o cat _PID=\$(systemctl show -P MainPID $UNIT) | grep -q 'Re-adopted PID $ff1'"
check "after start: still in $job1, same inode" test "$(cg_of "$ff1") $(cg_inode "$job1")" = "$job1 $ino"
note "CPU share with the daemon stopped $share"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 5 "kill -9 of the daemon: systemd restarts it, state loaded, still governed"
old=$(main_pid); n0=$(prop "$UNIT" NRestarts)
kill -9 "$old"
check "systemd restarted it (new MainPID, active)" wait_for 20 bash -c "p=\$(systemctl show -P MainPID $UNIT); [[ \$p -gt 0 && \$p != $old && \$(systemctl show -P ActiveState $UNIT) == active ]]"
new=$(main_pid); n1=$(prop "$UNIT" NRestarts)
check "NRestarts grew ($n0 -> $n1)" test "$n1" -gt "$n0"
check "journal: State loaded" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'State loaded from'"
check "journal: re-adopted $ff1" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'Re-adopted PID $ff1'"
check "new daemon in $scope/supervisor" test "$(cg_of "$new")" = "$scope/supervisor"
check "ffmpeg $ff1 still in $job1, same inode" test "$(cg_of "$ff1") $(cg_inode "$job1")" = "$job1 $ino"
check "exactly one auto-ffmpeg-$ff1 cgroup" test "$(find_cgroups "auto-ffmpeg-$ff1" | wc -l)" = 1
note "main $old killed -> $new; NRestarts $n0 -> $n1"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 6 "a bad config: the unit fails with the error in the journal; a bad reload keeps the old config"
cp "$CONFIG" /root/config.good
# cpu_weight 0 is out of range; cpu_quota 30 would be visible if the bad file were half-applied.
test_config 30 >"$CONFIG"; sed -i 's/^  pids_max: 64/  pids_max: 64\n  cpu_weight: 0/' "$CONFIG"
since=$(date +%s)
systemctl restart "$UNIT" 2>/dev/null; rc=$?
check "systemctl restart with the bad config fails" test "$rc" -ne 0
wait_for 5 bash -c "[[ \$(systemctl show -P ActiveState $UNIT) == failed ]]"
bad_status=$(prop "$UNIT" ExecMainStatus)
check "unit failed with exit status 2 ($(prop "$UNIT" ActiveState), $bad_status)" test "$(prop "$UNIT" ActiveState) $bad_status" = "failed 2"
sleep 3  # RestartSec=2s: an automatic restart would have been scheduled by now
check "...and stays failed: no automatic restart (RestartPreventExitStatus=2)" \
    bash -c "[[ \$(systemctl show -P ActiveState $UNIT) == failed ]] && ! journalctl -q -o cat _PID=1 --since=@$since | grep -q '$UNIT: Scheduled restart job'"
err=$(journalctl -q -o cat -u "$UNIT" --since=-30s | grep -m1 'cpu_weight')
log "journal: $err"
check "the journal has the error naming the file" grep -qF "$CONFIG" <<<"$err"
check "...and the key" grep -qF "default_limits.cpu_weight" <<<"$err"
check "ffmpeg $ff1 untouched while the service is failed" test "$(cg_of "$ff1") $(cg_inode "$job1")" = "$job1 $ino"
cp /root/config.good "$CONFIG"
systemctl reset-failed "$UNIT"
check "starts again with the good config" systemctl start "$UNIT"
main=$(main_pid)
check "re-adopted $ff1 after the failure" wait_for 5 bash -c "journalctl -q -o cat _PID=$main | grep -q 'Re-adopted PID $ff1'"
# A bad reload: rejected, the running config (quota 50) stays.
test_config 30 >"$CONFIG"; sed -i 's/^  pids_max: 64/  pids_max: 64\n  cpu_weight: 0/' "$CONFIG"
systemctl reload "$UNIT"
check "journal: reload rejected" wait_for 5 bash -c "journalctl -q -o cat _PID=$main | grep -q 'Reload rejected'"
check "still active, same MainPID $main" test "$(prop "$UNIT" ActiveState) $(main_pid)" = "active $main"
ff2=$(ffmpeg_unit ffrtmp-test-ff2) || fail "ffmpeg 2 did not start"
ff2=${ff2:-0}; job2=$(job_cg "$ff2" ffmpeg)
check "a new ffmpeg ($ff2) is placed" wait_for 10 placed_in "$ff2" "$job2"
check "...with the old config's cpu.max ($((QUOTA * 1000)) 100000), not the rejected 30000" test "$(cg_file "$job2" cpu.max)" = "$((QUOTA * 1000)) 100000"
systemctl stop ffrtmp-test-ff2.service
# A good reload takes effect (so the check above is not vacuous).
test_config 40 >"$CONFIG"
systemctl reload "$UNIT"
check "journal: configuration reloaded" wait_for 5 bash -c "journalctl -q -o cat _PID=$main | grep -q 'Configuration reloaded'"
ff3=$(ffmpeg_unit ffrtmp-test-ff3) || fail "ffmpeg 3 did not start"
ff3=${ff3:-0}; job3=$(job_cg "$ff3" ffmpeg)
check "after a good reload a new ffmpeg ($ff3) is placed" wait_for 10 placed_in "$ff3" "$job3"
check "...with the new cpu.max 40000 100000" test "$(cg_file "$job3" cpu.max)" = "40000 100000"
check "the governed ffmpeg $ff1 keeps the limits it was placed with" test "$(cg_file "$job1" cpu.max)" = "$((QUOTA * 1000)) 100000"
systemctl stop ffrtmp-test-ff3.service
cp /root/config.good "$CONFIG"; systemctl reload "$UNIT"
wait_for 5 bash -c "journalctl -q -o cat _PID=$main | grep -c 'Configuration reloaded' | grep -q 2"
note "bad start: exit $bad_status with '${err:0:110}…'; bad reload kept cpu.max $((QUOTA * 1000)); good reload gave 40000"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 7 "watchdog: a stopped event loop (SIGSTOP) gets the service restarted"
old=$(main_pid); n0=$(prop "$UNIT" NRestarts); t0=$(now)
kill -STOP "$old"
check "restarted within WatchdogSec ${WATCHDOG}s + margin" wait_for $((WATCHDOG + 45)) bash -c "p=\$(systemctl show -P MainPID $UNIT); [[ \$p -gt 0 && \$p != $old && \$(systemctl show -P ActiveState $UNIT) == active ]]"
took=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
new=$(main_pid); n1=$(prop "$UNIT" NRestarts)
check "systemd logged a watchdog timeout" bash -c "journalctl -q -o cat _PID=1 | grep -qi '$UNIT: watchdog timeout'"
check "NRestarts grew ($n0 -> $n1)" test "$n1" -gt "$n0"
check "the stopped daemon $old is gone" bash -c "! [[ -d /proc/$old ]] || [[ \$(awk '/^State:/ {print \$2}' /proc/$old/status) == Z ]]"
check "new daemon in $scope/supervisor" test "$(cg_of "$new")" = "$scope/supervisor"
check "ffmpeg $ff1 still in $job1, same inode" test "$(cg_of "$ff1") $(cg_inode "$job1")" = "$job1 $ino"
check "journal: re-adopted $ff1" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'Re-adopted PID $ff1'"
note "SIGSTOP -> running again after ${took}s (WatchdogSec=${WATCHDOG}s); main $old -> $new"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 8b "/metrics and /healthz on the restarted daemon: one re-adopted job, one new exec"
ff4=$(ffmpeg_unit ffrtmp-test-ff4) || fail "ffmpeg 4 did not start"
ff4=${ff4:-0}
check "ffmpeg $ff4 placed" wait_for 10 placed_in "$ff4" "$(job_cg "$ff4" ffmpeg)"
sleep 1
metrics_checks 2 "$ff1" "$ff4"
check "this daemon saw exactly one target exec (${METRIC_EXEC:-none})" test "${METRIC_EXEC:-0}" = 1
check "...and placed one process (${METRIC_PLACED:-none}); the re-adopted one is not a placement" test "${METRIC_PLACED:-0}" = 1
check "exec->placed histogram has 1 sample (${METRIC_LAT:-none})" test "${METRIC_LAT:-0}" = 1
systemctl stop ffrtmp-test-ff4.service
sleep 1
check "/healthz governed 1 after ffmpeg $ff4 stopped" wait_for 5 bash -c "[[ \$(curl -s http://$METRICS/healthz | jq -r .governed) == 1 ]]"
check "job cgroup of $ff4 removed once empty" wait_for 5 bash -c "[[ ! -d $CG$(job_cg "$ff4" ffmpeg) ]]"
end_scenario

# ------------------------------------------------------------------------------------------
scenario 9 "install-edge.sh --uninstall: removes what it installed, keeps the edited config"
echo "# edited by the operator" >>"$CONFIG"
cfgsum=$(sha256sum "$CONFIG")
out=$("$INSTALL" --uninstall 2>&1); rc=$?
echo "$out" | sed 's/^/    | /'
check "uninstall exits 0" test "$rc" -eq 0
check "service stopped and unit gone" bash -c "[[ ! -e /etc/systemd/system/$UNIT ]] && ! systemctl is-active --quiet $UNIT"
check "binary removed" test ! -e /usr/local/bin/ffrtmp
check "unedited watch.env removed" test ! -e /etc/ffrtmp/watch.env
check "edited config kept, unchanged" test "$(sha256sum "$CONFIG" 2>/dev/null)" = "$cfgsum"
check "ffmpeg $ff1 untouched (same cgroup, same inode)" test "$(cg_of "$ff1") $(cg_inode "$job1")" = "$job1 $ino"
out=$("$INSTALL" --uninstall 2>&1)
check "a second uninstall says nothing changed" grep -q "nothing changed" <<<"$out"
out=$("$INSTALL" 2>&1)
check "reinstall keeps the edited config" test "$(sha256sum "$CONFIG")" = "$cfgsum"
check "reinstall restores watch.env" cmp -s "$REPO/examples/watch.env" /etc/ffrtmp/watch.env
end_scenario

# ------------------------------------------------------------------------------------------
scenario 11 "upgrade from the predecessor: its unit, user, files and governed process"
systemctl stop 'ffrtmp-test-ff*.service' 2>/dev/null
"$INSTALL" --uninstall --purge >/dev/null 2>&1
rm -rf /etc/ffrtmp
wait_for 10 bash -c "[[ ! -d $CG$scope ]]"
# The predecessor's deployment (WATCH_DEPLOYMENT.md): an unprivileged ffrtmp user, a unit
# with ${VAR:-default} in ExecStart (systemd does not expand it), its example files, a state
# file in its format and an ffmpeg in its cgroup /ffrtmp/auto-ffmpeg-<pid> (no controllers
# enabled: it never applied a limit).
useradd --system --no-create-home --shell /usr/sbin/nologin ffrtmp 2>/dev/null
install -d -o ffrtmp -g ffrtmp /var/lib/ffrtmp
install -d /etc/ffrtmp
cp "$REPO/examples/watch-config.yaml" "$REPO/examples/watch.env" /etc/ffrtmp/
cat >/etc/systemd/system/$UNIT <<'OLD'
[Unit]
Description=FFmpeg Auto-Discovery Watch Daemon
After=network.target
[Service]
Type=simple
User=ffrtmp
Group=ffrtmp
EnvironmentFile=/etc/ffrtmp/watch.env
ExecStart=/usr/local/bin/ffrtmp watch --scan-interval ${SCAN_INTERVAL:-10s} --watch-config /etc/ffrtmp/watch-config.yaml
Restart=on-failure
[Install]
WantedBy=multi-user.target
OLD
systemctl daemon-reload
ff5=$(ffmpeg_unit ffrtmp-test-ff5) || fail "ffmpeg 5 did not start"
ff5=${ff5:-0}
mkdir -p $CG/ffrtmp/auto-ffmpeg-"$ff5"
echo "$ff5" >$CG/ffrtmp/auto-ffmpeg-"$ff5"/cgroup.procs
start5=$(awk '{print $22}' /proc/"$ff5"/stat)
cat >/var/lib/ffrtmp/watch-state.json <<STATE
{"version": 1, "last_scan_at": "$(date -u +%FT%TZ)",
 "processes": {"$ff5": {"pid": $ff5, "job_id": "auto-ffmpeg-$ff5", "command": "ffmpeg",
   "discovered_at": "$(date -u +%FT%TZ)", "attached_at": "$(date -u +%FT%TZ)", "last_seen_at": "$(date -u +%FT%TZ)"}},
 "statistics": {"total_scans": 10, "total_discovered": 1, "total_attachments": 1}}
STATE
chown ffrtmp:ffrtmp /var/lib/ffrtmp/watch-state.json
log "predecessor layout: ffmpeg $ff5 (start time $start5) in $(cg_of "$ff5")"
out=$("$INSTALL" --enable 2>&1); rc=$?
echo "$out" | sed 's/^/    | /'
check "install-edge.sh --enable over the predecessor exits 0" test "$rc" -eq 0
check "the predecessor's unit is set aside, not lost" bash -c "ls /etc/ffrtmp/$UNIT.replaced-* >/dev/null && grep -q 'SCAN_INTERVAL:-10s' /etc/ffrtmp/$UNIT.replaced-*"
check "its config and env files are kept" bash -c "cmp -s $REPO/examples/watch-config.yaml $CONFIG && cmp -s $REPO/examples/watch.env /etc/ffrtmp/watch.env"
check "the new unit is active" is_active
check "journal: the predecessor's state file is loaded" wait_for 5 bash -c "journalctl -q -o cat _PID=\$(systemctl show -P MainPID $UNIT) | grep -q 'State loaded from'"
# The example config: ffmpeg gets cpu_quota 300, memory_limit 8192 after min_runtime 10s.
check "ffmpeg $ff5 is governed with the example's ffmpeg limits (cpu.max 300000 100000)" \
    wait_for 25 bash -c "[[ \$(cat $CG\$(sed -n 's/^0:://p' /proc/$ff5/cgroup)/cpu.max 2>/dev/null) == '300000 100000' ]]"
cg5=$(cg_of "$ff5")
check "...and memory.max 8 GiB" test "$(cg_file "$cg5" memory.max)" = 8589934592
check "/healthz counts it (governed 1)" wait_for 5 bash -c "[[ \$(curl -s http://$METRICS/healthz | jq -r .governed) == 1 ]]"
main=$(main_pid)
out=$("$INSTALL" --enable 2>&1)
check "a second --enable run changes nothing" grep -q "nothing changed" <<<"$out"
check "...and leaves the daemon running (MainPID $main)" test "$(main_pid)" = "$main"
note "ffmpeg $ff5: predecessor cgroup /ffrtmp/auto-ffmpeg-$ff5 -> now $cg5 with cpu.max $(cg_file "$cg5" cpu.max)"
end_scenario

systemctl stop 'ffrtmp-test-ff*.service' 2>/dev/null
summary
