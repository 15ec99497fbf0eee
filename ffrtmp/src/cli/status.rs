//! `ffrtmp status`: the daemon's state file joined with live numbers from each job cgroup.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::{fail, StatusArgs, EXIT_FAILURE};
use crate::config::{Limits, DEFAULT_STATE_PATH};
use crate::placer::{detect, Usage};
use crate::process::ProcFs;
use crate::record::state::{HealthRecord, HeldBinary, StateFile, Statistics};

#[derive(Serialize)]
struct Row {
    pid: u32,
    job_id: String,
    command: String,
    cgroup: String,
    /// The pool its cgroup is in.
    pool: Option<String>,
    alive: bool,
    limits: Option<Limits>,
    usage: Usage,
}

/// A pool, with its cgroup's live numbers (its jobs' included).
#[derive(Serialize)]
struct PoolRow {
    name: String,
    cgroup: String,
    limits: Limits,
    jobs: usize,
    usage: Usage,
}

#[derive(Serialize)]
struct Report {
    state_path: PathBuf,
    health: Option<HealthRecord>,
    processes: Vec<Row>,
    statistics: Statistics,
    /// Binaries whose execs the daemon's exec gate holds (inline placement).
    held_at_exec: Vec<HeldBinary>,
    pools: Vec<PoolRow>,
}

pub fn main(a: StatusArgs) -> ExitCode {
    let (path, whence) = state_path(a.state_path);
    let state: StateFile = match std::fs::read(&path) {
        Ok(b) => match crate::record::state::parse(&b) {
            Ok(s) => s,
            Err(e) => {
                return fail(
                    EXIT_FAILURE,
                    format!("{} is not a valid state file: {e}", path.display()),
                )
            }
        },
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                format!("cannot read {}: {e} ({whence})", path.display()),
            )
        }
    };
    let processes = rows(&state);
    let report = Report {
        pools: pools(&state, &processes),
        processes,
        state_path: path,
        health: state.health,
        statistics: state.statistics,
        held_at_exec: state.held_at_exec,
    };
    if a.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializes")
        );
    } else {
        print_text(&report);
    }
    ExitCode::SUCCESS
}

/// `--state-path`, `STATE_PATH`, the running daemon's (it publishes it in the runtime
/// directory, wherever its `--state-path` put it), else the default.
/// The state file to read, and where its path came from (said when it cannot be read):
/// `--state-path`, else `$STATE_PATH`, else what the running daemon published, else the
/// default.
fn state_path(flag: Option<PathBuf>) -> (PathBuf, String) {
    if let Some(p) = flag {
        return (p, "given by --state-path".into());
    }
    if let Some(p) = std::env::var_os("STATE_PATH").filter(|v| !v.is_empty()) {
        return (p.into(), "from $STATE_PATH".into());
    }
    let dir = crate::placer::registry::runtime_dir();
    match crate::placer::registry::running_daemon_state(&dir, &ProcFs::system()) {
        Some(p) => (p, format!("published by the running daemon in {}", dir.display())),
        None => (
            PathBuf::from(DEFAULT_STATE_PATH),
            format!(
                "no running daemon published its state file in {}; is it running? Else give its --state-path",
                dir.display()
            ),
        ),
    }
}

/// One row per recorded process, with its cgroup's live numbers, by PID.
fn rows(state: &StateFile) -> Vec<Row> {
    let backend = detect().ok();
    let proc = ProcFs::system();
    let mut rows: Vec<Row> = state
        .processes
        .values()
        .map(|r| {
            let cgroup = r
                .cgroup
                .clone()
                .unwrap_or_else(|| format!("/ffrtmp/{}", r.job_id).into());
            let alive = proc
                .stat(r.pid)
                .is_ok_and(|s| r.start_time.is_none_or(|st| st == s.start_time) && !s.is_zombie());
            Row {
                pid: r.pid,
                job_id: r.job_id.to_string(),
                command: r.command.to_string(),
                usage: backend
                    .as_ref()
                    .map(|b| b.usage(&cgroup))
                    .unwrap_or_default(),
                pool: state
                    .pools
                    .iter()
                    .find(|(_, p)| cgroup.starts_with(&format!("{}/", p.cgroup)))
                    .map(|(name, _)| name.clone()),
                cgroup: cgroup.to_string(),
                alive,
                limits: r.limits.clone(),
            }
        })
        .collect();
    rows.sort_by_key(|r| r.pid);
    rows
}

/// One row per pool the state file records, with its live numbers and its jobs.
fn pools(state: &StateFile, rows: &[Row]) -> Vec<PoolRow> {
    let backend = detect().ok();
    state
        .pools
        .iter()
        .map(|(name, p)| PoolRow {
            name: name.clone(),
            cgroup: p.cgroup.clone(),
            limits: p.limits.clone(),
            jobs: rows
                .iter()
                .filter(|r| r.pool.as_ref() == Some(name))
                .count(),
            usage: backend
                .as_ref()
                .map(|b| b.usage(&p.cgroup))
                .unwrap_or_default(),
        })
        .collect()
}

fn print_pools(pools: &[PoolRow]) {
    for p in pools {
        let th = p.usage.throttling.map_or("-".into(), |t| {
            format!("{}/{} periods", t.throttled_periods, t.periods)
        });
        say!(
            "Pool {} ({}): {} job(s), CPU {} s, memory {} MiB, throttled {th}; limits [{}]",
            p.name,
            p.cgroup,
            p.jobs,
            p.usage
                .cpu_usec
                .map_or("-".into(), |u| format!("{:.2}", u as f64 / 1e6)),
            p.usage
                .memory_bytes
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            p.limits
        );
    }
}

fn print_text(report: &Report) {
    match &report.health {
        Some(h) => say!(
            "Health: {} (scan failures: {}, attach failures: {}) since {}",
            h.status,
            h.scan_failures,
            h.attach_failures,
            h.since.to_rfc3339()
        ),
        None => say!("Health: unknown (the state file has no health record)"),
    }
    say!(
        "Governed processes: {}   (state: {})",
        report.processes.len(),
        report.state_path.display()
    );
    if !report.processes.is_empty() {
        say!(
            "{:<8} {:<24} {:<16} {:>9} {:>10} {:>6} {:<6} CGROUP / LIMITS",
            "PID",
            "JOB",
            "COMMAND",
            "CPU s",
            "MEM MiB",
            "OOM",
            "ALIVE"
        );
    }
    for r in &report.processes {
        let opt = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or("-".to_string(), f);
        say!(
            "{:<8} {:<24} {:<16} {:>9} {:>10} {:>6} {:<6} {} [{}]",
            r.pid,
            r.job_id,
            r.command,
            opt(r.usage.cpu_usec, &|u| format!("{:.2}", u as f64 / 1e6)),
            opt(r.usage.memory_bytes, &|b| format!(
                "{:.1}",
                b as f64 / 1048576.0
            )),
            opt(r.usage.oom_kills, &|n| n.to_string()),
            if r.alive { "yes" } else { "no" },
            r.cgroup,
            r.limits
                .as_ref()
                .map_or("limits unknown".into(), |l| l.to_string())
        );
    }
    print_pools(&report.pools);
    if report.held_at_exec.is_empty() {
        say!("Held at exec (inline placement): none");
    } else {
        say!("Held at exec (inline placement), placed before their first instruction:");
    }
    for h in &report.held_at_exec {
        say!("  {} ({})", h.path, h.target);
    }
    let s = &report.statistics;
    say!(
        "Totals: scans {} discovered {} attached {} placement failures {} limit failures {} drift corrections {} events lost {}",
        s.total_scans, s.total_discovered, s.total_attachments, s.total_placement_failures, s.total_limit_failures, s.total_drift_corrections, s.total_events_lost
    );
}
