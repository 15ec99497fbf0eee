//! The scanner: the /proc scan pass on a thread of its own (`ffrtmp-scan`), which owns the
//! scan's state (`sources::scan::Scanner`: what it already looked at) and the job cgroups
//! to try removing again. It takes commands through a channel, in order, and reports each
//! pass to the record loop:
//!
//! - targets nobody reported go to the engine as candidates (the engine alone remembers
//!   what it skipped, so a skipped target is reported again and answered from memory);
//! - governed processes are checked: still alive? still in their cgroup? one moved out by
//!   another writer is put back (drift), off the placement thread (a cgroup v2 move can
//!   wait for an RCU grace period);
//! - empty job cgroups nobody governs are removed; one with a live process the table does
//!   not know is reported, for the engine to take back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::job::JobId;
use crate::placer::Placer;
use crate::process::{is_gone, ProcFs, ProcessId};
use crate::sources::scan::{ScanOutcome, Scanner};

pub use super::limits::Governed;
use super::limits::{LimitFix, LimitsKeeper};

/// What the scanner is told.
pub enum ScanCmd {
    /// One pass over /proc (`full`: read every process's stat, no inode shortcut).
    Scan {
        reason: &'static str,
        full: bool,
        settings: Arc<Settings>,
        governed: Vec<Governed>,
    },
    /// Targets or filters changed: look at every process again.
    Forget,
    /// A job cgroup that still had processes when its job ended: try again later.
    Leftover(String),
    /// Pools the state file names (a run before made them): removed once empty and no
    /// longer configured.
    KnownPools(Vec<String>),
}

/// A governed process that another writer moved out of its job cgroup.
#[derive(Debug)]
pub struct Drift {
    pub id: ProcessId,
    pub job_id: String,
    pub cgroup: String,
    pub location: String,
    /// `None` in a dry run.
    pub corrected: Option<Result<(), String>>,
}

impl Drift {
    pub fn log(&self) {
        let pid = self.id.pid;
        warn!(pid, job = %self.job_id, "PID {pid} (job {}) was moved out of {} to {} by another writer; moving it back", self.job_id, self.cgroup, self.location);
        match &self.corrected {
            Some(Ok(())) => info!(pid, "PID {pid} is back in {}", self.cgroup),
            Some(Err(e)) => error!(pid, "Cannot move PID {pid} back into {}: {e}", self.cgroup),
            None => {}
        }
    }
}

/// What one scan pass found and did.
#[derive(Debug)]
pub struct ScanReport {
    pub reason: &'static str,
    pub outcome: std::io::Result<ScanOutcome>,
    /// Governed processes found gone, and those seen alive in their cgroup.
    pub gone: Vec<ProcessId>,
    pub seen: Vec<ProcessId>,
    pub drift: Vec<Drift>,
    /// Limits of jobs and pools brought to the config (changed, or restored).
    pub limits: Vec<LimitFix>,
    pub removed: Vec<String>,
    /// Job cgroups with a live process: (pid, cgroup, job id, command).
    pub untracked: Vec<(u32, String, JobId, String)>,
    pub warnings: Vec<String>,
    pub took: Duration,
}

/// The scanner thread's end of the channel: send commands, never wait.
pub struct ScannerHandle {
    tx: crossbeam_channel::Sender<ScanCmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScannerHandle {
    pub fn send(&self, cmd: ScanCmd) {
        // Gone only if the thread panicked; the record loop logs the missing reports.
        let _ = self.tx.send(cmd);
    }

    /// Stop after the pass in progress (the channel closes) and wait.
    pub fn stop(self) {
        let ScannerHandle { tx, thread } = self;
        drop(tx);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Start the scanner thread. Reports go to `reports`.
pub fn spawn(
    placer: Arc<Placer>,
    proc: ProcFs,
    dry_run: bool,
    reports: mpsc::UnboundedSender<ScanReport>,
) -> std::io::Result<ScannerHandle> {
    let (tx, rx) = crossbeam_channel::unbounded::<ScanCmd>();
    let thread = std::thread::Builder::new()
        .name("ffrtmp-scan".into())
        .spawn(move || {
            let mut s = ScanThread {
                scanner: Scanner::new(proc.clone()),
                leftovers: Vec::new(),
                limits: LimitsKeeper::default(),
                placer,
                proc,
                dry_run,
            };
            for cmd in rx {
                match cmd {
                    ScanCmd::Scan {
                        reason,
                        full,
                        settings,
                        governed,
                    } => {
                        if full {
                            s.scanner.force_full();
                        }
                        let r = s.pass(reason, &settings, &governed);
                        if reports.send(r).is_err() {
                            return;
                        }
                    }
                    ScanCmd::Forget => s.scanner.forget_all(),
                    ScanCmd::KnownPools(v) => v.iter().for_each(|p| s.limits.holds_jobs(p)),
                    ScanCmd::Leftover(cg) => {
                        if !s.leftovers.contains(&cg) {
                            s.leftovers.push(cg)
                        }
                    }
                }
            }
        })?;
    Ok(ScannerHandle {
        tx,
        thread: Some(thread),
    })
}

/// What the scanner thread owns.
struct ScanThread {
    scanner: Scanner,
    /// Job cgroups to try removing again.
    leftovers: Vec<String>,
    /// The pools' limits in force, and the pools to remove once empty.
    limits: LimitsKeeper,
    placer: Arc<Placer>,
    proc: ProcFs,
    dry_run: bool,
}

impl ScanThread {
    fn pass(
        &mut self,
        reason: &'static str,
        settings: &Settings,
        governed: &[Governed],
    ) -> ScanReport {
        let started = Instant::now();
        let known: HashSet<ProcessId> = governed.iter().map(|g| g.id).collect();
        let outcome = self
            .scanner
            .scan(&settings.targets, &|id| known.contains(&id));
        let mut r = ScanReport {
            reason,
            outcome,
            gone: Vec::new(),
            seen: Vec::new(),
            drift: Vec::new(),
            limits: Vec::new(),
            removed: Vec::new(),
            untracked: Vec::new(),
            warnings: Vec::new(),
            took: Duration::ZERO,
        };
        if r.outcome.is_ok() {
            self.check_governed(governed, &mut r);
            if !self.dry_run {
                self.collect_leftovers(governed, &mut r);
                self.keep_limits(settings, governed, &mut r);
            }
        }
        r.took = started.elapsed();
        r
    }

    /// Pools and jobs to their configured limits. Pools first (a raised pool makes room for
    /// its jobs), then the jobs still alive; a pool that could not be lowered yet (cgroup v1
    /// refuses a parent's CPU quota below a child's) is tried again after its jobs were.
    fn keep_limits(&mut self, settings: &Settings, governed: &[Governed], r: &mut ScanReport) {
        let (placer, removed, warnings) = (&self.placer, &mut r.removed, &mut r.warnings);
        let mut pools = self.limits.pools(placer, settings, removed, warnings);
        let live: Vec<Governed> = (governed.iter())
            .filter(|g| !r.gone.contains(&g.id))
            .cloned()
            .collect();
        r.limits = self.limits.jobs(&self.placer, settings, &live);
        if pools.iter().any(|f| !f.in_force()) {
            pools.retain(|f| f.in_force());
            let (placer, removed, warnings) = (&self.placer, &mut r.removed, &mut r.warnings);
            pools.extend(self.limits.pools(placer, settings, removed, warnings));
        }
        r.limits.extend(pools);
        self.limits.mark_repeats(&mut r.limits);
    }

    /// Governed processes: still alive, still in their cgroup?
    fn check_governed(&self, governed: &[Governed], r: &mut ScanReport) {
        for Governed {
            id,
            cgroup,
            job_id,
            in_service,
            ..
        } in governed
        {
            let pid = id.pid;
            match self.proc.is_alive(*id) {
                Ok(true) => {}
                Ok(false) => {
                    r.gone.push(*id);
                    continue;
                }
                // Out of file descriptors or memory is not an exit: keep governing it.
                Err(e) => {
                    r.warnings
                        .push(format!("Cannot read /proc/{pid}/stat: {e}"));
                    continue;
                }
            }
            // In its service: where it is inside the unit is the unit's business.
            if *in_service {
                r.seen.push(*id);
                continue;
            }
            match self.placer.whereabouts(pid, cgroup) {
                Ok(None) => r.seen.push(*id),
                Ok(Some(location)) => {
                    r.seen.push(*id);
                    let corrected = (!self.dry_run).then(|| {
                        self.placer
                            .move_back(cgroup, pid)
                            .map_err(|e| e.to_string())
                    });
                    r.drift.push(Drift {
                        id: *id,
                        job_id: job_id.to_string(),
                        cgroup: cgroup.to_string(),
                        location,
                        corrected,
                    });
                }
                Err(e) if is_gone(&e) => r.gone.push(*id),
                Err(e) => r
                    .warnings
                    .push(format!("Cannot read /proc/{pid}/cgroup: {e}")),
            }
        }
    }

    /// Remove job cgroups that are empty and belong to no governed process; report those
    /// that hold a live process nobody governs.
    fn collect_leftovers(&mut self, governed: &[Governed], r: &mut ScanReport) {
        let placer = &self.placer;
        placer.remove_stray_spares(false);
        let owned: HashSet<&str> = governed.iter().map(|g| &*g.cgroup).collect();
        let mut candidates = std::mem::take(&mut self.leftovers);
        match placer.job_cgroups() {
            Ok(all) => {
                for cg in all {
                    if let Some(pool) = placer.pool_of(&cg) {
                        self.limits.holds_jobs(pool);
                    }
                    if !owned.contains(cg.as_str()) && !candidates.contains(&cg) {
                        candidates.push(cg);
                    }
                }
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => r
                .warnings
                .push(format!("Cannot list {}: {e}", placer.root())),
        }
        for cg in candidates {
            // Owned, or just made by the placement thread for a process it is moving now
            // (the record loop learns of it only once the move is done): not a leftover.
            if owned.contains(cg.as_str()) || placer.is_fresh(&cg) {
                continue;
            }
            match placer.remove_if_empty(&cg) {
                Ok(true) => r.removed.push(cg),
                Ok(false) => {
                    if let Some((pid, job_id, command)) = placer.job_in(&cg) {
                        r.untracked.push((pid, cg.clone(), job_id, command));
                    }
                    self.leftovers.push(cg);
                }
                Err(e) if is_gone(&e) => {}
                Err(e) => {
                    r.warnings
                        .push(format!("Cannot remove leftover cgroup {cg}: {e}"));
                    self.leftovers.push(cg);
                }
            }
        }
    }
}
