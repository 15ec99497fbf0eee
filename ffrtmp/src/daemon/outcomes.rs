//! What the record loop does with each engine outcome: the log lines operators grep for
//! (the predecessor's among them), statistics, health, metrics, the journal of governed
//! processes and their exit watches, and the housekeeping a placement leaves (a spare to
//! replace, a cgroup to remove once its job ends).

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::{Chore, Daemon, Journaled};
use crate::config::units::format_go_duration;
use crate::engine::{Outcome, Placed, Work};
use crate::process::{PidFd, ProcessId};
use crate::record::health::HealthStatus;
use crate::record::metrics::JobInfo;
use crate::record::state::ProcessRecord;
use crate::sources::scan::Note;

/// Outcomes held at most this many before they are written down regardless of the pause.
const HELD_MAX: usize = 256;

impl Daemon {
    /// An outcome from the engine. It is written down (log line, journal, exit watch,
    /// metrics) once placements pause (`Options::quiet`), as chores are: that work would
    /// otherwise take the CPU beside the target that has just been placed, or from the next
    /// placement. It waits at most `CHORE_MAX_WAIT`, and whatever reads the journal first
    /// takes in what is held (`release_outcomes`), so nothing acts on a journal behind the
    /// engine's table.
    pub(super) fn hold(&mut self, o: Outcome) {
        let now = std::time::Instant::now();
        self.last_outcome = now;
        self.held_since.get_or_insert(now);
        self.held.push(o);
        if self.held.len() >= HELD_MAX {
            self.release_outcomes();
        }
    }

    /// Write down every held outcome, in the order the engine sent them.
    pub(super) fn release_outcomes(&mut self) {
        let Some(since) = self.held_since.take() else {
            return;
        };
        for o in std::mem::take(&mut self.held) {
            self.on_outcome(o);
        }
        // A chore these outcomes queued (a spare to replace) has waited since they did:
        // its bound counts from then, not from now.
        if !self.chores.is_empty() {
            self.chores_since = Some(self.chores_since.map_or(since, |c| c.min(since)));
        }
    }

    pub(super) fn on_outcome(&mut self, o: Outcome) {
        match o {
            Outcome::Discovered { .. } => {
                self.state.statistics.total_discovered += 1;
                self.telemetry().discovered += 1;
            }
            Outcome::Placed(p) => self.on_placed(*p),
            Outcome::Readopted {
                id,
                pidfd,
                record,
                applied,
                untracked,
            } => {
                for (label, err) in applied {
                    match err {
                        None => info!(pid = id.pid, "Applied {label} to predecessor job {}", record.job_id),
                        Some(e) => error!(pid = id.pid, "Limit {label} NOT applied to predecessor job {}: {e}", record.job_id),
                    }
                }
                let cgroup = record.cgroup.as_deref().unwrap_or_default();
                if untracked {
                    info!(pid = id.pid, job = %record.job_id, "Re-adopted untracked PID {} ({}) found in {cgroup}", id.pid, record.command);
                } else {
                    info!(pid = id.pid, job = %record.job_id, "Re-adopted PID {} ({}) in {cgroup} without moving it", id.pid, record.command);
                }
                self.journal_add(id, pidfd, record);
            }
            Outcome::Dropped { pid, job_id, why } => {
                info!(pid, "Dropping PID {pid} (job {job_id}): {why}");
            }
            Outcome::Skipped { stat, reason } => {
                let pid = stat.pid;
                if reason.is_counted() {
                    *self.telemetry().skipped.entry(reason.label()).or_default() += 1;
                }
                if reason.is_target() {
                    info!(
                        pid,
                        "Skipping PID {pid} ({}): {reason}",
                        String::from_utf8_lossy(&stat.comm)
                    );
                } else {
                    debug!(pid, "Skipping PID {pid}: {reason}");
                }
                self.tell_scanner(Note::Seen(stat));
            }
            Outcome::Deferred {
                pid,
                comm,
                target,
                remaining,
            } => info!(
                pid,
                "PID {pid} ({comm}) matches {target} but has not run min_runtime yet; placing it in {}",
                format_go_duration(remaining)
            ),
            Outcome::Retrying {
                pid,
                job_id,
                error,
                attempt,
                max,
                delay,
            } => {
                *self.telemetry().placements.entry("retried").or_default() += 1;
                warn!(pid, job = %job_id, "Placing PID {pid} failed ({error}); retry {attempt} of {max} in {}", format_go_duration(delay));
            }
            Outcome::Failed {
                pid,
                job_id,
                command,
                error,
                attempts,
            } => {
                let tries = if attempts > 1 {
                    format!(" after {attempts} attempt(s)")
                } else {
                    String::new()
                };
                info!(pid, job = %job_id, command = %command, "Attaching to PID {pid} ({command}) as job {job_id}");
                error!(pid, job = %job_id, "Failed to place PID {pid} ({command}) as job {job_id}{tries}: {error}");
                self.state.statistics.total_placement_failures += 1;
                *self.telemetry().placements.entry("failed").or_default() += 1;
                self.health_placement(false);
            }
            Outcome::Vanished { pid, why } => {
                *self.telemetry().placements.entry("vanished").or_default() += 1;
                debug!(pid, "PID {pid}: nothing to do, {why}");
            }
            Outcome::Undecodable { error } => self.undecodable("ebpf", &error),
            Outcome::NotPinned { pid, error } => {
                warn!(pid, "Cannot pin PID {pid}: {error}; leaving it to the reconciliation scan");
            }
            Outcome::DryRun {
                pid,
                job_id,
                command,
                cgroup,
                limits,
            } => {
                info!(pid, job = %job_id, command = %command, "Attaching to PID {pid} ({command}) as job {job_id}");
                info!(pid, job = %job_id, "dry-run: would place PID {pid} into {cgroup} with {limits}");
            }
        }
    }

    fn on_placed(&mut self, p: Placed) {
        let Placed {
            id,
            pidfd,
            spec,
            placement: pl,
            latency_ns,
            read_ns,
            receipt_ns,
            children,
            exe,
            ..
        } = p;
        let pid = id.pid;
        // The predecessor's "Attaching to PID …" line; written once the move is verified,
        // so logging never delays a placement.
        info!(pid, job = %spec.job_id, command = %spec.command, "Attaching to PID {pid} ({}) as job {}", spec.command, spec.job_id);
        {
            let mut t = self.telemetry();
            if let Some(l) = latency_ns {
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
        let latency_text = match (latency_ns, receipt_ns) {
            (Some(l), Some(r)) => format!(
                " (exec→placed {:.3}ms; read {:.3}ms, received {:.3}ms)",
                l as f64 / 1e6,
                read_ns.unwrap_or(r) as f64 / 1e6,
                r as f64 / 1e6
            ),
            (Some(l), None) => format!(" (exec→placed {:.3}ms)", l as f64 / 1e6),
            _ => String::new(),
        };
        info!(
            pid,
            job = %pl.job_id,
            command = %spec.command,
            latency_us = latency_ns.map(|l| l / 1000),
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
        if children > 0 {
            info!(
                pid,
                "Moved {children} child process(es) of PID {pid} into {}", pl.cgroup
            );
        }
        // Replace the spare cgroup this placement may have used (off the placement thread).
        if !self.opts.dry_run {
            self.chores
                .push_back(Chore::Refill(vec![spec.limits.clone()]));
        }
        self.state.statistics.total_attachments += 1;
        self.health_placement(true);
        if self.health.limits(pl.failed.len()).is_some() {
            self.log_health();
        }
        let now = Utc::now();
        let record = ProcessRecord {
            pid,
            job_id: pl.job_id.as_str().into(),
            command: spec.command.as_str().into(),
            discovered_at: now,
            attached_at: Some(now),
            last_seen_at: Some(now),
            start_time: Some(id.start_time),
            cgroup: Some(pl.cgroup.as_str().into()),
            exe,
            limits: Some(spec.limits.clone()),
        };
        self.journal_add(id, pidfd, record);
    }

    /// Record a governed process and watch for its exit (no polling: its pidfd joins the
    /// exit set's epoll set).
    fn journal_add(&mut self, id: ProcessId, pidfd: PidFd, record: ProcessRecord) {
        if let Some(exits) = self.exits.as_mut() {
            if let Err(e) = exits.watch(id, pidfd) {
                // Its exit is then noticed by the next scan that misses it.
                warn!(
                    pid = id.pid,
                    "cannot watch PID {} for its exit: {e}", id.pid
                );
            }
        }
        self.telemetry().jobs.insert(
            id.pid,
            Box::new(JobInfo {
                job_id: record.job_id.clone(),
                command: record.command.clone(),
                pid: id.pid,
                cgroup: record.cgroup.clone().unwrap_or_default(),
                limits: record.limits.clone(),
            }),
        );
        self.journal
            .insert(id.pid, Box::new(Journaled { id, record }));
        self.mark_dirty();
        self.republish = true;
    }

    pub(super) fn on_exit(&mut self, id: ProcessId) {
        if self.journal.get(&id.pid).is_none_or(|g| g.id != id) {
            return;
        }
        let g = self.journal.remove(&id.pid).expect("present");
        if let Some(exits) = self.exits.as_mut() {
            exits.unwatch(id.pid);
        }
        self.telemetry().job_exited(id.pid);
        info!(pid = id.pid, job = %g.record.job_id, "PID {} ({}) exited; job {} ended", id.pid, g.record.command, g.record.job_id);
        self.work(Work::Exited(id));
        self.mark_dirty();
        self.republish = true;
        self.remove_later(id.pid, g.cgroup().to_string());
    }

    pub(super) fn health_placement(&mut self, ok: bool) {
        if self.health.placement(ok).is_some() {
            self.log_health();
        }
    }

    pub(super) fn log_health(&mut self) {
        let line = self.health.line();
        match self.health.status {
            HealthStatus::Healthy => info!("{line}"),
            _ => warn!("{line}"),
        }
        self.mark_dirty();
        self.republish = true;
    }
}
