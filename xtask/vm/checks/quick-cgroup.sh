#!/bin/sh
# Quick-tier self-check (run by busybox sh inside the VM): cgroup v2 controllers enforce.
#   ./quick-run.sh /bin/busybox sh /checks/quick-cgroup.sh   (with QUICK_EXTRA_FILES=<this>:/checks/quick-cgroup.sh)
set -eu
fail=0
ok() { echo "CHECK ok:   $*"; }
bad() { echo "CHECK FAIL: $*"; fail=1; }
R=/sys/fs/cgroup
echo "kernel $(uname -r); $(grep cgroup2 /proc/mounts)"
echo "root controllers: $(cat $R/cgroup.controllers); subtree_control: $(cat $R/cgroup.subtree_control)"
for c in cpu memory pids; do
    grep -qw $c $R/cgroup.subtree_control && ok "$c enabled at root" || bad "$c not enabled at root"
done
for d in /sys/kernel/tracing/events /sys/fs/bpf /sys/kernel/debug; do
    [ -d $d ] && ok "$d present" || bad "$d missing"
done

# cpu.max 20000/100000 holds a busy loop to ~20 % of one CPU
cg=$R/ffrtmp-check-cpu; mkdir $cg
echo "20000 100000" >$cg/cpu.max
sh -c "echo \$\$ >$cg/cgroup.procs; exec sh -c 'while :; do :; done'" &
loop=$!
sleep 1; u0=$(awk '/^usage_usec/ {print $2}' $cg/cpu.stat); t0=$(cut -d' ' -f1 /proc/uptime)
sleep 3; u1=$(awk '/^usage_usec/ {print $2}' $cg/cpu.stat); t1=$(cut -d' ' -f1 /proc/uptime)
kill $loop; wait $loop 2>/dev/null || true
echo "cpu.stat: $(tr '\n' ' ' <$cg/cpu.stat)"
share=$(awk -v u=$((u1 - u0)) -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", u / ((b - a) * 1e6)}')
thr=$(awk '/^nr_throttled/ {print $2}' $cg/cpu.stat)
if awk -v s="$share" 'BEGIN {exit !(s > 0.12 && s < 0.28)}' && [ "$thr" -gt 0 ]; then
    ok "cpu.max held the busy loop to $share of a CPU (nr_throttled $thr)"
else
    bad "cpu.max: busy loop got $share of a CPU, nr_throttled $thr (want ~0.20, >0)"
fi
rmdir $cg

# memory.max 64M OOM-kills a 100 MB allocation (dd's buffer)
cg=$R/ffrtmp-check-mem; mkdir $cg
echo 64M >$cg/memory.max; echo 0 >$cg/memory.swap.max 2>/dev/null || true
rc=0; sh -c "echo \$\$ >$cg/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null" || rc=$?
oom=$(awk '/^oom_kill / {print $2}' $cg/memory.events)
[ $rc -eq 137 ] && [ "$oom" -ge 1 ] && ok "memory.max OOM-killed the allocation (exit $rc, oom_kill $oom)" \
    || bad "memory.max: exit $rc, oom_kill $oom (want 137, >=1)"
rmdir $cg

# pids.max 5 makes further forks fail
cg=$R/ffrtmp-check-pids; mkdir $cg
echo 5 >$cg/pids.max
sh -c "echo \$\$ >$cg/cgroup.procs; for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait" >/dev/null 2>&1 || true
ev=$(awk '/^max / {print $2}' $cg/pids.events)
[ "$ev" -ge 1 ] && ok "pids.max refused $ev fork(s)" || bad "pids.max: no fork refused (pids.events max $ev)"
sleep 2; rmdir $cg

[ $fail -eq 0 ] && echo "CHECK quick tier: all passed" || echo "CHECK quick tier: FAILED"
exit $fail
