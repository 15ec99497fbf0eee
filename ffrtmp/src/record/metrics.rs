//! `/metrics` in the Prometheus text format (version 0.0.4), rendered from a `Snapshot` the
//! record loop hands out on request (its tally, health, jobs, the kernel's totals and the
//! engine's exec counts), reading each job's CPU, memory and OOM numbers from the job's own
//! cgroup files.
//!
//! Per-job series come and go with jobs: `job_metrics` (docs/fleet.md) chooses one series
//! per job and family (`per_job`), sums per command (`per_command`), or none (`off`).

use std::collections::{BTreeMap, BTreeSet};

use super::health::{Health, HealthStatus};
use super::jobs::{add, JobsView};
use super::state::ProcessRecord;
use super::tally::{Count, Tally};
use crate::config::{JobMetrics, Limits};
use crate::placer::limits::{mib_to_bytes, CPU_PERIOD_US};
use crate::placer::Usage;
use crate::sources::KernelTotals;

/// Everything `/metrics` and `/healthz` show, copied out of the record loop (which owns
/// all of it) for one request: no lock is shared with it, nor with the placement thread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The exec source in use (`ebpf`, `scan`, …).
    pub source: String,
    pub tally: Tally,
    pub health: Health,
    pub jobs: JobsView,
    pub job_metrics: JobMetrics,
    /// The kernel program's totals, as last read (no kernel source: none).
    pub kernel: Option<KernelTotals>,
    /// Exec notices the engine took, by source.
    pub execs: Vec<(&'static str, u64)>,
    /// The exec gate's counters (gate off: none).
    pub gate: Option<crate::sources::gate::GateTotals>,
    /// The pools: name, record, and how many governed jobs each holds.
    pub pools: Vec<super::pool_metrics::PoolView>,
}

pub use super::exposition::escape;
use super::exposition::series;

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
pub fn render(t: &Snapshot, build: &BuildInfo, usage: &dyn Fn(&str) -> Usage) -> String {
    let mut out = String::with_capacity(4096);
    let mut execs: BTreeMap<&'static str, u64> = t.execs.iter().copied().collect();
    if t.tally.scans() > 0 {
        *execs.entry("scan").or_default() += t.tally.get(Count::ScanCandidates);
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
    render_tally(&mut out, &t.tally, &labelled);
    if let Some(k) = t.kernel {
        render_kernel(&mut out, k);
    }
    if let Some(g) = &t.gate {
        render_gate(&mut out, g);
    }
    t.tally.exec_to_placed.render(
        &mut out,
        "ffrtmp_exec_to_placed_seconds",
        "From the kernel's exec timestamp to the verified move into the job cgroup.",
    );
    t.tally.scan_duration.render(
        &mut out,
        "ffrtmp_scan_duration_seconds",
        "Duration of one /proc scan pass.",
    );
    series(
        &mut out,
        "ffrtmp_governed_processes",
        "Processes governed now.",
        "gauge",
        &one(t.jobs.live.len() as u64),
    );
    let health: Vec<(String, u64)> = [
        HealthStatus::Healthy,
        HealthStatus::Degraded,
        HealthStatus::Unhealthy,
    ]
    .iter()
    .map(|s| {
        (
            format!("{{status=\"{s}\"}}"),
            u64::from(*s == t.health.status),
        )
    })
    .collect();
    series(
        &mut out,
        "ffrtmp_health",
        "1 for the current health status.",
        "gauge",
        &health,
    );
    render_jobs(&mut out, t, usage);
    super::pool_metrics::render(&mut out, &t.pools, usage);
    out
}

/// Turns counts by label value into series with that label.
type Labelled = dyn Fn(&BTreeMap<&'static str, u64>, &str) -> Vec<(String, u64)>;

/// The tally's counters without labels: family, help and count, in the order they are
/// shown.
const PLAIN_COUNTERS: [(&str, &str, Count); 7] = [
    (
        "ffrtmp_events_lost_total",
        "Events a source lost (ring buffer full, read failures); each triggers a reconciliation scan.",
        Count::EventsLost,
    ),
    (
        "ffrtmp_processes_discovered_total",
        "Target processes found and decided to be governed.",
        Count::Discovered,
    ),
    (
        "ffrtmp_limit_failures_total",
        "Limits that could not be applied.",
        Count::LimitFailures,
    ),
    (
        "ffrtmp_drift_corrections_total",
        "Governed processes another writer moved out of their cgroup, and jobs' or pools' limit files it changed, put back.",
        Count::DriftCorrections,
    ),
    (
        "ffrtmp_strict_timeouts_total",
        "Strict targets resumed unplaced because strict_timeout passed before their placement.",
        Count::StrictTimeouts,
    ),
    (
        "ffrtmp_gate_execs_checked_total",
        "Processes placed at the exec gate looked at again 250 ms later (those whose exec had failed are counted in ffrtmp_placements_total{result=\"moved_back\"}).",
        Count::GateExecsChecked,
    ),
    (
        "ffrtmp_undecodable_events_total",
        "Kernel records that could not be decoded (a kernel object of another layout); their processes are found by reconciliation.",
        Count::Undecodable,
    ),
];

/// The daemon's counters.
fn render_tally(out: &mut String, tally: &Tally, labelled: &Labelled) {
    for (family, help, count) in PLAIN_COUNTERS {
        counter(out, family, help, &one(tally.get(count)));
    }
    counter(out, "ffrtmp_placements_total", "Placements by result (placed, partial = some limit not applied, failed, vanished = exited first, retried, moved_back = placed at the exec gate, its exec then failed: put back where it was).", &labelled(tally.placements(), "result"));
    counter(out, "ffrtmp_skipped_total", "Targets left alone, by reason (container, filtered, too_old, ffrtmp_run, self, governed, exited).", &labelled(tally.skipped(), "reason"));
}

/// The exec gate's counters (only with the gate on).
fn render_gate(out: &mut String, g: &crate::sources::gate::GateTotals) {
    counter(
        out,
        "ffrtmp_gate_held_total",
        "Execs of marked target binaries held in the kernel and handed to the placement thread.",
        &one(g.held),
    );
    let answers: Vec<(String, u64)> = g
        .answers
        .iter()
        .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), *v))
        .collect();
    counter(out, "ffrtmp_gate_answers_total", "Held execs let go, by outcome: placed (after the verified move), unplaced (not to be placed, or the move failed), late (gate_timeout passed first).", &answers);
    counter(out, "ffrtmp_gate_passed_total", "Gate events let go at once: the placement queue was full, the binary is no longer a target's, or the daemon's own exec.", &one(g.passed));
    counter(out, "ffrtmp_gate_overflows_total", "Gate queue overflows (the kernel let execs go unasked); each triggers a reconciliation scan.", &one(g.overflows));
    series(
        out,
        "ffrtmp_gate_marks",
        "Target binaries whose execs the gate holds.",
        "gauge",
        &one(g.marks),
    );
    counter(
        out,
        "ffrtmp_gate_remarks_total",
        "Target binaries replaced (a package upgrade) and held again.",
        &one(g.remarks),
    );
    counter(
        out,
        "ffrtmp_gate_releases_total",
        "Times the gate's watchdog let go of every held exec because the gate thread was a second or more past its promised turn (its wait, at most a second, plus a second).",
        &one(g.releases),
    );
    let count = g.answers.iter().map(|(_, n)| n).sum();
    crate::record::tally::Histogram::from_buckets(
        &crate::sources::gate::stats::HOLD_BUCKETS,
        &g.hold_buckets,
        g.hold_sum_ns as f64 / 1e9,
        count,
    )
    .render(
        out,
        "ffrtmp_gate_hold_seconds",
        "How long a held exec waited: from the gate reading it to its answer.",
    );
}

/// The kernel program's own counters (only with a kernel source).
fn render_kernel(out: &mut String, k: KernelTotals) {
    let KernelTotals {
        execs,
        forwarded: fwd,
        ring_full: full,
        read_failed: read,
        stop_failed: stops,
        skipped,
    } = k;
    counter(
        out,
        "ffrtmp_kernel_execs_total",
        "Execs the kernel program saw (every exec on the node).",
        &one(execs),
    );
    counter(
        out,
        "ffrtmp_kernel_forwarded_total",
        "Execs the kernel program forwarded to the daemon.",
        &one(fwd),
    );
    counter(
        out,
        "ffrtmp_kernel_ring_full_total",
        "Events the kernel program could not forward because the ring buffer was full.",
        &one(full),
    );
    counter(
        out,
        "ffrtmp_kernel_read_failures_total",
        "Execs the kernel program could not look at (their comm could not be read).",
        &one(read),
    );
    counter(
        out,
        "ffrtmp_kernel_stop_failures_total",
        "Strict targets the kernel program could not stop (they ran before placement).",
        &one(stops),
    );
    if let Some(skipped) = skipped {
        counter(
            out,
            "ffrtmp_kernel_skipped_total",
            "Execs the kernel did not run the exec hook for (recursion_misses: the program was running on that CPU for another task; seen with tp_btf on 7.x). Each triggers a reconciliation, which places a skipped target. Absent where the kernel does not count them (before 5.12).",
            &one(skipped),
        );
    }
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

fn render_jobs(out: &mut String, t: &Snapshot, usage: &dyn Fn(&str) -> Usage) {
    let s = match t.job_metrics {
        JobMetrics::Off => return,
        JobMetrics::PerJob => per_job(&t.jobs, usage),
        JobMetrics::PerCommand => {
            let s = per_command(&t.jobs, usage);
            series(
                out,
                "ffrtmp_jobs",
                "Governed jobs per command.",
                "gauge",
                &s.count,
            );
            s
        }
    };
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

fn cgroup(j: &ProcessRecord) -> std::sync::Arc<str> {
    j.cgroup.clone().unwrap_or_else(|| "".into())
}

/// A job is a cgroup: the targets of one systemd service (`services: limit_unit`) are one
/// job, shown and summed once (the lowest live PID's record). `true` the first time a
/// record's cgroup is seen; a record without one is a job of its own.
fn first_in_cgroup(seen: &mut BTreeSet<std::sync::Arc<str>>, j: &ProcessRecord) -> bool {
    j.cgroup.as_ref().is_none_or(|c| seen.insert(c.clone()))
}

/// One series per job and family: the live ones, those ending, those ended a while ago.
fn per_job(jobs: &JobsView, usage: &dyn Fn(&str) -> Usage) -> JobSeries {
    let mut s = JobSeries::default();
    let labels = |j: &ProcessRecord| {
        format!(
            "{{job_id=\"{}\",command=\"{}\",pid=\"{}\"}}",
            escape(&j.job_id),
            escape(&j.command),
            j.pid
        )
    };
    let mut seen = BTreeSet::new();
    for j in (jobs.live.iter().chain(&jobs.ending)).filter(|j| first_in_cgroup(&mut seen, j)) {
        push_job(&mut s, &labels(j), &usage(&cgroup(j)), j.limits.as_ref());
    }
    for e in &jobs.ended {
        push_job(
            &mut s,
            &labels(&e.record),
            &e.usage,
            e.record.limits.as_ref(),
        );
    }
    s
}

/// Sums per command, ended jobs' last numbers included (so the counters never go down).
fn per_command(jobs: &JobsView, usage: &dyn Fn(&str) -> Usage) -> JobSeries {
    let mut by: BTreeMap<&str, CommandSums> = BTreeMap::new();
    for (cmd, u) in &jobs.ended_totals {
        let e = by.entry(cmd).or_default();
        add(&mut e.usage.cpu_usec, u.cpu_usec);
        add(&mut e.usage.oom_kills, u.oom_kills);
    }
    let mut seen = BTreeSet::new();
    let mut once = |j: &&ProcessRecord| first_in_cgroup(&mut seen, j);
    let live: Vec<&ProcessRecord> = jobs.live.iter().filter(&mut once).collect();
    let ending: Vec<&ProcessRecord> = jobs.ending.iter().filter(&mut once).collect();
    for j in &live {
        by.entry(&j.command)
            .or_default()
            .add_limits(&j.limits.clone().unwrap_or_default());
    }
    for (j, live) in (live.iter().map(|j| (j, true))).chain(ending.iter().map(|j| (j, false))) {
        let u = usage(&cgroup(j));
        let e = by.entry(&j.command).or_default();
        add(&mut e.usage.cpu_usec, u.cpu_usec);
        add(&mut e.usage.oom_kills, u.oom_kills);
        if live {
            add(&mut e.usage.memory_bytes, u.memory_bytes);
        }
    }
    let mut s = JobSeries::default();
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
    s
}

impl CommandSums {
    /// One more live job with these limits: summed, unless one of them has none.
    fn add_limits(&mut self, l: &Limits) {
        self.jobs += 1;
        match l.memory_limit {
            Some(m) if !self.unlimited_mem => *self.mem_limit.get_or_insert(0) += mib_to_bytes(m),
            Some(_) => {}
            None => {
                self.unlimited_mem = true;
                self.mem_limit = None;
            }
        }
        match l.cpu_quota {
            Some(q) if !self.unlimited_cpu => {
                *self.cpu_limit.get_or_insert(0.0) += f64::from(q) / 100.0
            }
            Some(_) => {}
            None => {
                self.unlimited_cpu = true;
                self.cpu_limit = None;
            }
        }
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

    fn record(pid: u32, cmd: &str) -> ProcessRecord {
        ProcessRecord {
            pid,
            job_id: format!("auto-ffmpeg-{pid}").into(),
            command: cmd.into(),
            discovered_at: chrono::Utc::now(),
            attached_at: None,
            last_seen_at: None,
            start_time: Some(1),
            cgroup: Some(format!("/ffrtmp/auto-ffmpeg-{pid}").into()),
            exe: None,
            limits: Some(Limits {
                cpu_quota: Some(150),
                memory_limit: Some(64),
                ..Default::default()
            }),
        }
    }

    /// A snapshot with three governed jobs, and a `Jobs` that made them (for exits).
    fn snapshot() -> (Snapshot, crate::record::jobs::Jobs) {
        let mut t = Snapshot {
            execs: vec![("ebpf", 8)],
            ..Default::default()
        };
        t.tally.placement("placed");
        t.tally.placement("placed");
        t.tally.placement("placed");
        t.tally.skip("container");
        t.tally.skip("container");
        t.tally.exec_to_placed.observe(0.0002);
        let mut jobs = crate::record::jobs::Jobs::default();
        for (pid, cmd) in [(42, "ff\"mpeg"), (43, "ff\"mpeg"), (44, "x264")] {
            jobs.add(
                crate::process::ProcessId { pid, start_time: 1 },
                record(pid, cmd),
            );
        }
        t.jobs = jobs.view();
        (t, jobs)
    }

    fn usage(cg: &str) -> Usage {
        assert!(cg.starts_with("/ffrtmp/auto-ffmpeg-"), "{cg}");
        Usage {
            cpu_usec: Some(1_500_000),
            memory_bytes: Some(4096),
            oom_kills: Some(1),
            pids: Some(1),
            throttling: None,
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
        let (mut t, _) = snapshot();
        t.kernel = Some(KernelTotals {
            execs: 100,
            forwarded: 7,
            ring_full: 1,
            read_failed: 0,
            stop_failed: 2,
            skipped: Some(3),
        });
        let text = render(&t, &build, &usage);
        has(
            &text,
            &[
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
            ],
        );
        check_lines(&text);
        // Without a kernel source there are no kernel series.
        assert!(!render(&snapshot().0, &build, &usage).contains("ffrtmp_kernel_"));
    }

    /// `text` has each of `lines`, else the test fails showing it.
    fn has(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn per_command_and_off_limit_the_series() {
        let (mut t, mut jobs) = snapshot();
        t.job_metrics = JobMetrics::PerCommand;
        let b = BuildInfo::default();
        let text = render(&t, &b, &usage);
        has(
            &text,
            &[
                "ffrtmp_jobs{command=\"ff\\\"mpeg\"} 2",
                "ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 3",
                "ffrtmp_job_memory_limit_bytes{command=\"x264\"} 67108864",
            ],
        );
        assert!(!text.contains("pid=\""), "{text}");
        check_lines(&text);
        // A job that ends: its numbers move into the command's totals, so the counters of
        // the command never go down.
        let id = |pid| crate::process::ProcessId { pid, start_time: 1 };
        assert!(jobs.exited(id(42)).is_some());
        assert_eq!(jobs.len(), 2);
        t.jobs = jobs.view();
        has(
            &render(&t, &b, &usage),
            &[
                "ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 3",
                "ffrtmp_jobs{command=\"ff\\\"mpeg\"} 1",
            ],
        );
        jobs.ended(42, Some(usage("/ffrtmp/auto-ffmpeg-42")));
        t.jobs = jobs.view();
        has(
            &render(&t, &b, &usage),
            &[
                "ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 3",
                "ffrtmp_job_oom_kills_total{command=\"ff\\\"mpeg\"} 2",
            ],
        );
        // In per_job mode the ended job is still shown, with its last numbers.
        t.job_metrics = JobMetrics::PerJob;
        let text = render(&t, &b, &usage);
        assert!(text.contains("ffrtmp_job_oom_kills_total{job_id=\"auto-ffmpeg-42\",command=\"ff\\\"mpeg\",pid=\"42\"} 1"), "{text}");
        assert!(text.contains("ffrtmp_governed_processes 2"), "{text}");
        t.job_metrics = JobMetrics::Off;
        let text = render(&t, &b, &usage);
        assert!(!text.contains("ffrtmp_job_"), "{text}");
        assert!(text.contains("ffrtmp_governed_processes 2"));
    }

    #[test]
    fn per_command_counts_a_service_with_two_targets_once() {
        let (mut t, _) = snapshot();
        t.job_metrics = JobMetrics::PerCommand;
        let unit = |pid| ProcessRecord {
            job_id: "stream@a.service".into(),
            cgroup: Some("/ffrtmp/auto-ffmpeg-unit".into()),
            ..record(pid, "ff\"mpeg")
        };
        t.jobs.live = vec![unit(50), unit(51)];
        let text = render(&t, &BuildInfo::default(), &usage);
        assert_eq!(text.matches("stream@a.service").count(), 0, "{text}");
        for one in [
            "ffrtmp_jobs{command=\"ff\\\"mpeg\"} 1",
            "ffrtmp_job_cpu_seconds_total{command=\"ff\\\"mpeg\"} 1.5",
            "ffrtmp_job_memory_bytes{command=\"ff\\\"mpeg\"} 4096",
            "ffrtmp_job_memory_limit_bytes{command=\"ff\\\"mpeg\"} 67108864",
        ] {
            assert!(text.contains(one), "missing {one}:\n{text}");
        }
        t.job_metrics = JobMetrics::PerJob;
        let text = render(&t, &BuildInfo::default(), &usage);
        let series = text
            .lines()
            .filter(|l| l.starts_with("ffrtmp_job_cpu_seconds_total{"));
        let series: Vec<&str> = series.collect();
        assert_eq!(series.len(), 1, "{series:?}");
        assert!(series[0].contains("pid=\"50\""), "{series:?}");
    }
}
