#!/usr/bin/env python3
"""What one move into a cgroup costs, by how long since the previous one (root, cgroup v1
cpu hierarchy, as on the benchmark host):

    sudo python3 xtask/scripts/move-cost.py

It makes two cgroups beneath its own cgroup, starts a `sleep` of its own, and moves it
between them 12 times at each gap (2 ms to 500 ms), timing each `cgroup.procs` write; then
puts the sleep back, kills it and removes the cgroups. On kernels from 6.0 a write that
does not follow another closely waits for the RCU grace period of
`cgroup_threadgroup_rwsem` unless a cgroup hierarchy is mounted with `favordynmods`
(docs/benchmarks.md, "Exec gate").
"""
import os, time, subprocess, statistics
own = [l.split(':',2) for l in open('/proc/self/cgroup').read().splitlines()]
cpu = [p for (_, c, p) in own if 'cpu' in c.split(',')][0]
base = '/sys/fs/cgroup/cpu' + cpu.rstrip('/') + '/move-cost-%d' % os.getpid()
a, b = base + '/a', base + '/b'
for d in (base, a, b):
    os.mkdir(d)
child = subprocess.Popen(['sleep', '600'])
def move(dst):
    t = time.perf_counter()
    with open(dst + '/cgroup.procs', 'w') as f:
        f.write(str(child.pid))
    return (time.perf_counter() - t) * 1000
try:
    for gap in (0.002, 0.005, 0.02, 0.05, 0.2, 0.5):
        xs = []
        for i in range(12):
            time.sleep(gap)
            xs.append(move(a if i % 2 == 0 else b))
        print(f"gap {gap*1000:.0f} ms: p50 {statistics.median(xs):.3f} ms, max {max(xs):.3f} ms, all {' '.join('%.2f' % x for x in xs)}")
finally:
    with open('/sys/fs/cgroup/cpu' + cpu.rstrip('/') + '/cgroup.procs', 'w') as f:
        f.write(str(child.pid))
    child.kill(); child.wait()
    for d in (a, b, base):
        os.rmdir(d)
