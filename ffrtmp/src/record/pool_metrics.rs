//! Per-pool series in `/metrics`: each pool's usage (read from its cgroup at the scrape,
//! its jobs' included), its limits in force, its number of governed jobs, and its CFS
//! throttling, for the `FfrtmpPoolThrottled` alert.

use super::exposition::{escape, series};
use super::state::PoolRecord;
use crate::placer::limits::mib_to_bytes;
use crate::placer::Usage;

/// A pool as `/metrics` shows it: name, record, number of governed jobs.
pub type PoolView = (String, PoolRecord, u64);

/// Name, help and type of each family, in the order `values` gives their samples.
const FAMILIES: [(&str, &str, &str); 10] = [
    ("ffrtmp_pool_jobs", "Governed jobs in the pool.", "gauge"),
    (
        "ffrtmp_pool_cpu_seconds_total",
        "CPU time used by the pool's cgroup, its jobs' included.",
        "counter",
    ),
    (
        "ffrtmp_pool_memory_bytes",
        "Memory charged to the pool's cgroup now.",
        "gauge",
    ),
    (
        "ffrtmp_pool_pids",
        "Processes and threads in the pool's cgroup now.",
        "gauge",
    ),
    (
        "ffrtmp_pool_cpu_periods_total",
        "CFS bandwidth periods of the pool's cgroup.",
        "counter",
    ),
    (
        "ffrtmp_pool_cpu_throttled_periods_total",
        "CFS periods in which the pool used up its quota and was throttled.",
        "counter",
    ),
    (
        "ffrtmp_pool_cpu_throttled_seconds_total",
        "Time the pool's cgroup was throttled, summed over CPUs.",
        "counter",
    ),
    (
        "ffrtmp_pool_cpu_limit_cores",
        "The pool's CPU quota in cores (absent: no quota).",
        "gauge",
    ),
    (
        "ffrtmp_pool_memory_limit_bytes",
        "The pool's memory limit (absent: no limit).",
        "gauge",
    ),
    (
        "ffrtmp_pool_pids_limit",
        "The pool's pids limit (absent: no limit).",
        "gauge",
    ),
];

/// The `ffrtmp_pool_*` families (none without pools).
pub fn render(out: &mut String, pools: &[PoolView], usage: &dyn Fn(&str) -> Usage) {
    if pools.is_empty() {
        return;
    }
    let mut samples: [Vec<(String, f64)>; 10] = Default::default();
    for (name, p, jobs) in pools {
        let labels = format!("{{pool=\"{}\"}}", escape(name));
        for (family, v) in samples.iter_mut().zip(values(p, *jobs, &usage(&p.cgroup))) {
            if let Some(v) = v {
                family.push((labels.clone(), v));
            }
        }
    }
    for ((name, help, kind), s) in FAMILIES.iter().zip(&samples) {
        series(out, name, help, kind, s);
    }
}

/// One pool's sample of each family (`None`: not known, or no such limit), in the order
/// of `FAMILIES`. Counts and bytes stay exact as f64 below 2^53.
fn values(p: &PoolRecord, jobs: u64, u: &Usage) -> [Option<f64>; 10] {
    let th = u.throttling.as_ref();
    let n = |v: u64| v as f64;
    [
        Some(n(jobs)),
        u.cpu_usec.map(|c| n(c) / 1e6),
        u.memory_bytes.map(n),
        u.pids.map(n),
        th.map(|t| n(t.periods)),
        th.map(|t| n(t.throttled_periods)),
        th.map(|t| n(t.throttled_usec) / 1e6),
        p.limits.cpu_quota.map(|q| f64::from(q) / 100.0),
        p.limits.memory_limit.map(|m| n(mib_to_bytes(m))),
        p.limits.pids_max.map(n),
    ]
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
