//! The journal: everything the record loop writes down or shows, owned here and nowhere
//! else. The governed jobs (`record::jobs`), the counters (`record::tally`), health, what
//! the state file carries besides the jobs, and the kernel's last totals. It learns of
//! everything from messages (`apply` for the engine's outcomes, and one method per other
//! kind: exits, scan reports, finished chores, source events, kernel counters) and answers
//! with `Effect`s the record loop routes to the other owners. It writes the log lines
//! operators grep for; it never blocks.

mod limits;
mod outcomes;
mod scans;
mod services;

use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::chores::{Chore, ChoreDone};
use super::limits::Governed;
use crate::config::JobMetrics;
use crate::exec::Work;
use crate::process::{is_gone, PidFd, ProcessId};
use crate::record::health::{Health, HealthStatus};
use crate::record::jobs::Jobs;
use crate::record::metrics::Snapshot;
use crate::record::state::{HealthRecord, ProcessRecord, StateFile, StateView, STATE_VERSION};
use crate::record::tally::{Count, Tally};
use crate::sources::{CounterReading, KernelTotals, SourceEvent};

/// What the journal asks of the other owners; the record loop routes each.
#[derive(Debug)]
pub enum Effect {
    /// To the engine's work queue.
    Engine(Work),
    /// To the chore runner.
    Chore(Chore),
    /// Watch a governed process for its exit (its pidfd), or stop watching it.
    Watch(ProcessId, Option<PidFd>),
    Unwatch(u32),
    /// Ask the scanner for a scan (`full`: read every process's stat).
    Scan {
        reason: &'static str,
        full: bool,
    },
    /// A job cgroup the scanner should try to remove again later.
    Leftover(String),
    /// A target's binary (a governed process's exe), for the exec gate to hold.
    Learn {
        exe: String,
        target: String,
    },
}

pub type Effects = Vec<Effect>;

/// The state file's writes: where, whether one is due, whether they fail.
struct Writes {
    path: PathBuf,
    /// Something written in the state file changed since (a write is due).
    dirty_since: Option<Instant>,
    /// The error the writes fail with, and how many did.
    failing: Option<(String, u64)>,
}

pub struct Journal {
    jobs: Jobs,
    tally: Tally,
    health: Health,
    /// What the state file said at start and keeps besides the jobs: the totals before
    /// this daemon (its `statistics`), the last scan, since when the health is what it is.
    stored: StateFile,
    source: String,
    kernel: Option<KernelTotals>,
    job_metrics: JobMetrics,
    writes: Writes,
    /// The governed set or health changed: publish (STATUS) before the next wait.
    republish: bool,
    /// The services limited for their targets, as the journal keeps track of them.
    units: services::UnitBook,
}

impl Journal {
    pub fn new(state_path: PathBuf, job_metrics: JobMetrics) -> Self {
        Journal {
            jobs: Jobs::default(),
            tally: Tally::default(),
            health: Health::default(),
            stored: StateFile::default(),
            source: String::new(),
            kernel: None,
            job_metrics,
            writes: Writes {
                path: state_path,
                dirty_since: None,
                failing: None,
            },
            republish: true,
            units: Default::default(),
        }
    }

    /// The state file as loaded at start: its totals and times (its records go to the
    /// engine, which governs again those still alive).
    pub fn restore(&mut self, mut file: StateFile) {
        file.processes.clear();
        self.stored = file;
        // What this daemon's gate holds, once it says (none, with the gate off).
        self.stored.held_at_exec.clear();
        self.mark_dirty();
    }

    pub fn set_source(&mut self, source: String) {
        self.source = source;
        self.republish = true;
    }

    pub fn set_job_metrics(&mut self, m: JobMetrics) {
        self.job_metrics = m;
    }

    /// Governed processes for a scan: identity, job cgroup, job id, limits in force.
    pub fn governed_list(&self) -> Vec<Governed> {
        self.jobs
            .iter()
            .map(|g| Governed {
                id: g.id,
                cgroup: g.record.cgroup.clone().unwrap_or_else(|| "".into()),
                job_id: g.record.job_id.clone(),
                command: g.record.command.clone(),
                limits: g.record.limits.clone(),
                in_service: services::unit_of(&g.record).is_some(),
            })
            .collect()
    }

    pub fn mark_dirty(&mut self) {
        self.writes.dirty_since.get_or_insert_with(Instant::now);
    }

    pub fn dirty_since(&self) -> Option<Instant> {
        self.writes.dirty_since
    }

    /// The STATUS line, if it is due (what it shows changed).
    pub fn take_status(&mut self) -> Option<String> {
        std::mem::take(&mut self.republish).then(|| self.status_line())
    }

    pub fn status_line(&self) -> String {
        format!(
            "source {}, governed {}, {}",
            self.source,
            self.jobs.len(),
            self.health.status
        )
    }

    /// What `/metrics` and `/healthz` show now (`execs`: the engine's counts).
    pub fn snapshot(
        &self,
        execs: Vec<(&'static str, u64)>,
        gate: Option<crate::sources::gate::GateTotals>,
    ) -> Snapshot {
        Snapshot {
            gate,
            source: self.source.clone(),
            tally: self.tally.clone(),
            health: self.health.clone(),
            jobs: self.jobs.view(),
            job_metrics: self.job_metrics,
            kernel: self.kernel,
            execs,
            pools: self.pools_view(),
        }
    }

    /// The state file as JSON, written from the jobs' records without copying them.
    pub fn state_bytes(&mut self) -> Vec<u8> {
        self.writes.dirty_since = None;
        let status = self.health.status.to_string();
        let since = self
            .stored
            .health
            .as_ref()
            .filter(|h| h.status == status)
            .map_or_else(Utc::now, |h| h.since);
        self.stored.health = Some(HealthRecord {
            status,
            scan_failures: self.health.scan_failures,
            attach_failures: self.health.attach_failures,
            since,
        });
        let statistics = self.tally.statistics(&self.stored.statistics);
        StateView {
            version: STATE_VERSION,
            last_scan_at: self.stored.last_scan_at,
            processes: self
                .jobs
                .iter()
                .map(|g| (g.id.pid.to_string(), &g.record))
                .collect(),
            statistics: &statistics,
            health: self.stored.health.as_ref(),
            held_at_exec: &self.stored.held_at_exec,
            pools: &self.stored.pools,
            units: &self.stored.units,
        }
        .to_json()
    }

    /// A governed process and its exit watch (its pidfd joins the exit set; without one,
    /// the exit set polls it).
    fn add_job(
        &mut self,
        id: ProcessId,
        pidfd: Option<PidFd>,
        record: ProcessRecord,
        fx: &mut Effects,
    ) {
        fx.push(Effect::Watch(id, pidfd));
        if let Some(exe) = &record.exe {
            fx.push(Effect::Learn {
                exe: exe.to_string(),
                target: record.command.to_string(),
            });
        }
        self.jobs.add(id, record);
        self.mark_dirty();
        self.republish = true;
    }

    /// A governed process exited: its job ends, its cgroup goes once empty.
    pub fn exited(&mut self, id: ProcessId, fx: &mut Effects) {
        if let Some(r) = self.jobs.get(id).map(|g| &g.record) {
            info!(pid = id.pid, job = %r.job_id, "PID {} ({}) exited; job {} ended", id.pid, r.command, r.job_id);
        }
        self.end_job(id, fx);
    }

    /// A job ends: its exit watch goes, and its cgroup once empty.
    fn end_job(&mut self, id: ProcessId, fx: &mut Effects) {
        let Some(r) = self.jobs.exited(id) else {
            return;
        };
        let cgroup = r.cgroup.as_deref().unwrap_or("").to_string();
        fx.push(Effect::Unwatch(id.pid));
        fx.push(Effect::Engine(Work::Exited(id)));
        if let Some(unit) = services::unit_of(r).map(str::to_string) {
            // The unit's cgroup is systemd's: nothing to remove, its values go back.
            self.jobs.ended(id.pid, None);
            self.restore_unit(&unit, fx);
            self.republish = true;
            return self.mark_dirty();
        }
        fx.push(Effect::Chore(Chore::Remove {
            pid: id.pid,
            cgroup,
            usage: self.job_metrics != JobMetrics::Off,
        }));
        self.mark_dirty();
        self.republish = true;
    }

    /// A finished chore.
    pub fn chore_done(&mut self, done: ChoreDone, fx: &mut Effects) {
        match done {
            ChoreDone::Made(v) if v.is_empty() => {}
            ChoreDone::Made(v) => {
                debug!("{} spare cgroup(s) made", v.len());
                fx.push(Effect::Engine(Work::Spares(v)));
            }
            ChoreDone::Removed {
                pid,
                cgroup,
                usage,
                result,
            } => {
                self.jobs.ended(pid, Some(usage));
                match result {
                    Ok(true) => debug!("Removed cgroup {cgroup}"),
                    Ok(false) => {
                        debug!("Cgroup {cgroup} still has processes; removing it once empty");
                        fx.push(Effect::Leftover(cgroup));
                    }
                    Err(e) if is_gone(&e) => {}
                    Err(e) => {
                        warn!("Cannot remove cgroup {cgroup}: {e}; will retry at reconciliation");
                        fx.push(Effect::Leftover(cgroup));
                    }
                }
            }
            ChoreDone::Written(result) => self.written(result),
            ChoreDone::UnitLimited {
                unit,
                limits,
                result,
            } => self.unit_limited(unit, limits, result, fx),
            ChoreDone::UnitRestored {
                unit,
                before,
                result,
            } => self.unit_restored(unit, before, result),
        }
    }

    /// How the last write of the state file, at shutdown, went: a failure is always said.
    pub fn written_at_exit(&mut self, result: std::io::Result<()>) {
        match result {
            Err(e) => error!(
                "Cannot write state file {} at shutdown: {e}; the next start finds the governed processes again in their job cgroups",
                self.writes.path.display()
            ),
            ok => self.written(ok),
        }
    }

    /// How a write of the state file went. A failure is logged when it starts (or its
    /// error changes), not at every flush; the periodic flush retries, and the first write
    /// that lands again says so.
    pub fn written(&mut self, result: std::io::Result<()>) {
        let path = self.writes.path.display();
        match (result, &mut self.writes.failing) {
            (Ok(()), None) => {}
            (Ok(()), Some((_, failed))) => {
                info!("State file {path} written again (after {failed} failed write(s))");
                self.writes.failing = None;
            }
            (Err(e), Some((error, failed))) if *error == e.to_string() => {
                *failed += 1;
                debug!("State file {path}: write {failed} failed the same way ({e})");
            }
            (Err(e), _) => {
                error!(
                    "Cannot write state file {path}: {e} (check the directory exists, is writable and has space); placing goes on, and the write is retried at every flush"
                );
                self.writes.failing = Some((e.to_string(), 1));
            }
        }
    }

    pub fn undecodable(&mut self, source: &str, error: &str, fx: &mut Effects) {
        self.tally.add(Count::Undecodable, 1);
        error!(
            source,
            "Event source {source}: an undecodable record ({error}); the kernel object and the agent disagree on ExecEvent — rebuild both (cargo xtask build-ebpf, then cargo build). The reconciliation scan finds its process"
        );
        fx.push(Effect::Scan {
            reason: "undecodable event",
            full: false,
        });
    }

    /// The kernel's counters (every 250 ms): into `/metrics`; losses and failed stops acted
    /// upon.
    pub fn kernel(&mut self, r: CounterReading, fx: &mut Effects) {
        self.kernel = Some(r.totals);
        if r.skipped > 0 {
            // Most skipped execs are not targets: reconcile, count, but do not warn.
            debug!(
                "the kernel skipped the exec hook for {} exec(s) (it was running on that CPU); reconciling",
                r.skipped
            );
            fx.push(Effect::Scan {
                reason: "the kernel skipped the exec hook",
                full: false,
            });
        }
        for ev in [
            (r.lost > 0).then_some(SourceEvent::Lost {
                source: "ebpf",
                count: r.lost,
            }),
            (r.unstopped > 0).then_some(SourceEvent::StopsFailed {
                source: "ebpf",
                count: r.unstopped,
            }),
        ]
        .into_iter()
        .flatten()
        {
            self.source_event(ev, fx);
        }
    }

    /// Strict targets the sweeper resumed unplaced (it logged each).
    pub fn strict_timeouts(&mut self, n: u64) {
        self.tally.add(Count::StrictTimeouts, n);
    }

    /// The exec source is gone: health says so.
    pub fn source_lost(&mut self) {
        self.source = "scan".into();
        if self.health.source(false).is_some() {
            self.log_health();
        }
        self.republish = true;
    }

    fn log_health(&mut self) {
        let line = self.health.line();
        match self.health.status {
            HealthStatus::Healthy => info!("{line}"),
            _ => warn!("{line}"),
        }
        self.mark_dirty();
        self.republish = true;
    }

    /// At shutdown, the last line.
    pub fn farewell(&self, ebpf_execs: u64) {
        if let Some(k) = self.kernel {
            info!(
                "Kernel program totals (as last read): {} exec(s) seen, {} forwarded, {} lost to a full ring, {} unreadable, {} skipped by the kernel, {} strict stop(s) failed; {ebpf_execs} exec event(s) taken",
                k.execs,
                k.forwarded,
                k.ring_full,
                k.read_failed,
                k.skipped
                    .map_or_else(|| "unknown (the kernel does not count them)".to_string(), |n| n.to_string()),
                k.stop_failed,
            );
        }
        info!(
            "Shutting down; {} governed process(es) keep running in their cgroups",
            self.jobs.len()
        );
    }
}
