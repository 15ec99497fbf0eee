//! What the journal writes down for each engine outcome: the log lines operators grep for
//! (the predecessor's among them), the tally, health, the governed jobs and their exit
//! watches, and the chores a placement leaves (a spare to replace); and what the sources
//! report besides execs.

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::{Effect, Effects, Journal};
use crate::config::units::format_go_duration;
use crate::daemon::chores::Chore;
use crate::engine::{Outcome, Placed};
use crate::placer::Naming;
use crate::process::{PidFd, ProcessId};
use crate::record::state::ProcessRecord;
use crate::record::tally::Count;
use crate::sources::SourceEvent;

impl Journal {
    /// What a source reports besides execs.
    pub fn source_event(&mut self, ev: SourceEvent, fx: &mut Effects) {
        match ev {
            SourceEvent::Lost { source, count } => {
                self.tally.add(Count::EventsLost, count);
                self.mark_dirty();
                warn!(
                    source,
                    lost = count,
                    "Event source {source} lost {count} event(s); reconciling now"
                );
                fx.push(Effect::Scan {
                    reason: "events lost",
                    full: true,
                });
            }
            SourceEvent::HeldAtExec(v) => {
                self.stored.held_at_exec = v;
                self.mark_dirty();
            }
            SourceEvent::StopsFailed { source, count } => warn!(
                source,
                count,
                "Event source {source}: {count} strict target(s) could not be stopped at exec (bpf_send_signal failed or the ledger of stops is full); they ran before their placement"
            ),
        }
    }

    /// A process placed at the gate, looked at again: its exec went through, or it
    /// failed and the process was moved back (its job ends).
    fn exec_checked(&mut self, o: Outcome, fx: &mut Effects) {
        let Outcome::ExecChecked {
            id,
            job_id,
            command,
            exe,
            home,
        } = o
        else {
            return;
        };
        let pid = id.pid;
        self.tally.add(Count::GateExecsChecked, 1);
        let Some(home) = home else {
            return debug!(
                pid,
                "PID {pid} became {command}: its exec of {exe} went through"
            );
        };
        match home {
            Ok(home) => {
                self.tally.placement("moved_back");
                info!(pid, job = %job_id, "PID {pid} did not become {command}: its exec of {exe} failed after the gate placed it; moved back to {home}; job {job_id} ended");
                self.end_job(id, fx);
            }
            Err(e) => {
                warn!(pid, job = %job_id, "PID {pid} did not become {command}: its exec of {exe} failed after the gate placed it, and it cannot be moved back ({e}); it stays in job {job_id} until it exits")
            }
        }
    }

    /// One outcome of the engine, written down.
    pub fn apply(&mut self, o: Outcome, fx: &mut Effects) {
        match o {
            Outcome::Discovered { .. } => {
                self.tally.add(Count::Discovered, 1);
                self.mark_dirty();
            }
            Outcome::Placed(p) => self.placed(*p, fx),
            Outcome::InService(s) => self.in_service(*s, fx),
            Outcome::Readopted {
                id,
                pidfd,
                record,
                untracked,
            } => self.readopted(id, pidfd, record, untracked, fx),
            Outcome::Dropped { pid, job_id, why } => {
                info!(pid, "Dropping PID {pid} (job {job_id}): {why}");
            }
            Outcome::Skipped { stat, reason } => {
                if reason.is_counted() {
                    self.tally.skip(reason.label());
                }
                log_skipped(&stat, &reason);
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
                self.tally.placement("retried");
                warn!(pid, job = %job_id, "Placing PID {pid} failed ({error}); retry {attempt} of {max} in {}", format_go_duration(delay));
            }
            Outcome::Failed {
                pid,
                job_id,
                command,
                error,
                attempts,
            } => {
                log_failed(pid, &job_id, &command, &error, attempts);
                self.tally.placement("failed");
                self.mark_dirty();
                self.placement_health(false);
            }
            checked @ Outcome::ExecChecked { .. } => self.exec_checked(checked, fx),
            Outcome::Vanished { pid, why } => {
                self.tally.placement("vanished");
                debug!(pid, "PID {pid}: nothing to do, {why}");
            }
            Outcome::Undecodable { error } => self.undecodable("ebpf", &error, fx),
            Outcome::NotPinned {
                pid,
                error,
                again_in,
            } => not_pinned(pid, &error, again_in),
            Outcome::SparesLeft(v) => fx.push(Effect::Chore(Chore::RemoveSpares(v))),
            Outcome::SparesUsed(v) => fx.push(Effect::Chore(Chore::Refill(v))),
            dry @ Outcome::DryRun { .. } => log_dry_run(dry),
        }
    }

    fn readopted(
        &mut self,
        id: ProcessId,
        pidfd: Option<PidFd>,
        mut record: ProcessRecord,
        untracked: bool,
        fx: &mut Effects,
    ) {
        log_readopted(id.pid, &record, untracked);
        // A service whose values from before are not kept (put back meanwhile): limited
        // again, its values read afresh.
        let unit = super::services::unit_of(&record);
        if unit.is_some_and(|u| !self.stored.units.contains_key(u)) {
            record.limits = None;
        }
        self.add_job(id, pidfd, record, fx);
        // Its limits are brought to the config by a pass (one for all taken back).
        fx.push(Effect::Scan {
            reason: "limits of jobs taken back",
            full: false,
        });
    }

    fn placed(&mut self, p: Placed, fx: &mut Effects) {
        let Placed {
            id,
            pidfd,
            spec,
            placement: pl,
            exe,
            ..
        } = p;
        let pid = id.pid;
        // The predecessor's "Attaching to PID …" line; written once the move is verified,
        // so logging never delays a placement.
        info!(pid, job = %spec.job_id, command = %spec.command, "Attaching to PID {pid} ({}) as job {}", spec.command, spec.job_id);
        // A held exec's wait is the gate's histogram, not exec → placed.
        let held = p.source == crate::sources::gate::SOURCE;
        if let Some(l) = p.latency_ns.filter(|_| !held) {
            self.tally.exec_to_placed.observe(l as f64 / 1e9);
        }
        self.tally.placement(if pl.failed.is_empty() {
            "placed"
        } else {
            "partial"
        });
        self.tally.add(Count::LimitFailures, pl.failed.len() as u64);
        log_placed(
            pid,
            &spec.command,
            &pl,
            p.latency_ns,
            (p.read_ns, p.receipt_ns),
            held,
        );
        for (label, e) in &pl.failed {
            error!(pid, job = %pl.job_id, "Limit {label} NOT applied to PID {pid} (job {}): {e}", pl.job_id);
        }
        say_cgroup_made(pid, &pl);
        if p.children > 0 {
            info!(
                pid,
                "Moved {} child process(es) of PID {pid} into {}", p.children, pl.cgroup
            );
        }
        // Replace the spare cgroup this placement may have used (off the placement thread);
        // a pooled job's cgroup is never a spare.
        if spec.pool.is_none() {
            fx.push(Effect::Chore(Chore::Refill(vec![(spec.limits.clone(), 1)])));
        }
        self.placement_health(true);
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
            limits: Some(spec.limits),
        };
        self.add_job(id, pidfd, record, fx);
    }

    pub(super) fn placement_health(&mut self, ok: bool) {
        if self.health.placement(ok).is_some() {
            self.log_health();
        }
    }
}

fn log_readopted(pid: u32, record: &ProcessRecord, untracked: bool) {
    let cgroup = record.cgroup.as_deref().unwrap_or_default();
    if untracked {
        info!(pid, job = %record.job_id, "Re-adopted untracked PID {pid} ({}) found in {cgroup}", record.command);
    } else {
        info!(pid, job = %record.job_id, "Re-adopted PID {pid} ({}) in {cgroup} without moving it", record.command);
    }
}

fn log_skipped(stat: &crate::process::Stat, reason: &crate::matcher::Skip) {
    let pid = stat.pid;
    if reason.is_target() {
        info!(
            pid,
            "Skipping PID {pid} ({}): {reason}",
            String::from_utf8_lossy(&stat.comm)
        );
    } else {
        debug!(pid, "Skipping PID {pid}: {reason}");
    }
}

fn log_failed(
    pid: u32,
    job_id: &crate::job::JobId,
    command: &str,
    error: &crate::placer::PlaceError,
    attempts: u32,
) {
    let tries = if attempts > 1 {
        format!(" after {attempts} attempt(s)")
    } else {
        String::new()
    };
    info!(pid, job = %job_id, command = %command, "Attaching to PID {pid} ({command}) as job {job_id}");
    error!(pid, job = %job_id, "Failed to place PID {pid} ({command}) as job {job_id}{tries}: {error}");
}

/// What placing found of the cgroups around the job: a root made again, a spare's name.
fn say_cgroup_made(pid: u32, pl: &crate::placer::Placement) {
    if pl.root_recreated {
        warn!(
            "The cgroup root {} was gone (removed by another tool while ffrtmp ran); made it again, with its controllers, for job {}",
            pl.cgroup.rsplit_once('/').map_or("", |(root, _)| root),
            pl.job_id
        );
    }
    match &pl.naming {
        Naming::AsJob => {}
        Naming::LeftoverRemoved(leftover) => info!(
            pid,
            "Removed the empty cgroup {leftover}, left by a placement cut short, to give job {} its name",
            pl.job_id
        ),
        Naming::SpareKept(e) => warn!(
            pid,
            "Cannot name {} {}: {e}; the job keeps that cgroup", pl.cgroup, pl.job_id
        ),
    }
}

/// The predecessor's "Limits applied" line, with the latency's parts.
fn log_placed(
    pid: u32,
    command: &str,
    pl: &crate::placer::Placement,
    latency_ns: Option<u64>,
    (read_ns, receipt_ns): (Option<u64>, Option<u64>),
    held: bool,
) {
    let latency_text = match (latency_ns, receipt_ns) {
        (Some(l), r) if held => format!(
            " (held at exec: read→placed {:.3}ms{}; it ran nothing outside its cgroup)",
            l as f64 / 1e6,
            r.map_or(String::new(), |r| format!(
                ", taken {:.3}ms",
                r as f64 / 1e6
            ))
        ),
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
        command = %command,
        latency_us = latency_ns.map(|l| l / 1000),
        "Limits applied to PID {pid} (job {}) in {}: {} in {:.3}ms{latency_text}",
        pl.job_id,
        pl.cgroup,
        if pl.applied.is_empty() { "no limits configured".to_string() } else { pl.applied.join(" ") },
        pl.took.as_secs_f64() * 1e3
    );
}

fn not_pinned(pid: u32, error: &str, again_in: Option<std::time::Duration>) {
    match again_in {
        Some(d) => warn!(
            pid,
            "Cannot pin PID {pid} yet: {error}; trying again every {} until a descriptor is free",
            format_go_duration(d)
        ),
        None => warn!(
            pid,
            "Cannot pin PID {pid}: {error}; leaving it to the reconciliation scan"
        ),
    }
}

fn log_dry_run(o: Outcome) {
    if let Outcome::DryRun {
        pid,
        job_id,
        command,
        cgroup,
        limits,
        in_service,
    } = o
    {
        info!(pid, job = %job_id, command = %command, "Attaching to PID {pid} ({command}) as job {job_id}");
        if in_service {
            info!(pid, job = %job_id, "dry-run: would leave PID {pid} in its service ({cgroup}) and limit the unit {job_id} with {limits} (services: limit_unit)");
        } else {
            info!(pid, job = %job_id, "dry-run: would place PID {pid} into {cgroup} with {limits}");
        }
    }
}
