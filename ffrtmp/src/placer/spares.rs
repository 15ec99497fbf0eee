//! Spare job cgroups: created, with a command's limits written and read back and their
//! `cgroup.procs` files opened, before any process needs them, so a placement is only a
//! write of the PID per hierarchy and a verify (no path lookups on the placement path).
//! After the move the spare is renamed to the job's name (`auto-<command>-<pid>`); the open
//! files follow the rename. cgroup v1 supports renaming a cgroup; cgroup v2 does not
//! (EPERM), so there the cgroup is created on the placement path.
//!
//! The pool (`Spares`) is the engine's alone: the chore runner makes spares
//! (`Placer::make_spares`) and hands them over through the engine's work queue, so the
//! placement thread takes a spare without a lock.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::error::{Class, PlaceError, Step};
use super::{JobSpec, Placement, Placer};
use crate::config::Limits;
use crate::process::{monotonic_ns, Pinned};

/// How a spare cgroup got the job's name (v1 renames it once the process is in).
#[derive(Debug)]
pub enum Naming {
    /// Named as the job (with its start time when a busy cgroup has the name), or no
    /// spare was used.
    AsJob,
    /// Named once the cgroup of the job's name, left empty by a placement a killed daemon
    /// cut short, was removed.
    LeftoverRemoved(String),
    /// Not renamed (the rename failed): the job keeps the spare's cgroup. The error.
    SpareKept(String),
}

/// A ready cgroup with limits applied.
#[derive(Debug)]
pub struct Spare {
    pub cgroup: String,
    /// Limits written and read back, as `file=value`.
    pub applied: Vec<String>,
    /// Limits that could not be applied (reported when the spare is used).
    pub failed: Vec<(String, PlaceError)>,
    /// Its `cgroup.procs` files, open for writing, in move order.
    pub procs: Vec<(PathBuf, File)>,
}

impl Spare {
    /// Open the `cgroup.procs` files a move into the spare writes.
    pub fn open_procs(paths: Vec<PathBuf>) -> std::io::Result<Vec<(PathBuf, File)>> {
        paths
            .into_iter()
            .map(|p| {
                let f = std::fs::OpenOptions::new().write(true).open(&p)?;
                Ok((p, f))
            })
            .collect()
    }

    /// Move a whole process into the spare: its PID written to each open file.
    pub fn move_process(&self, pid: u32) -> Result<(), PlaceError> {
        let text = pid.to_string();
        for (path, f) in &self.procs {
            let mut f: &File = f;
            f.write_all(text.as_bytes())
                .map_err(|e| PlaceError::io(super::Step::Move, &path.display().to_string(), &e))?;
        }
        Ok(())
    }
}

/// Spares by the limits they carry.
#[derive(Debug, Default)]
pub struct Spares {
    ready: HashMap<Limits, Vec<Spare>>,
}

/// Spares kept per distinct set of limits.
pub const SPARES_PER_LIMITS: usize = 2;
/// Name prefix of spare cgroups under the root.
pub const SPARE_PREFIX: &str = "spare-";

impl Spares {
    pub fn take(&mut self, limits: &Limits) -> Option<Spare> {
        self.ready.get_mut(limits)?.pop()
    }

    /// Keep a spare, unless the pool for its limits is full: then it is handed back (for
    /// removal off the placement thread).
    pub fn put(&mut self, limits: Limits, spare: Spare) -> Option<Spare> {
        let v = self.ready.entry(limits).or_default();
        if v.len() >= SPARES_PER_LIMITS {
            return Some(spare);
        }
        v.push(spare);
        None
    }

    /// All spares, removing them from the pool.
    pub fn drain(&mut self) -> Vec<Spare> {
        self.ready.drain().flat_map(|(_, v)| v).collect()
    }
}

impl Placer {
    /// Remove empty spare cgroups no daemon will use: every one (`all`, at start, before
    /// this daemon makes its own), else those another daemon made (their names carry its
    /// PID). Only the daemon calls this — `run` and `attach` must not touch its spares.
    pub fn remove_stray_spares(&self, all: bool) {
        let ours = format!("{SPARE_PREFIX}{}-", std::process::id());
        for name in self.backend.children(&self.root).unwrap_or_default() {
            if name.starts_with(SPARE_PREFIX) && (all || !name.starts_with(&ours)) {
                let _ = self.remove_if_empty(&self.cgroup_of(&name));
            }
        }
    }

    /// Make `n` spare cgroups with these limits (v1 only; none where cgroups cannot be
    /// renamed), for the engine's pool. Off the placement path: the chore runner (and the
    /// start-up) call it; the engine takes what it makes through its work queue.
    ///
    /// A spare holds its files open: none is made once they would take descriptors from
    /// the top of the table, which stays free for placing (`exits::keep_below`).
    pub fn make_spares(&self, limits: &Limits, n: usize) -> Vec<Spare> {
        if !self.backend.supports_rename() {
            return Vec::new();
        }
        let keep_below = crate::process::exits::keep_below();
        let mut made = Vec::new();
        for _ in 0..n {
            let seq = self.spare_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let cgroup = self.cgroup_of(&format!("{SPARE_PREFIX}{}-{seq}", std::process::id()));
            if self.backend.create(&cgroup).is_err() {
                break;
            }
            let procs = match Spare::open_procs(self.backend.procs_files(&cgroup)) {
                Ok(p) if p.iter().all(|(_, f)| (f.as_raw_fd() as u64) < keep_below) => p,
                _ => {
                    let _ = self.backend.remove(&cgroup);
                    break;
                }
            };
            let mut spare = Spare {
                cgroup,
                applied: Vec::new(),
                failed: Vec::new(),
                procs,
            };
            let mut retry_later = false;
            for (label, r) in self.backend.apply_limits(&spare.cgroup, limits) {
                match r {
                    Ok(()) => spare.applied.push(label),
                    Err(e) if e.class == Class::Retryable => retry_later = true,
                    Err(e) => spare.failed.push((label, e)),
                }
            }
            if retry_later {
                let _ = self.backend.remove(&spare.cgroup);
                break;
            }
            made.push(spare);
        }
        made
    }

    /// Spares for each set of limits, `n` of each, paired with their limits (the engine's
    /// pool takes them so).
    pub fn make_spares_for(&self, wanted: Vec<(Limits, usize)>) -> Vec<(Limits, Spare)> {
        wanted
            .into_iter()
            .flat_map(|(l, n)| {
                self.make_spares(&l, n)
                    .into_iter()
                    .map(move |s| (l.clone(), s))
            })
            .collect()
    }

    /// Remove spare cgroups (the engine's, at shutdown or when the limits change).
    pub fn remove_spares(&self, cgroups: impl IntoIterator<Item = String>) {
        for cg in cgroups {
            let _ = self.backend.remove(&cg);
        }
    }

    /// The fast path: the limits are already in place; move, verify, then give the cgroup
    /// the job's name.
    pub(super) fn place_in_spare(
        &self,
        p: &Pinned,
        spec: &JobSpec,
        spare: Spare,
        started: Instant,
    ) -> Result<Placement, PlaceError> {
        let pid = p.id.pid;
        let moved = spare
            .move_process(pid)
            .and_then(|()| self.verify(p, &spare.cgroup));
        if let Err(e) = moved {
            let _ = self.backend.remove(&spare.cgroup);
            if e.class == Class::Vanished || !p.is_alive(&self.proc) {
                return Err(PlaceError::vanished(
                    Step::Move,
                    format!("PID {pid} exited during the move"),
                ));
            }
            return Err(e);
        }
        let verified_mono_ns = monotonic_ns();
        // A rename that fails keeps the spare's name: the process is placed either way.
        // Said by the record loop: nothing is logged here, before a held exec is answered.
        let (cgroup, naming) = match self.name_job(&spare.cgroup, spec, p.id.start_time) {
            Ok(named) => named,
            Err(e) => (spare.cgroup.clone(), Naming::SpareKept(e.to_string())),
        };
        Ok(Placement {
            job_id: spec.job_id.to_string(),
            cgroup,
            applied: spare.applied,
            failed: spare.failed,
            verified_mono_ns,
            took: started.elapsed(),
            root_recreated: false,
            naming,
        })
    }

    /// Give a spare the job's name. Only when a cgroup of that name is in the way (EEXIST:
    /// on v1 a killed daemon's rename can leave one, hierarchy by hierarchy) is the name
    /// made free, as the slow path does every time (`free_cgroup`); the fast path pays
    /// nothing for it otherwise.
    fn name_job(
        &self,
        spare: &str,
        spec: &JobSpec,
        start_time: u64,
    ) -> Result<(String, Naming), PlaceError> {
        let first = match self.backend.rename(spare, spec.job_id.as_str()) {
            Ok(c) => return Ok((c, Naming::AsJob)),
            Err(e) => e,
        };
        if !matches!(first.errno, Some(libc::EEXIST | libc::ENOTEMPTY)) {
            return Err(first);
        }
        let (free, removed) = self.free_cgroup(spec, start_time);
        let name = free.rsplit_once('/').map_or(free.as_str(), |(_, n)| n);
        let named = self.backend.rename(spare, name)?;
        // Busy, it keeps its name and the job has one with its start time, as on the slow
        // path, which says nothing of it either.
        let naming = if removed {
            Naming::LeftoverRemoved(free)
        } else {
            Naming::AsJob
        };
        Ok((named, naming))
    }
}
