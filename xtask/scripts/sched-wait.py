#!/usr/bin/env python3
"""Who held the harness's CPU in `bench-exec compare`, from a scheduler trace.

    perf record -e sched:sched_switch -e sched:sched_wakeup -e sched:sched_process_exec -a \
        -o /tmp/sched.data -- cargo xtask bench-exec compare --rounds 3
    perf script -i /tmp/sched.data -F comm,tid,cpu,time,event,trace > /tmp/sched.txt
    python3 xtask/scripts/sched-wait.py /tmp/sched.txt

For each target exec (ffrtmp's targets end in `f`, cgrulesengd's in `g`) it follows the
harness thread (the `xtask` thread with the most events) from the exec to the sleep of the
5 ms gap, adds up the time the harness was woken but not running, and says which tasks ran
on its CPU meanwhile, grouped: the governor's threads, the targets, the rest of the machine,
the idle task.
"""
import bisect
import collections
import re
import sys

LINE = re.compile(r'^\s*(\S.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$')


def main(path):
    ev = []
    for line in open(path):
        m = LINE.match(line)
        if m:
            comm, tid, cpu, t, e, rest = m.groups()
            ev.append((float(t), int(cpu), comm, int(tid), e, rest))
    ev.sort()
    execs = []
    for t, cpu, comm, tid, e, rest in ev:
        if e == 'sched_process_exec':
            fn = re.search(r'filename=(\S+)', rest).group(1)
            if re.search(r'/fb\d+c[fg]$', fn):
                execs.append((t, fn[-1]))
    harness = collections.Counter(tid for _, _, comm, tid, _, _ in ev if comm == 'xtask').most_common(1)[0][0]
    hs, runs = [], collections.defaultdict(list)
    for t, cpu, comm, tid, e, rest in ev:
        if e == 'sched_switch':
            m = re.search(r'prev_pid=(\d+).*==> next_comm=(.*) next_pid=(\d+)', rest)
            prev, ncomm, nxt = int(m.group(1)), m.group(2), int(m.group(3))
            runs[cpu].append((t, ncomm, nxt))
            if prev == harness:
                hs.append((t, 'out', cpu))
            if nxt == harness:
                hs.append((t, 'in', cpu))
        elif e == 'sched_wakeup':
            m = re.search(r'pid=(\d+).*target_cpu=(\d+)', rest)
            if int(m.group(1)) == harness:
                hs.append((t, 'wake', int(m.group(2))))
    times = {c: [r[0] for r in rs] for c, rs in runs.items()}
    hts = [h[0] for h in hs]

    def group(comm, kind):
        if comm.startswith('swapper'):
            return 'idle'
        if re.match(r'fb\d+c[fg]$', comm):
            return 'targets'
        if kind == 'f' and comm.startswith('ffrtmp'):
            return 'governor'
        if kind == 'g' and comm.startswith('cgrulesengd'):
            return 'governor'
        return 'rest of the machine (' + comm + ')'

    def who(cpu, a, b, kind):
        out = collections.Counter()
        rs, ts = runs[cpu], times[cpu]
        i = bisect.bisect_right(ts, a) - 1
        cur, t0 = (rs[i][1] if i >= 0 else '?'), a
        for j in range(i + 1, len(rs)):
            if rs[j][0] >= b:
                break
            out[group(cur, kind)] += rs[j][0] - t0
            t0, cur = rs[j][0], rs[j][1]
        out[group(cur, kind)] += b - t0
        return out

    for kind, name in (('f', 'ffrtmp'), ('g', 'cgrulesengd')):
        samples = []
        for T, k in execs:
            if k != kind:
                continue
            i = bisect.bisect_left(hts, T - 0.002)
            wake, waited, held, end = None, 0.0, collections.Counter(), None
            for n in range(i, len(hs)):
                t, what, cpu = hs[n]
                if what == 'wake':
                    wake = (t, cpu)
                elif what == 'in':
                    if wake and t >= T:
                        waited += t - max(wake[0], T)
                        held += who(cpu, max(wake[0], T), t, kind)
                    wake = None
                elif what == 'out' and t >= T:
                    nxt = next((h for h in hs[n + 1:] if h[1] == 'wake'), None)
                    if nxt and nxt[0] - t > 0.002:
                        end = t
                        break
            if end:
                samples.append((end - T, waited, held))
        samples.sort(key=lambda s: -s[0])
        n = len(samples)
        if not n:
            continue
        total = collections.Counter()
        for s in samples:
            total += s[2]
        slow = samples[: max(1, n // 100)]
        slow_total = collections.Counter()
        for s in slow:
            slow_total += s[2]
        print(f'== {name}: {n} execs; the harness waited for its CPU {sum(s[1] for s in samples) / n * 1e3:.3f} ms per exec on average')
        print('  held by (ms, all execs): ' + ', '.join(f'{k} {v * 1e3:.1f}' for k, v in total.most_common(6)))
        print(f'  the slowest 1 % ({len(slow)}): waited {sum(s[1] for s in slow) / len(slow) * 1e3:.3f} ms each, held by: '
              + ', '.join(f'{k} {v * 1e3:.2f}' for k, v in slow_total.most_common(5)))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else '/tmp/sched.txt')
