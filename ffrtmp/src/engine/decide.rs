//! What the engine does with each report of a process: an exec notice (pinned, checked
//! against its start time, decided), a scan's candidate (answered from the table when it is
//! known or was skipped as it is), a stop left by a dead daemon, other work.

use std::time::Instant;

use super::{skip_memory, Engine, Origin, Outcome, FRESH_AGE, FRESH_WAIT};
use crate::exec::{ExecNotice, Work};
use crate::job::JobId;
use crate::matcher::{decide, Decision, Guard, Skip};
use crate::placer::JobSpec;
use crate::process::{
    is_gone, monotonic_ns, out_of_descriptors, Known, Pinned, ProcessId, Stopped,
};

impl Engine {
    pub(super) fn on_work(&mut self, w: Work) {
        match w {
            Work::Candidate(stat) => {
                let id = ProcessId {
                    pid: stat.pid,
                    start_time: stat.start_time,
                };
                // Decided on already: governed, pending, or skipped as it is now. The scan
                // reports every target it sees; this table alone remembers the skips.
                if self.table.knows(id) || self.table.skipped_as(id, &stat.comm, Instant::now()) {
                    return;
                }
                // Started moments ago: the scan may have read it between its exec and the
                // kernel's exec hook (the comm changes first). Its exec event, if one is on
                // its way, places it; otherwise the scan's finding does, a little later.
                if self.rules.exec_hook && self.proc.age(id.start_time) < FRESH_AGE {
                    self.table.fresh(id, Instant::now() + FRESH_WAIT);
                    return;
                }
                self.scanned(id);
            }
            Work::Exited(id) => self.table.exited(id),
            Work::Adopt {
                pid,
                cgroup,
                job_id,
                command,
            } => self.adopt_untracked(pid, &cgroup, job_id.as_str(), &command),
            Work::Orphan(stop) => self.on_orphan(stop),
            Work::Spares(v) => self.keep_spares(v),
            Work::Reload(s) => {
                self.table.forget_skips(skip_memory(&s));
                self.settings = s;
                // Limits may have changed: the spares carry the old ones.
                let old: Vec<String> = self.spares.drain().into_iter().map(|s| s.cgroup).collect();
                if !old.is_empty() {
                    self.emit(Outcome::SparesLeft(old));
                }
            }
            Work::Shutdown => {}
        }
    }

    /// Spares for the pool; those it has no room for go back, to be removed.
    pub(super) fn keep_spares(&mut self, v: Vec<(crate::config::Limits, crate::placer::Spare)>) {
        let extra: Vec<String> = v
            .into_iter()
            .filter_map(|(l, s)| self.spares.put(l, s).map(|s| s.cgroup))
            .collect();
        if !extra.is_empty() {
            self.emit(Outcome::SparesLeft(extra));
        }
    }

    /// A process a scan found: looked at on its /proc facts unless it exited, its PID is
    /// another process's now, or the table knows it.
    pub(super) fn scanned(&mut self, id: ProcessId) {
        let pinned = match self.proc.pin(id.pid) {
            Ok(p) => p,
            Err(e) if out_of_descriptors(&e) => return self.pin_later(id, &e, true),
            Err(_) => return, // exited since the scan listed it
        };
        if pinned.id != id
            || self.table.knows(id)
            || self.table.skipped_as(id, &pinned.stat.comm, Instant::now())
        {
            return;
        }
        self.look_at(pinned, &Known::default(), Origin::from_proc("scan"));
    }

    pub(super) fn on_exec(&mut self, n: ExecNotice) {
        self.out.counts.count(n.source);
        let ExecNotice {
            pid,
            start_ns,
            known,
            exec_mono_ns,
            read_mono_ns,
            stop,
            gated,
            source,
            ..
        } = n;
        let origin = Origin {
            exec_mono_ns,
            read_mono_ns,
            taken_mono_ns: Some(monotonic_ns()),
            source,
            stop,
            gated,
        };
        // A strict target's claim has already pinned it and read its stat.
        let claimed = origin.stop.as_ref().filter(|s| s.pid() == pid);
        let pinned = match claimed.and_then(Stopped::pin) {
            Some(p) => Ok(p),
            None => self.proc.pin(pid),
        };
        let mut pinned = match pinned {
            Ok(p) => p,
            Err(e) if is_gone(&e) => {
                return self.emit(Outcome::Vanished {
                    pid,
                    why: format!("it exited before it could be pinned ({e})"),
                })
            }
            // Out of descriptors for a moment (a burst at a low open-files limit): looked at
            // again shortly, by the identity its event gave. A stopped one runs meanwhile.
            Err(e) if out_of_descriptors(&e) && start_ns.is_some() => {
                let start_time = start_ns.map_or(0, |ns| self.proc.ticks_from_ns(ns));
                return self.pin_later(ProcessId { pid, start_time }, &e, true);
            }
            // Not gone, but it cannot be pinned (memory…): the reconciliation scan will find
            // it; a stopped one runs meanwhile (dropped here).
            Err(e) => {
                return self.emit(Outcome::NotPinned {
                    pid,
                    error: e.to_string(),
                    again_in: None,
                })
            }
        };
        // The exec'd process is gone and its PID is another's, or the two clocks disagree:
        // either way the process that has the PID now is judged on its own /proc facts
        // (the event's are not its), never silently dropped.
        let (known, mut origin) = match start_ns.map(|ns| self.proc.ticks_from_ns(ns)) {
            Some(ticks) if ticks != pinned.id.start_time => {
                tracing::debug!(
                    pid,
                    "PID {pid}: the exec event's start ({ticks} ticks) is not the process's ({}); deciding on /proc",
                    pinned.id.start_time
                );
                drop(origin.stop);
                (Known::default(), Origin::from_proc(source))
            }
            _ => (known, origin),
        };
        // Held at the gate, it still shows its parent's comm: it is the marked binary's
        // target (the comm its exec will give it), so it is matched and remembered by that.
        if let Some(g) = origin.gated.as_mut() {
            let t = g.held().target.as_bytes();
            let target = t[..t.len().min(crate::matcher::COMM_MAX)].to_vec();
            g.old_comm = std::mem::replace(&mut pinned.stat.comm, target);
        }
        // Governed already (a governed process exec'd again: it stays in its cgroup), or
        // waiting for a timer that will look at it again.
        if self.table.knows(pinned.id) {
            return;
        }
        self.look_at(pinned, &known, origin);
    }

    /// Pin `id` again after `PIN_AGAIN` (a min_runtime look, at once): placing goes on at
    /// any open-files limit, as descriptors come free. The first time is said (`first`),
    /// not every try.
    pub(super) fn pin_later(&mut self, id: ProcessId, e: &std::io::Error, first: bool) {
        if self.table.knows(id) || !self.table.defer(id, Instant::now() + PIN_AGAIN, "repin") {
            return;
        }
        if first {
            self.emit(Outcome::NotPinned {
                pid: id.pid,
                error: e.to_string(),
                again_in: Some(PIN_AGAIN),
            });
        }
    }

    fn on_orphan(&mut self, stop: Stopped) {
        if !stop.is_present() {
            return; // gone; dropping the value clears its ledger entry
        }
        let id = stop.id(&self.proc);
        let pinned = match self.proc.pin(id.pid) {
            Ok(p) if p.id == id => p,
            _ => return,
        };
        if self.table.knows(id) {
            return;
        }
        self.look_at(
            pinned,
            &Known::default(),
            Origin {
                stop: Some(stop),
                ..Origin::from_proc("ledger")
            },
        );
    }

    /// Decide on a pinned process and act on the decision.
    pub(super) fn look_at(&mut self, pinned: Pinned, known: &Known, origin: Origin) {
        let needs = crate::matcher::needs(&self.settings.targets, &pinned.stat.comm);
        let facts = match self.proc.facts(pinned.stat.clone(), needs, known) {
            Ok(f) => f,
            Err(e) => {
                return self.emit(Outcome::Vanished {
                    pid: pinned.id.pid,
                    why: format!("it vanished while being read ({e})"),
                })
            }
        };
        if self.rules.tool_roots.refresh() {
            self.rules.guard.tool_roots = self.rules.tool_roots.roots().to_vec();
        }
        let settings = self.settings.clone();
        let decision = match decide(&settings.targets, &self.rules.guard, &facts) {
            // Under the root in one hierarchy but not wholly in that cgroup: a placement a
            // killed daemon cut short (v1 moves hierarchy by hierarchy). Decided afresh, so
            // it is placed whole, not left half-governed.
            Decision::Skip(Skip::UnderCgroupRoot(p)) if !self.placer.holds(&p, &facts.cgroups) => {
                let root = &self.rules.guard.cgroup_root;
                let guard = Guard {
                    cgroup_root: String::new(),
                    // `run` and `attach` register the daemon's own root as theirs too.
                    tool_roots: (self.rules.guard.tool_roots.iter())
                        .filter(|t| !crate::matcher::is_under(t, root))
                        .cloned()
                        .collect(),
                    ..self.rules.guard.clone()
                };
                decide(&settings.targets, &guard, &facts)
            }
            d => d,
        };
        match decision {
            Decision::Skip(reason) => {
                drop(origin); // a stopped or held process goes on before the message
                              // Not bystanders (forward_all sends every exec): they would crowd the
                              // targets out of the memory, and no scan reports them.
                if !matches!(reason, crate::matcher::Skip::NotATarget) {
                    self.table
                        .skipped(pinned.id, &pinned.stat.comm, Instant::now());
                }
                self.emit(Outcome::Skipped {
                    stat: pinned.stat,
                    reason,
                })
            }
            Decision::Defer { target, remaining } => {
                // min_runtime outranks strict placement and the gate: a deferred process
                // runs meanwhile (resumed, or its exec let go, here).
                drop(origin);
                let comm = String::from_utf8_lossy(&pinned.stat.comm).into_owned();
                if self
                    .table
                    .defer(pinned.id, Instant::now() + remaining, "min_runtime")
                {
                    self.emit(Outcome::Deferred {
                        pid: pinned.id.pid,
                        comm,
                        target: target.name.clone(),
                        remaining,
                    });
                }
            }
            Decision::Govern(target) => self.govern_found(pinned, target, origin, facts.cgroups),
        }
    }

    /// A target to govern: left in its service (`services: limit_unit`), or placed the
    /// first time.
    fn govern_found(
        &mut self,
        pinned: Pinned,
        target: &crate::config::Target,
        origin: Origin,
        cgroups: Vec<crate::process::CgroupLine>,
    ) {
        if let Some(unit) = self.service_for(target, &cgroups) {
            if self.rules.dry_run {
                return self.dry_run_in_service(pinned, target, unit, origin);
            }
            return self.govern_in_service(pinned, target, unit, origin);
        }
        // Where a held exec came from: it goes back there if its exec fails.
        let undo = super::place::Undo::of(origin.gated.as_ref(), cgroups);
        let spec = JobSpec {
            job_id: JobId::new(&target.name, pinned.id.pid),
            command: target.name.clone(),
            limits: (self.placer).limits_in(&target.limits, target.pool.as_deref()),
            pool: target.pool.clone(),
        };
        let discovered = Outcome::Discovered {
            pid: pinned.id.pid,
            job_id: spec.job_id.clone(),
            command: spec.command.clone(),
        };
        self.place(pinned, spec, 0, origin, Some(discovered), undo);
    }
}

/// How soon a process that could not be pinned for want of descriptors is tried again.
const PIN_AGAIN: std::time::Duration = std::time::Duration::from_millis(100);
