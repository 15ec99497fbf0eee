//! Telemetry the daemon records and `/metrics` exposes in the Prometheus text format
//! (version 0.0.4). The daemon updates a `Telemetry` behind a mutex; a scrape renders it,
//! reading each job's CPU, memory and OOM numbers from the job's own cgroup files.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::health::HealthStatus;
use crate::placer::Usage;

/// Upper bounds of the exec → placed latency histogram, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the scan duration histogram, seconds.
pub const SCAN_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A cumulative histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// One governed job, for the per-job series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job_id: String,
    pub command: String,
    pub pid: u32,
    pub cgroup: String,
}

/// Everything `/metrics` and `/healthz` show.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub source: String,
    pub exec_events: BTreeMap<&'static str, u64>,
    pub events_lost: u64,
    pub discovered: u64,
    pub placements: BTreeMap<&'static str, u64>,
    pub limit_failures: u64,
    pub drift_corrections: u64,
    pub exec_to_placed: Histogram,
    pub scan_duration: Histogram,
    pub health: HealthStatus,
    pub scan_failures: u32,
    pub attach_failures: u32,
    pub limits_missing: u32,
    pub jobs: Vec<JobInfo>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            source: String::new(),
            exec_events: BTreeMap::new(),
            events_lost: 0,
            discovered: 0,
            placements: BTreeMap::new(),
            limit_failures: 0,
            drift_corrections: 0,
            exec_to_placed: Histogram::new(LATENCY_BUCKETS),
            scan_duration: Histogram::new(SCAN_BUCKETS),
            health: HealthStatus::Healthy,
            scan_failures: 0,
            attach_failures: 0,
            limits_missing: 0,
            jobs: Vec::new(),
        }
    }
}

/// Escape a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn counter(out: &mut String, name: &str, help: &str, series: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn gauge(out: &mut String, name: &str, help: &str, series: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, v) in series {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// Render the exposition. `usage` reads a job cgroup's live numbers.
pub fn render(t: &Telemetry, usage: &dyn Fn(&str) -> Usage) -> String {
    let mut out = String::with_capacity(4096);
    let labelled = |m: &BTreeMap<&'static str, u64>, key: &str| -> Vec<(String, u64)> {
        m.iter()
            .map(|(k, v)| (format!("{{{key}=\"{}\"}}", escape(k)), *v))
            .collect()
    };
    counter(
        &mut out,
        "ffrtmp_exec_events_total",
        "Exec events received, by source.",
        &labelled(&t.exec_events, "source"),
    );
    counter(&mut out, "ffrtmp_events_lost_total", "Events a source lost (ring buffer full, read failures); each triggers a reconciliation scan.", &[(String::new(), t.events_lost)]);
    counter(
        &mut out,
        "ffrtmp_processes_discovered_total",
        "Target processes found and decided to be governed.",
        &[(String::new(), t.discovered)],
    );
    counter(&mut out, "ffrtmp_placements_total", "Placements by result (placed, partial = some limit not applied, failed, vanished = exited first, retried).", &labelled(&t.placements, "result"));
    counter(
        &mut out,
        "ffrtmp_limit_failures_total",
        "Limits that could not be applied.",
        &[(String::new(), t.limit_failures)],
    );
    counter(
        &mut out,
        "ffrtmp_drift_corrections_total",
        "Governed processes found moved out of their cgroup by another writer and put back.",
        &[(String::new(), t.drift_corrections)],
    );
    t.exec_to_placed.render(
        &mut out,
        "ffrtmp_exec_to_placed_seconds",
        "From the kernel's exec timestamp to the verified move into the job cgroup.",
    );
    t.scan_duration.render(
        &mut out,
        "ffrtmp_scan_duration_seconds",
        "Duration of one /proc scan pass.",
    );
    gauge(
        &mut out,
        "ffrtmp_governed_processes",
        "Processes governed now.",
        &[(String::new(), t.jobs.len() as f64)],
    );
    let health: Vec<(String, f64)> = [
        HealthStatus::Healthy,
        HealthStatus::Degraded,
        HealthStatus::Unhealthy,
    ]
    .iter()
    .map(|s| {
        (
            format!("{{status=\"{s}\"}}"),
            if *s == t.health { 1.0 } else { 0.0 },
        )
    })
    .collect();
    gauge(
        &mut out,
        "ffrtmp_health",
        "1 for the current health status.",
        &health,
    );

    let mut cpu = Vec::new();
    let mut mem = Vec::new();
    let mut oom = Vec::new();
    for j in &t.jobs {
        let u = usage(&j.cgroup);
        let labels = format!(
            "{{job=\"{}\",command=\"{}\",pid=\"{}\"}}",
            escape(&j.job_id),
            escape(&j.command),
            j.pid
        );
        if let Some(us) = u.cpu_usec {
            cpu.push((labels.clone(), us as f64 / 1e6));
        }
        if let Some(b) = u.memory_bytes {
            mem.push((labels.clone(), b as f64));
        }
        if let Some(n) = u.oom_kills {
            oom.push((labels, n));
        }
    }
    let _ = writeln!(out, "# HELP ffrtmp_job_cpu_seconds_total CPU time used by the job's cgroup.\n# TYPE ffrtmp_job_cpu_seconds_total counter");
    for (l, v) in &cpu {
        let _ = writeln!(out, "ffrtmp_job_cpu_seconds_total{l} {v}");
    }
    gauge(
        &mut out,
        "ffrtmp_job_memory_bytes",
        "Memory charged to the job's cgroup now.",
        &mem,
    );
    counter(
        &mut out,
        "ffrtmp_job_oom_kills_total",
        "OOM kills inside the job's cgroup.",
        &oom,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&[0.001, 0.01]);
        for v in [0.0005, 0.005, 0.5] {
            h.observe(v);
        }
        let mut s = String::new();
        h.render(&mut s, "x", "h");
        assert!(s.contains("x_bucket{le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.01\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"));
    }

    #[test]
    fn exposition_has_every_family_and_valid_lines() {
        let mut t = Telemetry::default();
        t.exec_events.insert("ebpf", 7);
        t.placements.insert("placed", 3);
        t.exec_to_placed.observe(0.0002);
        t.jobs.push(JobInfo {
            job_id: "auto-ffmpeg-42".into(),
            command: "ff\"mpeg".into(),
            pid: 42,
            cgroup: "/ffrtmp/auto-ffmpeg-42".into(),
        });
        let text = render(&t, &|cg| {
            assert_eq!(cg, "/ffrtmp/auto-ffmpeg-42");
            Usage {
                cpu_usec: Some(1_500_000),
                memory_bytes: Some(4096),
                oom_kills: Some(1),
                pids: Some(1),
            }
        });
        for family in [
            "ffrtmp_exec_events_total{source=\"ebpf\"} 7",
            "ffrtmp_placements_total{result=\"placed\"} 3",
            "ffrtmp_exec_to_placed_seconds_bucket{le=\"0.00025\"} 1",
            "ffrtmp_governed_processes 1",
            "ffrtmp_health{status=\"healthy\"} 1",
            "ffrtmp_health{status=\"degraded\"} 0",
            "ffrtmp_job_cpu_seconds_total{job=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1.5",
            "ffrtmp_job_memory_bytes{job=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 4096",
            "ffrtmp_job_oom_kills_total{job=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1",
            "ffrtmp_events_lost_total 0",
            "ffrtmp_scan_duration_seconds_count 0",
        ] {
            assert!(text.contains(family), "missing {family}:\n{text}");
        }
        // Every non-comment line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "bad line {line:?}"
            );
            assert!(line.starts_with("ffrtmp_"), "{line}");
        }
    }
}
