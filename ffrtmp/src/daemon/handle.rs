//! One process, from notice to placement: pin, gather facts, decide, place, record.

use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::{Chore, Daemon, Governed, Timed};
use crate::config::units::format_go_duration;
use crate::matcher::{decide, Decision};
use crate::placer::{auto_job_id, Class, JobSpec};
use crate::process::{is_gone, Pinned, ProcessId};
use crate::record::state::ProcessRecord;
use crate::sources::ExecNotice;

/// Backoff before retry `attempt` (1-based): 50 ms doubling, capped at 5 s, with ±50 % jitter.
pub fn backoff(attempt: u32, jitter_seed: u64) -> Duration {
    let base = 50u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(5_000);
    // xorshift of the seed: cheap jitter without a RNG dependency.
    let mut x = jitter_seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 50 + (x % 101); // 50..=150 %
    Duration::from_millis(base * factor / 100)
}

/// Outcome of looking at one candidate, for the scan's "Discovered" count.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Looked {
    Governing,
    NotNow,
}

impl Daemon {
    pub(super) fn on_exec(&mut self, n: ExecNotice) {
        let pinned = match self.placer.proc().pin(n.pid) {
            Ok(p) => p,
            Err(e) if crate::process::is_gone(&e) => {
                // Gone before we could look: nothing to place, nothing left stopped.
                debug!(
                    pid = n.pid,
                    "PID {} exited before it could be pinned: {e}", n.pid
                );
                return;
            }
            Err(e) => {
                // Not gone, but we cannot pin it (out of file descriptors, memory…): the
                // reconciliation scan will find it. A stopped one must run meanwhile.
                warn!(
                    pid = n.pid,
                    "Cannot pin PID {}: {e}; leaving it to the reconciliation scan", n.pid
                );
                if n.stopped {
                    // SAFETY: a plain kill(2); without a pidfd this is the best we have.
                    unsafe { libc::kill(n.pid as libc::pid_t, libc::SIGCONT) };
                }
                return;
            }
        };
        if self.governed.get(&n.pid).is_some_and(|g| g.id == pinned.id) {
            // Already governed (an exec of a governed process): it stays in its cgroup.
            self.continue_if_stopped(&pinned, Some(&n));
            return;
        }
        self.look_at(pinned, Some(n));
    }

    /// Decide on a pinned process and act on the decision.
    pub(super) fn look_at(&mut self, pinned: Pinned, notice: Option<ExecNotice>) -> Looked {
        let needs = crate::matcher::needs(&self.settings.targets, &pinned.stat.comm);
        let facts = match self.placer.proc().facts(pinned.stat.clone(), needs) {
            Ok(f) => f,
            Err(e) => {
                debug!(
                    pid = pinned.id.pid,
                    "PID {} vanished while being read: {e}", pinned.id.pid
                );
                self.continue_if_stopped(&pinned, notice.as_ref());
                return Looked::NotNow;
            }
        };
        match decide(&self.settings.targets, &self.guard, &facts) {
            Decision::Skip(reason) => {
                if reason.is_target() {
                    info!(
                        pid = pinned.id.pid,
                        "Skipping PID {} ({}): {reason}",
                        pinned.id.pid,
                        comm(&pinned)
                    );
                } else {
                    debug!(
                        pid = pinned.id.pid,
                        "Skipping PID {}: {reason}", pinned.id.pid
                    );
                }
                self.scanner.mark_seen(&pinned.stat);
                self.continue_if_stopped(&pinned, notice.as_ref());
                Looked::NotNow
            }
            Decision::Defer { target, remaining } => {
                info!(
                    pid = pinned.id.pid,
                    "PID {} ({}) matches {} but has not run min_runtime yet; placing it in {}",
                    pinned.id.pid,
                    comm(&pinned),
                    target.name,
                    format_go_duration(remaining)
                );
                // min_runtime outranks strict placement: a deferred process runs meanwhile.
                self.continue_if_stopped(&pinned, notice.as_ref());
                let notice = notice.map(|mut n| {
                    n.stopped = false;
                    n
                });
                if self.pending.insert(pinned.id) {
                    self.pending.insert(pinned.id);
                    self.timers.insert(
                        (Instant::now() + remaining, pinned.id),
                        Timed::Defer(pinned.id, notice),
                    );
                }
                Looked::NotNow
            }
            Decision::Govern(target) => {
                let spec = JobSpec {
                    job_id: auto_job_id(&target.name, pinned.id.pid),
                    command: target.name.clone(),
                    limits: target.limits.clone(),
                };
                self.state.statistics.total_discovered += 1;
                self.telemetry().discovered += 1;
                self.place(pinned, spec, 0, notice);
                Looked::Governing
            }
        }
    }

    pub(super) fn place(
        &mut self,
        pinned: Pinned,
        spec: JobSpec,
        attempt: u32,
        notice: Option<ExecNotice>,
    ) {
        let pid = pinned.id.pid;
        let cgroup = self.placer.cgroup_of(&spec.job_id);
        // The predecessor's "Attaching to PID …" line; written once the move is verified
        // (or failed), so logging never delays a placement.
        let attaching = |attempt: u32| {
            if attempt == 0 {
                info!(pid, job = %spec.job_id, command = %spec.command, "Attaching to PID {pid} ({}) as job {}", spec.command, spec.job_id);
            }
        };
        if self.opts.dry_run {
            attaching(attempt);
            info!(pid, job = %spec.job_id, "dry-run: would place PID {pid} into {cgroup} with {}", spec.limits);
            self.scanner.mark_seen(&pinned.stat);
            self.continue_if_stopped(&pinned, notice.as_ref());
            return;
        }
        let placed = self.placer.place(&pinned, &spec);
        attaching(attempt);
        match placed {
            Ok(pl) => {
                self.continue_if_stopped(&pinned, notice.as_ref());
                let latency = notice
                    .as_ref()
                    .and_then(|n| n.exec_mono_ns)
                    .map(|t| pl.verified_mono_ns.saturating_sub(t));
                {
                    let mut t = self.telemetry();
                    if let Some(l) = latency {
                        t.exec_to_placed.observe(l as f64 / 1e9);
                    }
                    *t.placements
                        .entry(if pl.failed.is_empty() {
                            "placed"
                        } else {
                            "partial"
                        })
                        .or_default() += 1;
                    t.limit_failures += pl.failed.len() as u64;
                }
                let latency_text = latency.map_or(String::new(), |l| {
                    format!(" (exec→placed {:.3}ms)", l as f64 / 1e6)
                });
                info!(
                    pid,
                    job = %pl.job_id,
                    command = %spec.command,
                    latency_us = latency.map(|l| l / 1000),
                    "Limits applied to PID {pid} (job {}) in {}: {} in {:.3}ms{latency_text}",
                    pl.job_id,
                    pl.cgroup,
                    if pl.applied.is_empty() { "no limits configured".to_string() } else { pl.applied.join(" ") },
                    pl.took.as_secs_f64() * 1e3
                );
                for (label, e) in &pl.failed {
                    self.state.statistics.total_limit_failures += 1;
                    error!(pid, job = %pl.job_id, "Limit {label} NOT applied to PID {pid} (job {}): {e}", pl.job_id);
                }
                let moved = self.placer.move_descendants(pid, &pl.cgroup);
                // Replace the spare cgroup this placement may have used (off the latency path).
                self.chores.push_back(Chore::Refill(spec.limits.clone()));
                if moved > 0 {
                    info!(
                        pid,
                        "Moved {moved} child process(es) of PID {pid} into {}", pl.cgroup
                    );
                }
                self.state.statistics.total_attachments += 1;
                self.health_placement(true);
                if self.health.limits(pl.failed.len()).is_some() {
                    self.log_health();
                }
                let now = Utc::now();
                let record = ProcessRecord {
                    pid,
                    job_id: pl.job_id.clone(),
                    command: spec.command.clone(),
                    discovered_at: now,
                    attached_at: Some(now),
                    last_seen_at: Some(now),
                    start_time: Some(pinned.id.start_time),
                    cgroup: Some(pl.cgroup.clone()),
                    exe: self
                        .placer
                        .proc()
                        .exe(pid)
                        .ok()
                        .map(|p| p.display().to_string()),
                    limits: Some(spec.limits.clone()),
                };
                self.adopt(pinned, pl.cgroup, record);
            }
            Err(e) => match e.class {
                Class::Vanished => {
                    self.continue_if_stopped(&pinned, notice.as_ref());
                    *self.telemetry().placements.entry("vanished").or_default() += 1;
                    debug!(
                        pid,
                        "PID {pid} exited before placement finished; nothing to do ({e})"
                    );
                }
                Class::Retryable if attempt < self.settings.max_retry_attempts => {
                    // Never hold a stopped process through a backoff.
                    self.continue_if_stopped(&pinned, notice.as_ref());
                    let notice = notice.map(|mut n| {
                        n.stopped = false;
                        n
                    });
                    let delay = backoff(
                        attempt + 1,
                        pinned.id.start_time ^ u64::from(pid) ^ u64::from(attempt),
                    );
                    warn!(pid, job = %spec.job_id, "Placing PID {pid} failed ({e}); retry {} of {} in {}", attempt + 1, self.settings.max_retry_attempts, format_go_duration(delay));
                    *self.telemetry().placements.entry("retried").or_default() += 1;
                    self.timers.insert(
                        (Instant::now() + delay, pinned.id),
                        Timed::Retry(pinned, spec, attempt + 1, notice),
                    );
                }
                _ => {
                    self.continue_if_stopped(&pinned, notice.as_ref());
                    let tries = if e.class == Class::Retryable {
                        format!(" after {} attempt(s)", attempt + 1)
                    } else {
                        String::new()
                    };
                    error!(pid, job = %spec.job_id, "Failed to place PID {pid} ({}) as job {}{tries}: {e}", spec.command, spec.job_id);
                    self.state.statistics.total_placement_failures += 1;
                    *self.telemetry().placements.entry("failed").or_default() += 1;
                    // Not for ever: the cause may be fixed (a controller enabled, a cgroup
                    // limit raised); the scan tries it again after a while.
                    let again = self.scan_period().max(std::time::Duration::from_secs(60));
                    self.failed.insert(pinned.id, Instant::now() + again);
                    self.health_placement(false);
                }
            },
        }
    }

    /// Record a governed process and watch for its exit.
    pub(super) fn adopt(&mut self, pinned: Pinned, cgroup: String, record: ProcessRecord) {
        let id = pinned.id;
        let exit_watch = self.watch_exit(pinned.pidfd, id);
        if let Some(old) = self.governed.insert(
            id.pid,
            Governed {
                id,
                cgroup,
                record,
                exit_watch,
            },
        ) {
            old.exit_watch.abort();
        }
        self.mark_dirty();
        self.republish = true;
    }

    pub(super) fn health_placement(&mut self, ok: bool) {
        if self.health.placement(ok).is_some() {
            self.log_health();
        }
    }

    pub(super) fn log_health(&mut self) {
        let line = self.health.line();
        match self.health.status {
            crate::record::health::HealthStatus::Healthy => info!("{line}"),
            _ => warn!("{line}"),
        }
        self.mark_dirty();
        self.republish = true;
    }

    /// SIGCONT a process the kernel stopped for strict placement. Always called on every
    /// path out of a stopped process's handling.
    pub(super) fn continue_if_stopped(&self, pinned: &Pinned, notice: Option<&ExecNotice>) {
        if notice.is_some_and(|n| n.stopped) {
            if let Err(e) = pinned.pidfd.signal(libc::SIGCONT) {
                if e.raw_os_error() != Some(libc::ESRCH) {
                    error!(
                        pid = pinned.id.pid,
                        "Cannot continue stopped PID {}: {e}", pinned.id.pid
                    );
                }
            }
        }
    }

    pub(super) fn on_exit(&mut self, id: ProcessId) {
        let Some(g) = self.governed.get(&id.pid) else {
            return;
        };
        if g.id != id {
            return;
        }
        let g = self.governed.remove(&id.pid).expect("present");
        g.exit_watch.abort();
        info!(pid = id.pid, job = %g.record.job_id, "PID {} ({}) exited; job {} ended", id.pid, g.record.command, g.record.job_id);
        self.mark_dirty();
        self.republish = true;
        if !self.opts.dry_run {
            self.chores.push_back(Chore::Remove(g.cgroup));
        }
    }

    /// One piece of deferred work, done when no event is waiting: keeps rmdir and spare
    /// creation off the path of the next placement.
    pub(super) fn do_chore(&mut self) {
        match self.chores.pop_front() {
            Some(Chore::Refill(limits)) => {
                self.placer.refill_spares(std::iter::once(&limits));
            }
            Some(Chore::Remove(cgroup)) => self.remove_job_cgroup(cgroup),
            None => {}
        }
    }

    fn remove_job_cgroup(&mut self, cgroup: String) {
        match self.placer.remove_if_empty(&cgroup) {
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

    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (_, id) = *entry.key();
            self.pending.remove(&id);
            match entry.remove() {
                Timed::Defer(id, notice) => match self.placer.proc().pin(id.pid) {
                    // Facts may have changed while it ran (cwd, parent): decide again.
                    Ok(pinned) if pinned.id == id => {
                        self.look_at(pinned, notice);
                    }
                    // Exited, or the PID now belongs to another process.
                    _ => {}
                },
                Timed::Retry(pinned, spec, attempt, notice) => {
                    self.place(pinned, spec, attempt, notice)
                }
            }
        }
    }
}

fn comm(p: &Pinned) -> String {
    String::from_utf8_lossy(&p.stat.comm).into_owned()
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        for seed in [1u64, 7, 12345, u64::MAX] {
            for attempt in 1..=12 {
                let base = (50u64 << (attempt - 1)).min(5000);
                let d = backoff(attempt, seed);
                assert!(
                    d >= Duration::from_millis(base / 2),
                    "{attempt} {seed} {d:?}"
                );
                assert!(
                    d <= Duration::from_millis(base * 3 / 2),
                    "{attempt} {seed} {d:?}"
                );
            }
        }
        assert_ne!(backoff(3, 1), backoff(3, 2), "jitter varies with the seed");
    }
}
