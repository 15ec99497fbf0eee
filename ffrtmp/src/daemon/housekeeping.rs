//! Housekeeping: everything slow that the placement thread must never wait behind.
//!
//! - the scan pass (`run_scan`, on the blocking pool): targets nobody reported go to the
//!   engine as candidates; governed processes are checked (still alive? still in their
//!   cgroup? one moved out by another writer is put back and counted as drift); empty job
//!   cgroups are removed, and one with a live process the table does not know is handed
//!   to the engine to take back;
//! - chores (spare refills, cgroup removal, one at a time on the blocking pool);
//! - state writes (JSON built here, written on the blocking pool, in order);
//! - the strict deadline: a process stopped longer than `strict_timeout` is resumed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::{Chore, Daemon};
use crate::config::units::format_go_duration;
use crate::config::Target;
use crate::engine::Work;
use crate::placer::{monotonic_ns, Placer};
use crate::process::{is_gone, ProcFs, ProcessId, Resumed, Stopped};
use crate::sources::scan::{Note, ScanOutcome, Scanner};

/// At most this many notes wait for the scanner while a scan has it (`tell_scanner`).
const NOTES_MAX: usize = 4096;

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

/// What one scan pass found and did.
pub struct ScanReport {
    scanner: Scanner,
    reason: &'static str,
    outcome: std::io::Result<ScanOutcome>,
    /// Governed processes found gone.
    gone: Vec<ProcessId>,
    seen: Vec<ProcessId>,
    drift: Vec<Drift>,
    removed: Vec<String>,
    leftovers: Vec<String>,
    /// Job cgroups with a live process: (pid, cgroup, job id, command).
    untracked: Vec<(u32, String, String, String)>,
    warnings: Vec<String>,
    took: Duration,
}

/// What the blocking part of a scan needs.
struct ScanJob {
    scanner: Scanner,
    reason: &'static str,
    targets: Vec<Target>,
    known: HashSet<ProcessId>,
    governed: Vec<(ProcessId, Arc<str>, Arc<str>)>,
    leftovers: Vec<String>,
    placer: Arc<Placer>,
    proc: ProcFs,
    dry_run: bool,
}

/// A finished chore.
pub enum ChoreDone {
    Refilled(usize),
    Removed {
        pid: u32,
        cgroup: String,
        usage: crate::placer::Usage,
        result: std::io::Result<bool>,
    },
    Drained,
    Written(std::io::Result<()>),
}

impl Daemon {
    /// Ask for a scan: it runs now if none is running, else right after.
    pub(super) fn ask_scan(&mut self, reason: &'static str) {
        self.scan_again = Some(reason);
    }

    /// Start a scan on the blocking pool, unless one is running.
    pub(super) fn start_scan(
        &mut self,
        reason: &'static str,
    ) -> Option<tokio::task::JoinHandle<ScanReport>> {
        self.release_outcomes();
        let scanner = self.scanner.take()?;
        let job = ScanJob {
            scanner,
            reason,
            targets: self.settings.targets.clone(),
            known: self.journal.values().map(|g| g.id).collect(),
            governed: self
                .journal
                .values()
                .map(|g| {
                    (
                        g.id,
                        g.record.cgroup.clone().unwrap_or_default(),
                        g.record.job_id.clone(),
                    )
                })
                .collect(),
            leftovers: std::mem::take(&mut self.leftovers),
            placer: self.placer.clone(),
            proc: self.proc.clone(),
            dry_run: self.opts.dry_run,
        };
        Some(tokio::task::spawn_blocking(move || run_scan(job)))
    }

    /// Tell the scanner now, or when the running scan gives it back. What waits is bounded:
    /// a reload makes the skips before it moot, `Full` is kept once, and past
    /// `NOTES_MAX` a skip is not noted (a scan that never returns must not grow the
    /// daemon; the engine's memory of skips covers the next 5 s, then a second look).
    pub(super) fn tell_scanner(&mut self, note: Note) {
        let Some(s) = self.scanner.as_mut() else {
            match note {
                Note::ForgetAll => self.scanner_notes.retain(|n| matches!(n, Note::Full)),
                Note::Full if self.scanner_notes.iter().any(|n| matches!(n, Note::Full)) => return,
                Note::Seen(_) if self.scanner_notes.len() >= NOTES_MAX => return,
                _ => {}
            }
            return self.scanner_notes.push(note);
        };
        s.take_note(note);
    }

    /// The scanner is back from a scan: what it was told meanwhile first.
    pub(super) fn give_back_scanner(&mut self, mut scanner: Scanner) {
        for note in self.scanner_notes.drain(..) {
            scanner.take_note(note);
        }
        self.scanner = Some(scanner);
    }

    pub(super) fn finish_scan(&mut self, r: ScanReport) {
        // The scanner first: a held `Skipped` marks what it has seen in it.
        self.give_back_scanner(r.scanner);
        self.release_outcomes();
        self.leftovers.extend(r.leftovers);
        for w in &r.warnings {
            warn!("{w}");
        }
        let outcome = match r.outcome {
            Ok(o) => o,
            Err(e) => {
                error!(
                    "Scan failed: cannot list {}: {e}",
                    self.placer.proc().root().display()
                );
                if self.health.scan(false).is_some() {
                    self.log_health();
                }
                return;
            }
        };
        self.state.statistics.total_scans += 1;
        self.state.last_scan_at = Some(Utc::now());
        {
            let mut t = self.telemetry();
            t.scan_duration.observe(outcome.duration.as_secs_f64());
            *t.exec_events.entry("scan").or_default() += outcome.candidates.len() as u64;
        }
        let new = outcome.candidates.len();
        if new > 0 {
            debug!("{new} candidate(s) in this scan ({})", r.reason);
            info!("Discovered {new} new process(es)");
        }
        for stat in outcome.candidates {
            self.work(Work::Candidate(stat));
        }
        let now = Utc::now();
        for id in &r.seen {
            if let Some(g) = self.journal.get_mut(&id.pid).filter(|g| g.id == *id) {
                g.record.last_seen_at = Some(now);
            }
        }
        for id in r.gone {
            self.on_exit(id);
        }
        for d in r.drift {
            self.state.statistics.total_drift_corrections += 1;
            self.telemetry().drift_corrections += 1;
            warn!(pid = d.id.pid, job = %d.job_id, "PID {} (job {}) was moved out of {} to {} by another writer; moving it back", d.id.pid, d.job_id, d.cgroup, d.location);
            match d.corrected {
                Some(Ok(())) => info!(pid = d.id.pid, "PID {} is back in {}", d.id.pid, d.cgroup),
                Some(Err(e)) => error!(
                    pid = d.id.pid,
                    "Cannot move PID {} back into {}: {e}", d.id.pid, d.cgroup
                ),
                None => {}
            }
        }
        for cg in r.removed {
            info!("Removed leftover cgroup {cg}");
        }
        for (pid, cgroup, job_id, command) in r.untracked {
            self.work(Work::Adopt {
                pid,
                cgroup,
                job_id,
                command,
            });
        }
        info!(
            "Scan complete: new={new} tracked={} duration={}",
            self.journal.len(),
            format_go_duration(r.took)
        );
        debug!(
            processes = outcome.processes,
            "scan of {} processes read in {}",
            outcome.processes,
            format_go_duration(outcome.duration)
        );
        if self.health.scan(true).is_some() {
            self.log_health();
        }
        self.mark_dirty();
    }

    /// The queued chores (up to `CHORE_BATCH`), one after another in one task on the
    /// blocking pool: one wakeup of a pool thread and one of this loop for all of them,
    /// not one each.
    pub(super) fn start_chores(&mut self) -> Option<tokio::task::JoinHandle<Vec<ChoreDone>>> {
        if self.chores.is_empty() {
            return None;
        }
        let n = self.chores.len().min(CHORE_BATCH);
        let batch: Vec<Chore> = self.chores.drain(..n).collect();
        let placer = self.placer.clone();
        let dry_run = self.opts.dry_run;
        Some(tokio::task::spawn_blocking(move || {
            // A chore that panics loses its own result, not the rest of the batch's.
            batch
                .into_iter()
                .filter_map(|chore| {
                    let what = chore.label();
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_chore(&placer, dry_run, chore)
                    }))
                    .map_err(|_| error!("a chore ({what}) panicked; the others of its batch go on"))
                    .ok()
                })
                .collect()
        }))
    }

    pub(super) fn finish_chores(&mut self, r: Result<Vec<ChoreDone>, tokio::task::JoinError>) {
        match r {
            Ok(done) => {
                for d in done {
                    self.finish_chore(d);
                }
            }
            Err(e) => error!("a batch of chores did not finish: {e}"),
        }
    }

    fn finish_chore(&mut self, done: ChoreDone) {
        match done {
            ChoreDone::Refilled(n) if n > 0 => debug!("{n} spare cgroup(s) made"),
            ChoreDone::Refilled(_) | ChoreDone::Drained => {}
            ChoreDone::Removed {
                pid,
                cgroup,
                usage,
                result,
            } => {
                self.telemetry().job_ended(pid, Some(usage));
                self.removed(cgroup, result);
            }
            ChoreDone::Written(Ok(())) => {}
            ChoreDone::Written(Err(e)) => error!(
                "Cannot write state file {}: {e} (check the directory exists and is writable)",
                self.settings.state_path.display()
            ),
        }
    }

    fn removed(&mut self, cgroup: String, result: std::io::Result<bool>) {
        match result {
            Ok(true) => debug!("Removed cgroup {cgroup}"),
            Ok(false) => {
                debug!("Cgroup {cgroup} still has processes; removing it once empty");
                self.leftovers.push(cgroup);
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => {
                warn!("Cannot remove cgroup {cgroup}: {e}; will retry at reconciliation");
                self.leftovers.push(cgroup);
            }
        }
    }

    /// The state as JSON, written from the journal's records without copying them.
    fn state_bytes(&mut self) -> Vec<u8> {
        self.state.version = crate::record::state::STATE_VERSION;
        self.state.health = Some(crate::record::state::HealthRecord {
            status: self.health.status.to_string(),
            scan_failures: self.health.scan_failures,
            attach_failures: self.health.attach_failures,
            since: self
                .state
                .health
                .as_ref()
                .filter(|h| h.status == self.health.status.to_string())
                .map_or_else(Utc::now, |h| h.since),
        });
        crate::record::state::StateView {
            version: self.state.version,
            last_scan_at: self.state.last_scan_at,
            processes: self
                .journal
                .values()
                .map(|g| (g.id.pid.to_string(), &g.record))
                .collect(),
            statistics: &self.state.statistics,
            health: self.state.health.as_ref(),
        }
        .to_json()
    }

    /// Queue a write of the state file (nothing in dry-run mode).
    pub(super) fn flush(&mut self) {
        self.release_outcomes();
        self.dirty_since = None;
        if self.opts.dry_run {
            return;
        }
        let bytes = self.state_bytes();
        self.chores.push_back(Chore::Write {
            path: self.settings.state_path.clone(),
            bytes,
        });
    }

    /// Write the state file now (at shutdown).
    pub(super) fn flush_now(&mut self) {
        self.release_outcomes();
        self.dirty_since = None;
        if self.opts.dry_run {
            return;
        }
        let bytes = self.state_bytes();
        if let Err(e) = crate::record::state::write_atomic(&self.settings.state_path, &bytes) {
            error!(
                "Cannot write state file {}: {e} (check the directory exists and is writable)",
                self.settings.state_path.display()
            );
        }
    }

    /// Resume every process stopped longer than `strict_timeout` (counted from the stop,
    /// or from when this daemon took over a dead daemon's ledger), placed or not; retire
    /// dead daemons' ledgers once empty.
    pub(super) fn sweep_stops(&mut self) {
        let timeout = self.settings.strict_timeout.as_nanos() as u64;
        let now = monotonic_ns();
        let mut resumed = Vec::new();
        let mut retired = Vec::new();
        for (i, l) in self.ledgers.iter().enumerate() {
            let entries = l.ledger.entries();
            if entries.is_empty() && l.orphan {
                retired.push(i);
                continue;
            }
            for (key, stopped_at) in entries {
                let since = stopped_at.max(l.since_ns);
                if now.saturating_sub(since) < timeout {
                    continue;
                }
                let s = Stopped::claim(l.ledger.clone(), key, &self.proc);
                let outcome = s.resume();
                resumed.push((key.tgid, now.saturating_sub(stopped_at), outcome));
            }
        }
        for i in retired.into_iter().rev() {
            let l = self.ledgers.remove(i);
            debug!(
                "Retiring {}: every stop in it was resumed",
                l.ledger.describe()
            );
            l.ledger.retire();
        }
        for (pid, age, outcome) in resumed {
            if outcome == Resumed::Now {
                self.telemetry().strict_timeouts += 1;
                warn!(
                    pid,
                    "PID {pid} was stopped for strict placement {:.1}s ago and is not placed yet; resumed it unplaced (strict_timeout {}); it is placed as soon as the placement goes through",
                    age as f64 / 1e9,
                    format_go_duration(self.settings.strict_timeout)
                );
            }
        }
    }
}

/// One scan pass (blocking).
fn run_scan(mut job: ScanJob) -> ScanReport {
    let started = Instant::now();
    let known = std::mem::take(&mut job.known);
    let outcome = job.scanner.scan(&job.targets, &|id| known.contains(&id));
    let mut r = ScanReport {
        scanner: job.scanner,
        reason: job.reason,
        outcome,
        gone: Vec::new(),
        seen: Vec::new(),
        drift: Vec::new(),
        removed: Vec::new(),
        leftovers: Vec::new(),
        untracked: Vec::new(),
        warnings: Vec::new(),
        took: Duration::ZERO,
    };
    if r.outcome.is_ok() {
        check_governed(&job.placer, &job.proc, &job.governed, job.dry_run, &mut r);
        if !job.dry_run {
            collect_leftovers(&job.placer, &job.governed, job.leftovers, &mut r);
        }
    }
    r.took = started.elapsed();
    r
}

/// Governed processes: still alive, still in their cgroup? Drift is corrected here, off
/// the placement thread (a cgroup v2 move can wait for an RCU grace period).
fn check_governed(
    placer: &Placer,
    proc: &ProcFs,
    governed: &[(ProcessId, Arc<str>, Arc<str>)],
    dry_run: bool,
    r: &mut ScanReport,
) {
    for (id, cgroup, job_id) in governed {
        let pid = id.pid;
        match proc.stat(pid) {
            Ok(s) if s.start_time == id.start_time && !s.is_zombie() => {}
            Ok(_) => {
                r.gone.push(*id);
                continue;
            }
            Err(e) if is_gone(&e) => {
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
        match proc.cgroups(pid) {
            Ok(lines) => {
                r.seen.push(*id);
                if !placer.backend().is_member(cgroup, &lines) {
                    let corrected = (!dry_run).then(|| {
                        placer
                            .backend()
                            .move_process(cgroup, pid)
                            .map_err(|e| e.to_string())
                    });
                    r.drift.push(Drift {
                        id: *id,
                        job_id: job_id.to_string(),
                        cgroup: cgroup.to_string(),
                        location: placer.backend().location(&lines),
                        corrected,
                    });
                }
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
fn collect_leftovers(
    placer: &Placer,
    governed: &[(ProcessId, Arc<str>, Arc<str>)],
    mut candidates: Vec<String>,
    r: &mut ScanReport,
) {
    placer.remove_stray_spares();
    let owned: HashSet<&str> = governed.iter().map(|(_, cg, _)| &**cg).collect();
    match placer.backend().children(placer.root()) {
        Ok(names) => {
            for n in names.into_iter().filter(|n| n.starts_with("auto-")) {
                let cg = placer.cgroup_of(&n);
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
        // Owned, or just made by the placement thread for a process it is moving now (the
        // record loop learns of it only once the move is done): not a leftover.
        if owned.contains(cg.as_str()) || placer.is_fresh(&cg) {
            continue;
        }
        match placer.remove_if_empty(&cg) {
            Ok(true) => r.removed.push(cg),
            Ok(false) => {
                if let Some(u) = untracked(placer, &cg) {
                    r.untracked.push(u);
                }
                r.leftovers.push(cg);
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => {
                r.warnings
                    .push(format!("Cannot remove leftover cgroup {cg}: {e}"));
                r.leftovers.push(cg);
            }
        }
    }
}

/// At most this many chores go to the blocking pool in one task: what comes after waits
/// for the batch, and its results reach the loop together.
const CHORE_BATCH: usize = 64;

fn run_chore(placer: &Placer, dry_run: bool, chore: Chore) -> ChoreDone {
    match chore {
        Chore::Refill(limits) => ChoreDone::Refilled(placer.refill_spares(limits.iter())),
        Chore::Remove { pid, cgroup } => {
            let usage = placer.backend().usage(&cgroup);
            let result = if dry_run {
                Ok(true)
            } else {
                placer.remove_if_empty(&cgroup)
            };
            ChoreDone::Removed {
                pid,
                cgroup,
                usage,
                result,
            }
        }
        Chore::DrainSpares => {
            placer.drain_spares();
            ChoreDone::Drained
        }
        Chore::Write { path, bytes } => {
            ChoreDone::Written(crate::record::state::write_atomic(&path, &bytes))
        }
    }
}

/// `<root>/auto-<command>-<pid>` with that PID inside: a job to take back.
fn untracked(placer: &Placer, cgroup: &str) -> Option<(u32, String, String, String)> {
    let name = cgroup.rsplit('/').next()?;
    let (prefix, pid) = name.rsplit_once('-')?;
    let command = prefix.strip_prefix("auto-")?;
    let pid: u32 = pid.parse().ok()?;
    placer
        .backend()
        .procs(cgroup)
        .ok()?
        .contains(&pid)
        .then(|| {
            (
                pid,
                cgroup.to_string(),
                name.to_string(),
                command.to_string(),
            )
        })
}
