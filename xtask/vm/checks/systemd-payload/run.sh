#!/bin/bash
# systemd-tier self-check, run by ffrtmp-payload.service inside the VM:
#   ./run-systemd.sh checks/systemd-payload      (results in checks/systemd-payload/out/)
set -u
fail=0
mkdir -p out
exec > >(tee out/results.txt) 2>&1
ok() { echo "CHECK ok:   $*"; }
bad() { echo "CHECK FAIL: $*"; fail=1; }

# systemd 252 on pure cgroup v2
ver=$(systemctl --version | head -n1)
[[ $ver == "systemd 252 "* ]] && ok "$ver" || bad "unexpected systemd: $ver"
fs=$(stat -fc %T /sys/fs/cgroup)
[[ $fs == cgroup2fs && ! -e /sys/fs/cgroup/unified ]] && ok "pure cgroup v2 (/sys/fs/cgroup is $fs)" \
    || bad "/sys/fs/cgroup is $fs (unified dir present: $([[ -e /sys/fs/cgroup/unified ]] && echo yes || echo no))"
echo "root cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "payload runs in: $(cat /proc/self/cgroup)"

# systemctl works
state=$(timeout 60 systemctl is-system-running --wait)
[[ $state == running ]] && ok "systemctl is-system-running: $state" \
    || { bad "system state $state"; systemctl --failed --no-pager; }

# transient unit: ffmpeg in the background through systemd-run
if systemd-run --unit=ffrtmp-ffmpeg --quiet \
        ffmpeg -hide_banner -nostats -loglevel error -f lavfi -i testsrc=size=320x240:rate=25 -f null -; then
    sleep 4
    cg=/sys/fs/cgroup/system.slice/ffrtmp-ffmpeg.service
    st=$(systemctl is-active ffrtmp-ffmpeg)
    pid=$(systemctl show -P MainPID ffrtmp-ffmpeg)
    usage=$(awk '/^usage_usec/ {print $2}' "$cg/cpu.stat" 2>/dev/null || echo 0)
    if [[ $st == active && $(cat /proc/"$pid"/comm 2>/dev/null) == ffmpeg ]] && grep -qx "$pid" "$cg/cgroup.procs" && (( usage > 100000 )); then
        ok "systemd-run transient unit: ffmpeg pid $pid active in $cg, ${usage} us CPU used"
    else
        bad "transient ffmpeg unit: state $st, pid $pid, usage ${usage:-?}"; systemctl status ffrtmp-ffmpeg --no-pager
    fi
    systemctl stop ffrtmp-ffmpeg
else
    bad "systemd-run failed"
fi

# a simple (not notify) service with Delegate=yes gets cpu memory pids
cat >/etc/systemd/system/ffrtmp-deleg.service <<'UNIT'
[Service]
Type=simple
ExecStart=/bin/sleep infinity
Delegate=yes
UNIT
systemctl daemon-reload && systemctl start ffrtmp-deleg
cg=/sys/fs/cgroup/system.slice/ffrtmp-deleg.service
ctrl=$(cat "$cg/cgroup.controllers")
echo "ffrtmp-deleg.service cgroup.controllers: $ctrl"
miss=""; for c in cpu memory pids; do [[ " $ctrl " == *" $c "* ]] || miss+=" $c"; done
[[ -z $miss ]] && ok "Delegate=yes service has controllers: $ctrl" || bad "Delegate=yes service lacks:$miss"

# ... and can use them: move itself into a leaf, enable controllers, cap a busy loop at 20 %
mkdir "$cg/main" "$cg/workloads"
for p in $(cat "$cg/cgroup.procs"); do echo "$p" >"$cg/main/cgroup.procs"; done
if echo "+cpu +memory +pids" >"$cg/cgroup.subtree_control"; then
    echo "20000 100000" >"$cg/workloads/cpu.max"
    bash -c "echo \$\$ >$cg/workloads/cgroup.procs; exec bash -c 'while :; do :; done'" &
    loop=$!
    sleep 1; u0=$(awk '/^usage_usec/ {print $2}' "$cg/workloads/cpu.stat"); t0=$(cut -d' ' -f1 /proc/uptime)
    sleep 3; u1=$(awk '/^usage_usec/ {print $2}' "$cg/workloads/cpu.stat"); t1=$(cut -d' ' -f1 /proc/uptime)
    kill "$loop"; wait "$loop" 2>/dev/null
    share=$(awk -v u=$((u1 - u0)) -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", u / ((b - a) * 1e6)}')
    awk -v s="$share" 'BEGIN {exit !(s > 0.12 && s < 0.28)}' \
        && ok "cpu.max in the delegated subtree held a busy loop to $share of a CPU" \
        || bad "cpu.max in the delegated subtree: busy loop got $share of a CPU (want ~0.20)"
else
    bad "cannot enable controllers in the delegated subtree"
fi
systemctl stop ffrtmp-deleg

[[ $fail -eq 0 ]] && echo "CHECK systemd tier: all passed" || echo "CHECK systemd tier: FAILED"
exit $fail
