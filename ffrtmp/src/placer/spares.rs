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
        // A leftover cgroup of the same name that still has processes (a reused PID whose
        // old job runs on) keeps the spare's name: the process is placed either way.
        let cgroup = match self.name_job(&spare.cgroup, spec.job_id.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "Cannot name {} {}: {e}; the job keeps that cgroup",
                    spare.cgroup,
                    spec.job_id
                );
                spare.cgroup.clone()
            }
        };
        Ok(Placement {
            job_id: spec.job_id.to_string(),
            cgroup,
            applied: spare.applied,
            failed: spare.failed,
            verified_mono_ns,
            took: started.elapsed(),
            root_recreated: false,
        })
    }

    /// Give a spare the job's name. A cgroup of that name that is empty is a leftover of a
    /// placement a killed daemon cut short (it renamed some hierarchies, then died; the
    /// process was placed again since): it is removed, and the rename tried once more. A
    /// busy one is not touched (rmdir refuses it).
    fn name_job(&self, spare: &str, job: &str) -> Result<String, PlaceError> {
        let first = match self.backend.rename(spare, job) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if !matches!(first.errno, Some(libc::EEXIST | libc::ENOTEMPTY)) {
            return Err(first);
        }
        let parent = spare.rsplit_once('/').map_or("", |(p, _)| p);
        let leftover = format!("{parent}/{job}");
        let empty = self.backend.procs(&leftover).is_ok_and(|p| p.is_empty());
        if !empty || self.backend.remove(&leftover).is_err() {
            return Err(first);
        }
        tracing::info!("Removed the empty cgroup {leftover}, left by a placement cut short, to give job {job} its name");
        self.backend.rename(spare, job)
    }
}
