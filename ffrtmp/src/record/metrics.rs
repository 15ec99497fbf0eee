//! Telemetry the daemon records and `/metrics` exposes in the Prometheus text format
//! (version 0.0.4). The record loop updates a `Telemetry` behind a mutex; the eBPF reader
//! keeps the kernel program's counters in `KernelCounters` (atomics); a scrape renders
//! both, reading each job's CPU, memory and OOM numbers from the job's own cgroup files.
//!
//! Per-job series come and go with jobs: `job_metrics` (docs/fleet.md) chooses one series
//! per job and family (`per_job`), sums per command (`per_command`), or none (`off`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use super::health::HealthStatus;
use crate::config::{JobMetrics, Limits};
use crate::placer::limits::{mib_to_bytes, CPU_PERIOD_US};
use crate::placer::Usage;
use crate::sources::ebpf::counters::KernelTotals;

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

/// Counters the sources and the engine keep as events happen, without the record loop:
/// exec notices by source (counted by the engine as it takes them) and the kernel
/// program's per-CPU counters, summed, as the eBPF reader last read them.
#[derive(Debug, Default)]
pub struct SourceCounters {
    execs: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// Set once a kernel source publishes (no kernel series without one).
    kernel: std::sync::Mutex<Option<KernelTotals>>,
}

impl SourceCounters {
    pub fn count_exec(&self, source: &'static str) {
        *self
            .execs
            .lock()
            .expect("counters lock")
            .entry(source)
            .or_default() += 1;
    }

    pub fn execs(&self) -> BTreeMap<&'static str, u64> {
        self.execs.lock().expect("counters lock").clone()
    }

    pub fn store_kernel(&self, v: KernelTotals) {
        *self.kernel.lock().expect("counters lock") = Some(v);
    }

    pub fn kernel(&self) -> Option<KernelTotals> {
        *self.kernel.lock().expect("counters lock")
    }
}

/// One governed job, for the per-job series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job_id: Arc<str>,
    pub command: Arc<str>,
    pub pid: u32,
    pub cgroup: Arc<str>,
    pub limits: Option<Limits>,
}

/// Everything `/metrics` and `/healthz` show, except `SourceCounters`.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub source: String,
    /// Candidates the scans found (the sources' execs are in `SourceCounters`).
    pub exec_events: BTreeMap<&'static str, u64>,
    pub events_lost: u64,
    pub discovered: u64,
    pub placements: BTreeMap<&'static str, u64>,
    pub skipped: BTreeMap<&'static str, u64>,
    pub limit_failures: u64,
    pub drift_corrections: u64,
    pub strict_timeouts: u64,
    pub undecodable: u64,
    pub exec_to_placed: Histogram,
    pub scan_duration: Histogram,
    pub health: HealthStatus,
    pub scan_failures: u32,
    pub attach_failures: u32,
    pub limits_missing: u32,
    /// Governed jobs by PID.
    pub jobs: BTreeMap<u32, Box<JobInfo>>,
    /// Jobs whose process exited and whose cgroup's last numbers are not read yet: still
    /// shown (their numbers are live), no longer counted as governed.
    pub ending: BTreeMap<u32, Box<JobInfo>>,
    /// Jobs that ended, with their last numbers, shown for `ENDED_KEPT` so the scrape after
    /// an exit (an OOM kill's, say) still sees them.
    pub ended: Vec<EndedJob>,
    /// Per command, the summed last numbers of every job that ended: `per_command` counters
    /// carry them, so they never go down when a job ends.
    pub ended_totals: BTreeMap<Arc<str>, Usage>,
    pub job_metrics: JobMetrics,
}

/// How long an ended job's series stay in `per_job` mode.
pub const ENDED_KEPT: std::time::Duration = std::time::Duration::from_secs(120);

/// A job that ended, with its cgroup's last numbers.
#[derive(Debug, Clone)]
pub struct EndedJob {
    pub info: JobInfo,
    pub usage: Usage,
    pub at: std::time::Instant,
}

impl Telemetry {
    /// A job's process exited: keep showing it until its last numbers are read.
    pub fn job_exited(&mut self, pid: u32) {
        if let Some(j) = self.jobs.remove(&pid) {
            self.ending.insert(pid, j);
        }
    }

    /// Its cgroup's last numbers were read (`None`: the cgroup was gone).
    pub fn job_ended(&mut self, pid: u32, usage: Option<Usage>) {
        let Some(info) = self.ending.remove(&pid) else {
            return;
        };
        let now = std::time::Instant::now();
        self.ended.retain(|e| now.duration_since(e.at) < ENDED_KEPT);
        let usage = usage.unwrap_or_default();
        let t = self.ended_totals.entry(info.command.clone()).or_default();
        add(&mut t.cpu_usec, usage.cpu_usec);
        add(&mut t.oom_kills, usage.oom_kills);
        self.ended.push(EndedJob {
            info: *info,
            usage,
            at: now,
        });
    }
}

/// Results of `ffrtmp_placements_total` shown from the start (at 0), so that the first
/// of each is an increase a rule can see.
pub const PLACEMENT_RESULTS: [&str; 5] = ["placed", "partial", "failed", "vanished", "retried"];
/// Likewise for `ffrtmp_skipped_total`.
pub const SKIP_REASONS: [&str; 4] = ["container", "filtered", "too_old", "ffrtmp_run"];

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            source: String::new(),
            exec_events: BTreeMap::new(),
            events_lost: 0,
            discovered: 0,
            placements: PLACEMENT_RESULTS.iter().map(|r| (*r, 0)).collect(),
            skipped: SKIP_REASONS.iter().map(|r| (*r, 0)).collect(),
            limit_failures: 0,
            drift_corrections: 0,
            strict_timeouts: 0,
            undecodable: 0,
            exec_to_placed: Histogram::new(LATENCY_BUCKETS),
            scan_duration: Histogram::new(SCAN_BUCKETS),
            health: HealthStatus::Healthy,
            scan_failures: 0,
            attach_failures: 0,
            limits_missing: 0,
            jobs: BTreeMap::new(),
            ending: BTreeMap::new(),
            ended: Vec::new(),
            ended_totals: BTreeMap::new(),
            job_metrics: JobMetrics::PerJob,
        }
    }
}

/// Escape a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn series<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    s: &[(String, V)],
) {
    family(out, name, kind, help);
    for (labels, v) in s {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, s: &[(String, u64)]) {
    series(out, name, help, "counter", s);
}

fn one(v: u64) -> [(String, u64); 1] {
    [(String::new(), v)]
}

/// Version and kernel object of this binary, for `ffrtmp_build_info`.
#[derive(Debug, Clone, Default)]
pub struct BuildInfo {
    pub version: &'static str,
    pub ebpf_object: String,
}

/// Render the exposition. `usage` reads a job cgroup's live numbers.
pub fn render(
    t: &Telemetry,
    counters: &SourceCounters,
    build: &BuildInfo,
    usage: &dyn Fn(&str) -> Usage,
) -> String {
    let mut out = String::with_capacity(4096);
    let kernel = counters.kernel();
    let mut execs = t.exec_events.clone();
    for (k, v) in counters.execs() {
        *execs.entry(k).or_default() += v;
    }
    let labelled = |m: &BTreeMap<&'static str, u64>, key: &str| -> Vec<(String, u64)> {
        m.iter()
            .map(|(k, v)| (format!("{{{key}=\"{}\"}}", escape(k)), *v))
            .collect()
    };
    series(
        &mut out,
        "ffrtmp_build_info",
        "Version of ffrtmp and id of its embedded kernel program (always 1).",
        "gauge",
        &[(
            format!(
                "{{version=\"{}\",ebpf_object=\"{}\"}}",
                escape(build.version),
                escape(&build.ebpf_object)
            ),
            1,
        )],
    );
    counter(
        &mut out,
        "ffrtmp_exec_events_total",
        "Exec events received, by source.",
        &labelled(&execs, "source"),
    );
    counter(&mut out, "ffrtmp_events_lost_total", "Events a source lost (ring buffer full, read failures); each triggers a reconciliation scan.", &one(t.events_lost));
    counter(
        &mut out,
        "ffrtmp_processes_discovered_total",
        "Target processes found and decided to be governed.",
        &one(t.discovered),
    );
    counter(&mut out, "ffrtmp_placements_total", "Placements by result (placed, partial = some limit not applied, failed, vanished = exited first, retried).", &labelled(&t.placements, "result"));
    counter(&mut out, "ffrtmp_skipped_total", "Targets left alone, by reason (container, filtered, too_old, ffrtmp_run, self, governed, exited).", &labelled(&t.skipped, "reason"));
    counter(
        &mut out,
        "ffrtmp_limit_failures_total",
        "Limits that could not be applied.",
        &one(t.limit_failures),
    );
    counter(
        &mut out,
        "ffrtmp_drift_corrections_total",
        "Governed processes found moved out of their cgroup by another writer and put back.",
        &one(t.drift_corrections),
    );
    counter(
        &mut out,
        "ffrtmp_strict_timeouts_total",
        "Strict targets resumed unplaced because strict_timeout passed before their placement.",
        &one(t.strict_timeouts),
    );
    counter(&mut out, "ffrtmp_undecodable_events_total", "Kernel records that could not be decoded (a kernel object of another layout); their processes are found by reconciliation.", &one(t.undecodable));
    if let Some(k) = kernel {
        let KernelTotals {
            execs,
            forwarded: fwd,
            ring_full: full,
            read_failed: read,
            stop_failed: stops,
            skipped,
        } = k;
        counter(
            &mut out,
            "ffrtmp_kernel_execs_total",
            "Execs the kernel program saw (every exec on the node).",
            &one(execs),
        );
        counter(
            &mut out,
            "ffrtmp_kernel_forwarded_total",
            "Execs the kernel program forwarded to the daemon.",
            &one(fwd),
        );
        counter(
            &mut out,
            "ffrtmp_kernel_ring_full_total",
            "Events the kernel program could not forward because the ring buffer was full.",
            &one(full),
        );
        counter(
            &mut out,
            "ffrtmp_kernel_read_failures_total",
            "Execs the kernel program could not look at (their comm could not be read).",
            &one(read),
        );
        counter(
            &mut out,
            "ffrtmp_kernel_stop_failures_total",
            "Strict targets the kernel program could not stop (they ran before placement).",
            &one(stops),
        );
        if let Some(skipped) = skipped {
            counter(
                &mut out,
                "ffrtmp_kernel_skipped_total",
                "Execs the kernel did not run the exec hook for (recursion_misses: the program was running on that CPU for another task; seen with tp_btf on 7.x). Each triggers a reconciliation, which places a skipped target. Absent where the kernel does not count them (before 5.12).",
                &one(skipped),
            );
        }
    }
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
    series(
        &mut out,
        "ffrtmp_governed_processes",
        "Processes governed now.",
        "gauge",
        &one(t.jobs.len() as u64),
    );
    let health: Vec<(String, u64)> = [
        HealthStatus::Healthy,
        HealthStatus::Degraded,
        HealthStatus::Unhealthy,
    ]
    .iter()
    .map(|s| (format!("{{status=\"{s}\"}}"), u64::from(*s == t.health)))
    .collect();
    series(
        &mut out,
        "ffrtmp_health",
        "1 for the current health status.",
        "gauge",
        &health,
    );
    render_jobs(&mut out, t, usage);
    out
}

#[derive(Default)]
struct JobSeries {
    cpu: Vec<(String, f64)>,
    mem: Vec<(String, u64)>,
    mem_limit: Vec<(String, u64)>,
    cpu_limit: Vec<(String, f64)>,
    oom: Vec<(String, u64)>,
    count: Vec<(String, u64)>,
}

/// Sums of one command's jobs (`per_command`).
#[derive(Default)]
struct CommandSums {
    usage: Usage,
    /// Summed limits; `None` once a job without that limit is seen (a sum over some jobs
    /// only would make usage over limit look worse than it is).
    mem_limit: Option<u64>,
    cpu_limit: Option<f64>,
    unlimited_mem: bool,
    unlimited_cpu: bool,
    jobs: u64,
}

fn render_jobs(out: &mut String, t: &Telemetry, usage: &dyn Fn(&str) -> Usage) {
    if t.job_metrics == JobMetrics::Off {
        return;
    }
    let mut s = JobSeries::default();
    let live = t.jobs.values().chain(t.ending.values());
    match t.job_metrics {
        JobMetrics::PerJob => {
            let labels = |j: &JobInfo| {
                format!(
                    "{{job_id=\"{}\",command=\"{}\",pid=\"{}\"}}",
                    escape(&j.job_id),
                    escape(&j.command),
                    j.pid
                )
            };
            for j in live {
                push_job(&mut s, &labels(j), &usage(&j.cgroup), j.limits.as_ref());
            }
            for e in &t.ended {
                push_job(&mut s, &labels(&e.info), &e.usage, e.info.limits.as_ref());
            }
        }
        JobMetrics::PerCommand => {
            let mut by: BTreeMap<&str, CommandSums> = BTreeMap::new();
            for (cmd, u) in &t.ended_totals {
                let e = by.entry(cmd).or_default();
                add(&mut e.usage.cpu_usec, u.cpu_usec);
                add(&mut e.usage.oom_kills, u.oom_kills);
            }
            for j in t.jobs.values() {
                let e = by.entry(&j.command).or_default();
                e.jobs += 1;
                let l = j.limits.clone().unwrap_or_default();
                match l.memory_limit {
                    Some(m) if !e.unlimited_mem => *e.mem_limit.get_or_insert(0) += mib_to_bytes(m),
                    Some(_) => {}
                    None => {
                        e.unlimited_mem = true;
                        e.mem_limit = None;
                    }
                }
                match l.cpu_quota {
                    Some(q) if !e.unlimited_cpu => {
                        *e.cpu_limit.get_or_insert(0.0) += f64::from(q) / 100.0
                    }
                    Some(_) => {}
                    None => {
                        e.unlimited_cpu = true;
                        e.cpu_limit = None;
                    }
                }
            }
            for j in live {
                let u = usage(&j.cgroup);
                let e = by.entry(&j.command).or_default();
                add(&mut e.usage.cpu_usec, u.cpu_usec);
                add(&mut e.usage.oom_kills, u.oom_kills);
                if t.jobs.contains_key(&j.pid) {
                    add(&mut e.usage.memory_bytes, u.memory_bytes);
                }
            }
            for (cmd, e) in by {
                let l = format!("{{command=\"{}\"}}", escape(cmd));
                push_job(&mut s, &l, &e.usage, None);
                if e.jobs > 0 && e.usage.memory_bytes.is_none() {
                    s.mem.push((l.clone(), 0));
                }
                if let Some(m) = e.mem_limit {
                    s.mem_limit.push((l.clone(), m));
                }
                if let Some(c) = e.cpu_limit {
                    s.cpu_limit.push((l.clone(), c));
                }
                s.count.push((l, e.jobs));
            }
            series(
                out,
                "ffrtmp_jobs",
                "Governed jobs per command.",
                "gauge",
                &s.count,
            );
        }
        JobMetrics::Off => unreachable!(),
    }
    series(
        out,
        "ffrtmp_job_cpu_seconds_total",
        "CPU time used by the job's cgroup.",
        "counter",
        &s.cpu,
    );
    series(
        out,
        "ffrtmp_job_memory_bytes",
        "Memory charged to the job's cgroup now.",
        "gauge",
        &s.mem,
    );
    series(
        out,
        "ffrtmp_job_memory_limit_bytes",
        "The job's memory limit (absent: no limit).",
        "gauge",
        &s.mem_limit,
    );
    series(
        out,
        "ffrtmp_job_cpu_limit_cores",
        "The job's CPU quota in cores (absent: no quota).",
        "gauge",
        &s.cpu_limit,
    );
    series(
        out,
        "ffrtmp_job_oom_kills_total",
        "OOM kills inside the job's cgroup.",
        "counter",
        &s.oom,
    );
}

fn add(into: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *into.get_or_insert(0) += v;
    }
}

fn push_job(s: &mut JobSeries, labels: &str, u: &Usage, limits: Option<&Limits>) {
    if let Some(us) = u.cpu_usec {
        s.cpu.push((labels.to_string(), us as f64 / 1e6));
    }
    if let Some(b) = u.memory_bytes {
        s.mem.push((labels.to_string(), b));
    }
    if let Some(n) = u.oom_kills {
        s.oom.push((labels.to_string(), n));
    }
    if let Some(l) = limits {
        if let Some(m) = l.memory_limit {
            s.mem_limit.push((labels.to_string(), mib_to_bytes(m)));
        }
        if let Some(q) = l.cpu_quota {
            let cores = crate::placer::limits::quota_us(q) as f64 / CPU_PERIOD_US as f64;
            s.cpu_limit.push((labels.to_string(), cores));
        }
    }
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

    fn telemetry() -> Telemetry {
        let mut t = Telemetry::default();
        t.exec_events.insert("ebpf", 7);
        t.placements.insert("placed", 3);
        t.skipped.insert("container", 2);
        t.exec_to_placed.observe(0.0002);
        for (pid, cmd) in [(42, "ff\"mpeg"), (43, "ff\"mpeg"), (44, "x264")] {
            t.jobs.insert(
                pid,
                Box::new(JobInfo {
                    job_id: format!("auto-ffmpeg-{pid}").into(),
                    command: cmd.into(),
                    pid,
                    cgroup: format!("/ffrtmp/auto-ffmpeg-{pid}").into(),
                    limits: Some(Limits {
                        cpu_quota: Some(150),
                        memory_limit: Some(64),
                        ..Default::default()
                    }),
                }),
            );
        }
        t
    }

    fn usage(cg: &str) -> Usage {
        assert!(cg.starts_with("/ffrtmp/auto-ffmpeg-"), "{cg}");
        Usage {
            cpu_usec: Some(1_500_000),
            memory_bytes: Some(4096),
            oom_kills: Some(1),
            pids: Some(1),
        }
    }

    fn check_lines(text: &str) {
        // Every non-comment line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad line {line:?}");
            assert!(line.starts_with("ffrtmp_"), "{line}");
        }
    }

    #[test]
    fn exposition_has_every_family_and_valid_lines() {
        let build = BuildInfo {
            version: "0.1.0",
            ebpf_object: "abcd".into(),
        };
        let counters = SourceCounters::default();
        counters.store_kernel(KernelTotals {
            execs: 100,
            forwarded: 7,
            ring_full: 1,
            read_failed: 0,
            stop_failed: 2,
            skipped: Some(3),
        });
        counters.count_exec("ebpf");
        let text = render(&telemetry(), &counters, &build, &usage);
        for family in [
            "ffrtmp_build_info{version=\"0.1.0\",ebpf_object=\"abcd\"} 1",
            "ffrtmp_exec_events_total{source=\"ebpf\"} 8",
            "ffrtmp_placements_total{result=\"placed\"} 3",
            "ffrtmp_skipped_total{reason=\"container\"} 2",
            "ffrtmp_kernel_execs_total 100",
            "ffrtmp_kernel_forwarded_total 7",
            "ffrtmp_kernel_ring_full_total 1",
            "ffrtmp_kernel_stop_failures_total 2",
            "ffrtmp_kernel_skipped_total 3",
            "ffrtmp_strict_timeouts_total 0",
            "ffrtmp_exec_to_placed_seconds_bucket{le=\"0.00025\"} 1",
            "ffrtmp_governed_processes 3",
            "ffrtmp_health{status=\"healthy\"} 1",
            "ffrtmp_health{status=\"degraded\"} 0",
            "ffrtmp_job_cpu_seconds_total{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1.5",
            "ffrtmp_job_memory_bytes{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 4096",
            "ffrtmp_job_memory_limit_bytes{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 67108864",
            "ffrtmp_job_cpu_limit_cores{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1.5",
            "ffrtmp_job_oom_kills_total{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1",
            "ffrtmp_events_lost_total 0",
            "ffrtmp_scan_duration_seconds_count 0",
        ] {
            assert!(text.contains(family), "missing {family}:\n{text}");
        }
        check_lines(&text);
        // Without a kernel source there are no kernel series.
        assert!(
            !render(&telemetry(), &SourceCounters::default(), &build, &usage)
                .contains("ffrtmp_kernel_")
        );
    }

    #[test]
    fn per_command_and_off_limit_the_series() {
        let mut t = telemetry();
        t.job_metrics = JobMetrics::PerCommand;
        let none = SourceCounters::default();
        let text = render(&t, &none, &BuildInfo::default(), &usage);
        assert!(
            text.contains("ffrtmp_jobs{command=\"ff\\\"mpeg\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ffrtmp_job_memory_limit_bytes{command=\"x264\"} 67108864"),
            "{text}"
        );
        assert!(!text.contains("pid=\""), "{text}");
        check_lines(&text);
        // A job that ends: its numbers move into the command's totals, so the counters of
        // the command never go down.
        t.job_exited(42);
        assert_eq!(t.jobs.len(), 2);
        let ending = render(&t, &none, &BuildInfo::default(), &usage);
        assert!(
            ending.contains("ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 3"),
            "{ending}"
        );
        assert!(
            ending.contains("ffrtmp_jobs{command=\"ff\\\"mpeg\"} 1"),
            "{ending}"
        );
        t.job_ended(42, Some(usage("/ffrtmp/auto-ffmpeg-42")));
        let ended = render(&t, &none, &BuildInfo::default(), &usage);
        assert!(
            ended.contains("ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 3"),
            "{ended}"
        );
        assert!(
            ended.contains("ffrtmp_job_oom_kills_total{command=\"ff\\\"mpeg\"} 2"),
            "{ended}"
        );
        // In per_job mode the ended job is still shown, with its last numbers.
        t.job_metrics = JobMetrics::PerJob;
        let text = render(&t, &none, &BuildInfo::default(), &usage);
        assert!(text.contains("ffrtmp_job_oom_kills_total{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1"), "{text}");
        assert!(text.contains("ffrtmp_governed_processes 2"), "{text}");
        t.job_metrics = JobMetrics::Off;
        let text = render(&t, &none, &BuildInfo::default(), &usage);
        assert!(!text.contains("ffrtmp_job_"), "{text}");
        assert!(text.contains("ffrtmp_governed_processes 2"));
    }
}
