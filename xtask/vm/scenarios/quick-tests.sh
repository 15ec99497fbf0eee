#!/bin/sh
# Quick tier (busybox sh, PID 1's child in the initramfs VM): run each root integration test
# binary given as an argument, one after the other, with FFRTMP_REQUIRE_ROOT_TESTS=1 (a
# skipped root test fails). Prints one line per binary:
#   QUICK PASS <name> (<seconds>s)    or    QUICK FAIL <name> exit <code> (<seconds>s)
# and exits 1 if any failed. QUICK_TEST_THREADS (default 2) is passed as --test-threads.
#   quick-run.sh quick-tests.sh /abs/path/daemon_cgroups-<hash> ...   (see xtask/src/vm.rs)
export FFRTMP_REQUIRE_ROOT_TESTS=1 RUST_BACKTRACE=0
fail=0
echo "quick tier: kernel $(uname -r); cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
for bin in "$@"; do
    name=$(basename "$bin" | sed 's/-[0-9a-f]\{16\}$//')
    echo
    echo "=== $name"
    t0=$(cut -d' ' -f1 /proc/uptime)
    "$bin" --test-threads="${QUICK_TEST_THREADS:-2}"
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc -eq 0 ]; then
        echo "QUICK PASS $name (${secs}s)" >>/tmp/quick-results
    else
        echo "QUICK FAIL $name exit $rc (${secs}s)" >>/tmp/quick-results
        fail=1
    fi
    # What a failed test left behind would disturb the next binary: report it.
    left=$(find /sys/fs/cgroup -mindepth 1 -type d -name 'ffrtmp-test-*' | head -n 3)
    [ -z "$left" ] || echo "note: cgroups left behind by $name: $left"
done
echo
echo "=== quick tier summary"
cat /tmp/quick-results
exit $fail
