//! Per-pool series in `/metrics`: each pool's usage (read from its cgroup at the scrape,
//! its jobs' included), its limits in force, its number of governed jobs, and its CFS
//! throttling, for the `FfrtmpPoolThrottled` alert.

use super::exposition::{escape, series};
use super::state::PoolRecord;
use crate::placer::limits::mib_to_bytes;
use crate::placer::Usage;

/// A pool as `/metrics` shows it: name, record, number of governed jobs.
pub type PoolView = (String, PoolRecord, u64);

/// Name, help, type and samples of one family.
type Family<'a, V> = (&'a str, &'a str, &'a str, &'a [(String, V)]);

#[derive(Default)]
struct PoolSeries {
    jobs: Vec<(String, u64)>,
    cpu: Vec<(String, f64)>,
    mem: Vec<(String, u64)>,
    pids: Vec<(String, u64)>,
    periods: Vec<(String, u64)>,
    throttled: Vec<(String, u64)>,
    throttled_secs: Vec<(String, f64)>,
    cpu_limit: Vec<(String, f64)>,
    mem_limit: Vec<(String, u64)>,
    pids_limit: Vec<(String, u64)>,
}

/// The `ffrtmp_pool_*` families (none without pools).
pub fn render(out: &mut String, pools: &[PoolView], usage: &dyn Fn(&str) -> Usage) {
    if pools.is_empty() {
        return;
    }
    let s = collect(pools, usage);
    let counts: [Family<u64>; 7] = [
        (
            "ffrtmp_pool_jobs",
            "Governed jobs in the pool.",
            "gauge",
            &s.jobs,
        ),
        (
            "ffrtmp_pool_memory_bytes",
            "Memory charged to the pool's cgroup now.",
            "gauge",
            &s.mem,
        ),
        (
            "ffrtmp_pool_pids",
            "Processes and threads in the pool's cgroup now.",
            "gauge",
            &s.pids,
        ),
        (
            "ffrtmp_pool_cpu_periods_total",
            "CFS bandwidth periods of the pool's cgroup.",
            "counter",
            &s.periods,
        ),
        (
            "ffrtmp_pool_cpu_throttled_periods_total",
            "CFS periods in which the pool used up its quota and was throttled.",
            "counter",
            &s.throttled,
        ),
        (
            "ffrtmp_pool_memory_limit_bytes",
            "The pool's memory limit (absent: no limit).",
            "gauge",
            &s.mem_limit,
        ),
        (
            "ffrtmp_pool_pids_limit",
            "The pool's pids limit (absent: no limit).",
            "gauge",
            &s.pids_limit,
        ),
    ];
    for (name, help, kind, v) in counts {
        series(out, name, help, kind, v);
    }
    let seconds: [Family<f64>; 3] = [
        (
            "ffrtmp_pool_cpu_seconds_total",
            "CPU time used by the pool's cgroup, its jobs' included.",
            "counter",
            &s.cpu,
        ),
        (
            "ffrtmp_pool_cpu_throttled_seconds_total",
            "Time the pool's cgroup was throttled, summed over CPUs.",
            "counter",
            &s.throttled_secs,
        ),
        (
            "ffrtmp_pool_cpu_limit_cores",
            "The pool's CPU quota in cores (absent: no quota).",
            "gauge",
            &s.cpu_limit,
        ),
    ];
    for (name, help, kind, v) in seconds {
        series(out, name, help, kind, v);
    }
}

/// Each family's samples, pool by pool.
fn collect(pools: &[PoolView], usage: &dyn Fn(&str) -> Usage) -> PoolSeries {
    let mut s = PoolSeries::default();
    for (name, p, jobs) in pools {
        let l = format!("{{pool=\"{}\"}}", escape(name));
        let u = usage(&p.cgroup);
        s.jobs.push((l.clone(), *jobs));
        if let Some(c) = u.cpu_usec {
            s.cpu.push((l.clone(), c as f64 / 1e6));
        }
        if let Some(m) = u.memory_bytes {
            s.mem.push((l.clone(), m));
        }
        if let Some(n) = u.pids {
            s.pids.push((l.clone(), n));
        }
        if let Some(th) = u.throttling {
            s.periods.push((l.clone(), th.periods));
            s.throttled.push((l.clone(), th.throttled_periods));
            s.throttled_secs
                .push((l.clone(), th.throttled_usec as f64 / 1e6));
        }
        if let Some(q) = p.limits.cpu_quota {
            s.cpu_limit.push((l.clone(), f64::from(q) / 100.0));
        }
        if let Some(m) = p.limits.memory_limit {
            s.mem_limit.push((l.clone(), mib_to_bytes(m)));
        }
        if let Some(n) = p.limits.pids_max {
            s.pids_limit.push((l, n));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::placer::backend::Throttling;
    use crate::record::state::PoolRecord;

    #[test]
    fn a_pool_shows_usage_limits_jobs_and_throttling() {
        let pools = vec![(
            "live".into(),
            PoolRecord {
                cgroup: "/ffrtmp/live".into(),
                limits: Limits {
                    cpu_quota: Some(150),
                    memory_limit: Some(64),
                    ..Limits::default()
                },
            },
            3,
        )];
        let usage = |cg: &str| {
            assert_eq!(cg, "/ffrtmp/live", "read from the pool's own cgroup");
            Usage {
                cpu_usec: Some(2_500_000),
                memory_bytes: Some(1024),
                pids: Some(7),
                throttling: Some(Throttling {
                    periods: 100,
                    throttled_periods: 40,
                    throttled_usec: 1_500_000,
                }),
                ..Usage::default()
            }
        };
        let mut out = String::new();
        render(&mut out, &pools, &usage);
        for line in [
            "ffrtmp_pool_jobs{pool=\"live\"} 3",
            "ffrtmp_pool_cpu_seconds_total{pool=\"live\"} 2.5",
            "ffrtmp_pool_memory_bytes{pool=\"live\"} 1024",
            "ffrtmp_pool_pids{pool=\"live\"} 7",
            "ffrtmp_pool_cpu_periods_total{pool=\"live\"} 100",
            "ffrtmp_pool_cpu_throttled_periods_total{pool=\"live\"} 40",
            "ffrtmp_pool_cpu_throttled_seconds_total{pool=\"live\"} 1.5",
            "ffrtmp_pool_cpu_limit_cores{pool=\"live\"} 1.5",
            "ffrtmp_pool_memory_limit_bytes{pool=\"live\"} 67108864",
            "# TYPE ffrtmp_pool_pids_limit gauge",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        assert!(
            !out.contains("ffrtmp_pool_pids_limit{"),
            "no pids limit set"
        );
        let mut none = String::new();
        render(&mut none, &[], &usage);
        assert!(none.is_empty(), "no pools, no families");
    }

    #[test]
    fn cpu_stat_of_both_versions() {
        let v2 = "usage_usec 10\nnr_periods 5\nnr_throttled 2\nthrottled_usec 300\n";
        let v1 = "nr_periods 5\nnr_throttled 2\nthrottled_time 300000\nnr_bursts 0\n";
        for t in [v2, v1] {
            assert_eq!(
                Throttling::from_cpu_stat(t),
                Some(Throttling {
                    periods: 5,
                    throttled_periods: 2,
                    throttled_usec: 300
                })
            );
        }
    }
}
