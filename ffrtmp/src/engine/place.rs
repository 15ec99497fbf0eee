//! The placement itself, and what waits for a timer: a retry's backoff, `min_runtime`, a
//! scan's just-started candidate.

use std::time::Instant;

use super::table::{Confirm, Retry, Timed};
use super::{Engine, Origin, Outcome, Placed};
use crate::placer::{backoff, Class, JobSpec};
use crate::process::{CgroupLine, Known, Pinned, ProcessId};

impl Engine {
    /// `discovered`, the first report of a new target, is sent once the placement has been
    /// tried and the target resumed: a message wakes the record loop, which must not run
    /// beside the target (or take a CPU from it) before the move.
    pub(super) fn place(
        &mut self,
        pinned: Pinned,
        spec: JobSpec,
        attempt: u32,
        origin: Origin,
        discovered: Option<Outcome>,
        undo: Option<Undo>,
    ) {
        let (stop, gated, mut source) = (origin.stop, origin.gated, origin.source);
        let (exec_mono_ns, read_mono_ns) = (origin.exec_mono_ns, origin.read_mono_ns);
        let pid = pinned.id.pid;
        if self.rules.dry_run {
            drop((stop, gated));
            return self.dry_run(pid, spec, discovered);
        }
        let spare = self.spare_for(&spec);
        let took_spare = spare.is_some();
        let placed = self.placer.place(&pinned, &spec, spare);
        // Resumed right after the verified move (its next instruction runs inside), or
        // right after a failed one: never held through a backoff or a message.
        drop(stop);
        let (gated_exe, held_since) = held_facts(gated.as_ref());
        let since = exec_mono_ns.or(held_since);
        // Answered late, it ran before its move: not said to be held (`gate-late`).
        if held_since.is_some() && !self.answer(gated, placed.is_ok(), pid, &spec.command) {
            source = "gate-late";
        }
        let placed = placed.map(|placement| {
            let children = self.placer.move_descendants(pid, &placement.cgroup);
            let exe =
                gated_exe.or_else(|| self.proc.exe(pid).ok().map(|p| p.display().to_string()));
            (placement, children, exe)
        });
        // Sent with the result, back to back: usually one wakeup of the record loop, not two.
        if let Some(d) = discovered {
            self.emit(d);
        }
        match placed {
            Ok((placement, children, exe)) => {
                let latency_ns = since.map(|t| placement.verified_mono_ns.saturating_sub(t));
                // A held exec has no exec time: its hand-over counts from the gate's read.
                let held = source == crate::sources::gate::SOURCE;
                let receipt_ns = since_ns(
                    if held { held_since } else { exec_mono_ns },
                    origin.taken_mono_ns,
                );
                let read_ns = since_ns(exec_mono_ns, read_mono_ns);
                self.table.governed(pinned.id);
                if let Some(u) = undo {
                    self.confirm_later(pinned.id, &spec, u);
                }
                // The pin goes with the result, for the exit watch: no second descriptor.
                self.emit(Outcome::Placed(Box::new(Placed {
                    id: pinned.id,
                    pidfd: self.out.handed_on(pinned.pidfd),
                    spec,
                    placement,
                    latency_ns,
                    read_ns,
                    receipt_ns,
                    children,
                    exe,
                    source,
                })));
            }
            Err(e) => {
                let retry = Retry {
                    pinned,
                    spec,
                    attempt: attempt + 1,
                    exec_mono_ns,
                    source,
                };
                self.not_placed(e, retry, took_spare);
            }
        }
    }

    /// A spare cgroup for the job, if one is ready. Spares are made under the root: a
    /// pooled job's cgroup is made in its pool.
    fn spare_for(&mut self, spec: &JobSpec) -> Option<crate::placer::Spare> {
        if spec.pool.is_some() {
            return None;
        }
        self.spares.take(&spec.limits)
    }

    /// `true` when it was answered now, after the move (not late).
    /// Answer a held exec: placed after a verified move, else (dropped) unplaced. One the
    /// deadline answered first is counted late by the gate.
    fn answer(
        &mut self,
        gated: Option<crate::process::Gated>,
        placed: bool,
        pid: u32,
        command: &str,
    ) -> bool {
        let Some(g) = gated.filter(|_| placed) else {
            return false;
        };
        if self.settings.placement_of(command) == crate::config::Placement::Strict {
            // Its exec event is not to stop it: it runs nothing outside its cgroup.
            self.rings.iter_mut().for_each(|r| r.placed_at_gate(pid));
        }
        g.placed()
    }

    fn dry_run(&self, pid: u32, spec: JobSpec, discovered: Option<Outcome>) {
        if let Some(d) = discovered {
            self.emit(d);
        }
        self.emit(Outcome::DryRun {
            pid,
            cgroup: self.placer.cgroup_for(&spec, spec.job_id.as_str()),
            job_id: spec.job_id,
            command: spec.command,
            limits: spec.limits,
            in_service: false,
        });
    }

    /// A placement that failed: vanished (nothing to do), retried after a backoff, or
    /// given up on for a while.
    /// `took_spare`: the attempt used up a spare (removed, or the process left in it as it
    /// exited), to be made again as a placement's is.
    fn not_placed(&mut self, e: crate::placer::PlaceError, r: Retry, took_spare: bool) {
        if took_spare {
            self.emit(Outcome::SparesUsed(vec![(r.spec.limits.clone(), 1)]));
        }
        let pid = r.pinned.id.pid;
        let max = self.settings.max_retry_attempts;
        match e.class {
            Class::Vanished => self.emit(Outcome::Vanished {
                pid,
                why: format!("it exited before placement finished ({e})"),
            }),
            Class::Retryable if r.attempt <= max => {
                let delay = backoff(
                    r.attempt,
                    r.pinned.id.start_time ^ u64::from(pid) ^ u64::from(r.attempt - 1),
                );
                self.emit(Outcome::Retrying {
                    pid,
                    job_id: r.spec.job_id.clone(),
                    error: e,
                    attempt: r.attempt,
                    max,
                    delay,
                });
                let id = r.pinned.id;
                // A pidfd in the reserve of descriptors is not held through the backoff.
                let mut r = r;
                r.pinned.pidfd = self.out.handed_on(r.pinned.pidfd.take());
                self.table
                    .retry(id, Instant::now() + delay, Timed::Retry(Box::new(r)));
            }
            _ => {
                // Not for ever: the cause may be fixed (a controller enabled, a limit
                // raised); the scan may try it again after a while.
                self.table
                    .failed(r.pinned.id, Instant::now() + self.rules.failure_backoff);
                self.emit(Outcome::Failed {
                    pid,
                    job_id: r.spec.job_id,
                    command: r.spec.command,
                    error: e,
                    attempts: r.attempt,
                });
            }
        }
    }

    pub(super) fn fire_timers(&mut self) {
        for (id, t) in self.table.due(Instant::now()) {
            match t {
                // Unless its exec event placed it meanwhile.
                Timed::Fresh => self.scanned(id),
                // Facts may have changed while it ran (cwd, parent): decide again.
                // The PID's process now, if it is not the one deferred (it exited and the PID
                // was reused, or the start time came from an exec event's clock), is judged
                // on its own /proc facts like any other.
                Timed::Defer(why) => match self.proc.pin(id.pid) {
                    Ok(pinned) if !self.table.knows(pinned.id) => {
                        self.look_at(pinned, &Known::default(), Origin::from_proc(why))
                    }
                    Err(e) if crate::process::out_of_descriptors(&e) => {
                        self.pin_later(id, &e, false)
                    }
                    _ => {} // exited, or governed meanwhile
                },
                Timed::Confirm(c) => self.confirm_exec(id, *c),
                Timed::Retry(r) => {
                    let Retry {
                        pinned,
                        spec,
                        attempt,
                        exec_mono_ns,
                        source,
                    } = *r;
                    self.place(
                        pinned,
                        spec,
                        attempt,
                        Origin {
                            exec_mono_ns,
                            read_mono_ns: None,
                            taken_mono_ns: None,
                            source,
                            stop: None,
                            gated: None,
                        },
                        None,
                        None,
                    )
                }
            }
        }
    }
}

impl Engine {
    /// Look at a process placed at the gate again after `CONFIRM_AFTER`.
    fn confirm_later(&mut self, id: ProcessId, spec: &JobSpec, u: Undo) {
        let c = Confirm {
            inode: u.inode,
            old_comm: u.old_comm,
            exe: u.exe,
            home: u.home,
            job_id: spec.job_id.clone(),
            command: spec.command.clone(),
        };
        self.table.confirm(id, Instant::now() + CONFIRM_AFTER, c);
    }

    /// A process placed at the gate, looked at again: its exec went through if its comm
    /// changed (the kernel names it after the file it exec'd: the target, or a script's
    /// name) or its exe is the held binary. Else the exec failed after the answer (a bad
    /// format, a missing interpreter) and its old image runs in the job cgroup: it goes
    /// back where it came from, and its job ends.
    fn confirm_exec(&mut self, id: ProcessId, c: Confirm) {
        if !self.table.governs(id) {
            return; // exited meanwhile
        }
        let Ok(pinned) = self.proc.pin(id.pid) else {
            return;
        };
        if pinned.id != id {
            return;
        }
        let went_through = pinned.stat.comm != c.old_comm
            || self.proc.exe_inode(id.pid).is_ok_and(|i| i == c.inode);
        let home = (!went_through).then(|| {
            self.placer
                .move_home(id.pid, &c.home)
                .map_err(|e| e.to_string())
        });
        if matches!(home, Some(Ok(_))) {
            // Decided afresh at its next exec.
            self.table.exited(id);
        }
        self.emit(Outcome::ExecChecked {
            id,
            job_id: c.job_id,
            command: c.command,
            exe: c.exe,
            home,
        });
    }
}

/// What a held exec's placement is undone by, should its exec fail.
pub(super) struct Undo {
    inode: (u64, u64),
    old_comm: Vec<u8>,
    exe: String,
    home: Vec<CgroupLine>,
}

impl Undo {
    /// For a held exec: its binary, its comm before the exec, and where it was (`home`)
    /// before its move. None when a failed exec could not be told from one that went
    /// through (its old comm is the target's own) or its home is unknown.
    pub(super) fn of(g: Option<&crate::process::Gated>, home: Vec<CgroupLine>) -> Option<Undo> {
        let g = g?;
        let t = g.held().target.as_bytes();
        let target = &t[..t.len().min(crate::matcher::COMM_MAX)];
        if home.is_empty() || g.old_comm.is_empty() || g.old_comm == target {
            return None;
        }
        Some(Undo {
            inode: g.held().inode,
            old_comm: g.old_comm.clone(),
            exe: g.held().exe.display().to_string(),
            home,
        })
    }
}

/// How long after its answer a process placed at the gate is looked at again: its exec
/// has gone through or failed by then. A slower exec that is moved back meanwhile is
/// placed again by its exec event.
const CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// Nanoseconds from `from` to `to`, when both are known.
fn since_ns(from: Option<u64>, to: Option<u64>) -> Option<u64> {
    from.zip(to).map(|(f, t)| t.saturating_sub(f))
}

/// A held exec still shows its old image: its binary is the one the gate marked; and it
/// has waited since the gate read its exec (it has no kernel timestamp).
fn held_facts(g: Option<&crate::process::Gated>) -> (Option<String>, Option<u64>) {
    g.map(|g| {
        let h = g.held();
        (Some(h.exe.display().to_string()), Some(h.read_mono_ns))
    })
    .unwrap_or_default()
}
