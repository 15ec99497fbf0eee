//! The placer: puts one pinned process into its own job cgroup with its limits, in the
//! order create → write and read back limits → move → verify `/proc/PID/cgroup`.

pub mod backend;
pub mod delegation;
pub mod error;
pub mod limits;
pub mod registry;
pub mod spares;
pub mod v1;
pub mod v2;

use std::path::Path;
use std::time::{Duration, Instant};

pub use backend::{detect, CgroupBackend, CgroupMode, RootReport, Usage};
pub use error::{backoff, Class, PlaceError, Step};

use std::sync::Mutex;

use crate::config::Limits;
use crate::process::{is_gone, Pinned, ProcFs};
use spares::{Spare, Spares, SPARE_PREFIX};

/// A job cgroup younger than this is never taken for a leftover (`Placer::is_fresh`).
pub const LEFTOVER_MIN_AGE: Duration = Duration::from_secs(10);

/// What to place a process as.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: String,
    pub command: String,
    pub limits: Limits,
}

/// The job id of a discovered process (the predecessor's naming).
pub fn auto_job_id(command: &str, pid: u32) -> String {
    format!("auto-{command}-{pid}")
}

/// A finished placement.
#[derive(Debug)]
pub struct Placement {
    pub job_id: String,
    pub cgroup: String,
    /// Limits written and read back, as `file=value`.
    pub applied: Vec<String>,
    /// Limits that could not be applied (logged and counted by the caller).
    pub failed: Vec<(String, PlaceError)>,
    /// CLOCK_MONOTONIC when the move was verified (same clock as bpf_ktime_get_ns).
    pub verified_mono_ns: u64,
    /// Time spent placing.
    pub took: Duration,
}

/// CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Placer {
    backend: Box<dyn CgroupBackend>,
    root: String,
    proc: ProcFs,
    spares: Mutex<Spares>,
}

impl Placer {
    pub fn new(backend: Box<dyn CgroupBackend>, root: String, proc: ProcFs) -> Self {
        Placer {
            backend,
            root,
            proc,
            spares: Mutex::new(Spares::default()),
        }
    }

    pub fn backend(&self) -> &dyn CgroupBackend {
        self.backend.as_ref()
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn proc(&self) -> &ProcFs {
        &self.proc
    }

    /// The cgroup path of a job.
    pub fn cgroup_of(&self, job_id: &str) -> String {
        format!("{}/{}", self.root, job_id)
    }

    /// Prepare the root; spare cgroups a previous run left behind are removed.
    pub fn prepare_root(&self) -> RootReport {
        self.backend.prepare_root(&self.root)
    }

    /// Remove empty spare cgroups that are not in this placer's pool: a previous daemon's
    /// (at start) or ones a failed placement left behind (at reconciliation). Only the
    /// daemon calls this — `run` and `attach` must not touch its spares.
    pub fn remove_stray_spares(&self) {
        for name in self.backend.children(&self.root).unwrap_or_default() {
            let cgroup = self.cgroup_of(&name);
            if name.starts_with(SPARE_PREFIX)
                && !self.spares.lock().expect("spares lock").holds(&cgroup)
            {
                let _ = self.remove_if_empty(&cgroup);
            }
        }
    }

    /// Create spare cgroups for each set of limits, up to the pool size (v1 only; a no-op
    /// where cgroups cannot be renamed). Returns how many were created. Off the placement
    /// path: the daemon calls it after placing, on another thread; the pool's lock is held
    /// only to count and to add, never while a cgroup is made.
    pub fn refill_spares<'a>(&self, all: impl IntoIterator<Item = &'a Limits>) -> usize {
        if !self.backend.supports_rename() {
            return 0;
        }
        let mut created = 0;
        for limits in all {
            let wanted = self.spares.lock().expect("spares lock").missing(limits);
            for _ in 0..wanted {
                let name = self.spares.lock().expect("spares lock").next_name();
                let cgroup = self.cgroup_of(&name);
                if self.backend.create(&cgroup).is_err() {
                    return created;
                }
                let procs = match Spare::open_procs(self.backend.procs_files(&cgroup)) {
                    Ok(p) => p,
                    Err(_) => {
                        let _ = self.backend.remove(&cgroup);
                        return created;
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
                    return created;
                }
                self.spares
                    .lock()
                    .expect("spares lock")
                    .put(limits.clone(), spare);
                created += 1;
            }
        }
        created
    }

    /// Remove every spare cgroup (at shutdown and when the limits change).
    pub fn drain_spares(&self) {
        let spares = self.spares.lock().expect("spares lock").drain();
        for s in spares {
            let _ = self.backend.remove(&s.cgroup);
        }
    }

    /// Number of spare cgroups ready.
    pub fn spare_count(&self) -> usize {
        self.spares.lock().expect("spares lock").len()
    }

    /// Place a pinned process. On error nothing is left behind: a cgroup created for the
    /// attempt is removed again.
    pub fn place(&self, p: &Pinned, spec: &JobSpec) -> Result<Placement, PlaceError> {
        let started = Instant::now();
        let pid = p.id.pid;
        if !p.pidfd.is_alive() {
            return Err(PlaceError::vanished(Step::Pin, format!("PID {pid} exited")));
        }
        let spare = self.spares.lock().expect("spares lock").take(&spec.limits);
        if let Some(spare) = spare {
            match self.place_in_spare(p, spec, spare, started) {
                Ok(pl) => return Ok(pl),
                Err(e) if e.class == Class::Vanished => return Err(e),
                // A spare someone removed, or a move that failed there: place the slow way.
                Err(e) => {
                    tracing::debug!("PID {pid}: spare cgroup unusable ({e}); creating its cgroup")
                }
            }
        }
        let mut cgroup = self.cgroup_of(&spec.job_id);
        // A cgroup of that name left behind (an earlier process with this PID) is removed if
        // empty, so the job starts from the kernel's defaults and not from limits the new
        // job does not set. One still in use (its children run there) keeps its limits to
        // itself: the job gets a name of its own.
        if let Err(e) = self.backend.remove(&cgroup) {
            if e.raw_os_error() == Some(libc::EBUSY) {
                cgroup = self.cgroup_of(&format!("{}-{}", spec.job_id, p.id.start_time));
            }
        }
        self.backend.create(&cgroup)?;
        let result = self.fill_and_move(p, spec, &cgroup);
        match result {
            Ok((applied, failed)) => Ok(Placement {
                job_id: spec.job_id.clone(),
                cgroup,
                applied,
                failed,
                verified_mono_ns: monotonic_ns(),
                took: started.elapsed(),
            }),
            Err(e) => {
                let _ = self.backend.remove(&cgroup);
                Err(e)
            }
        }
    }

    /// The fast path: the limits are already in place; move, verify, then give the cgroup
    /// the job's name.
    fn place_in_spare(
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
            if e.class == Class::Vanished || !p.pidfd.is_alive() {
                return Err(PlaceError::vanished(
                    Step::Move,
                    format!("PID {pid} exited during the move"),
                ));
            }
            return Err(e);
        }
        let verified_mono_ns = monotonic_ns();
        // A leftover cgroup of the same name (a reused PID whose old job still has
        // processes) keeps the spare's name: the process is placed either way.
        let cgroup = match self.backend.rename(&spare.cgroup, &spec.job_id) {
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
            job_id: spec.job_id.clone(),
            cgroup,
            applied: spare.applied,
            failed: spare.failed,
            verified_mono_ns,
            took: started.elapsed(),
        })
    }

    #[allow(clippy::type_complexity)]
    fn fill_and_move(
        &self,
        p: &Pinned,
        spec: &JobSpec,
        cgroup: &str,
    ) -> Result<(Vec<String>, Vec<(String, PlaceError)>), PlaceError> {
        let pid = p.id.pid;
        let mut applied = Vec::new();
        let mut failed = Vec::new();
        for (label, r) in self.backend.apply_limits(cgroup, &spec.limits) {
            match r {
                Ok(()) => applied.push(label),
                Err(e) if e.class == Class::Retryable => return Err(e),
                Err(e) => failed.push((label, e)),
            }
        }
        if let Err(e) = self.backend.move_process(cgroup, pid) {
            if e.class == Class::Vanished || !p.pidfd.is_alive() {
                return Err(PlaceError::vanished(
                    Step::Move,
                    format!("PID {pid} exited during the move"),
                ));
            }
            return Err(e);
        }
        self.verify(p, cgroup)?;
        Ok((applied, failed))
    }

    /// Check `/proc/PID/cgroup` shows the process in `cgroup`, and that the pinned process
    /// is still the one behind the PID.
    pub fn verify(&self, p: &Pinned, cgroup: &str) -> Result<(), PlaceError> {
        let pid = p.id.pid;
        let lines = match self.proc.cgroups(pid) {
            Ok(l) => l,
            Err(e) if is_gone(&e) => {
                return Err(PlaceError::vanished(
                    Step::Verify,
                    format!("PID {pid} exited"),
                ));
            }
            Err(e) => {
                return Err(PlaceError::io(
                    Step::Verify,
                    &format!("/proc/{pid}/cgroup"),
                    &e,
                ))
            }
        };
        if !p.pidfd.is_alive() {
            return Err(PlaceError::vanished(
                Step::Verify,
                format!("PID {pid} exited"),
            ));
        }
        if !self.backend.is_member(cgroup, &lines) {
            // An exiting process has already left its cgroups (they read `/`): gone, not moved.
            let exiting = match self.proc.stat(pid) {
                Ok(s) => s.is_zombie() || s.flags & crate::process::stat::PF_EXITING != 0,
                Err(e) => is_gone(&e),
            };
            if exiting || !p.pidfd.is_alive() {
                return Err(PlaceError::vanished(
                    Step::Verify,
                    format!("PID {pid} is exiting"),
                ));
            }
            return Err(PlaceError {
                step: Step::Verify,
                class: Class::Retryable,
                errno: None,
                detail: format!(
                    "PID {pid} is in {} instead of {cgroup} right after the move (another writer moved it)",
                    self.backend.location(&lines)
                ),
                fix: None,
            });
        }
        Ok(())
    }

    /// Move descendants that already exist into the job cgroup (children forked before the
    /// parent was moved stay behind otherwise). Each child is pinned before it is looked at
    /// and moved, and is still alive after the move, so the PID written was its own.
    /// Returns how many were moved.
    pub fn move_descendants(&self, pid: u32, cgroup: &str) -> usize {
        let mut moved = 0;
        let mut seen = 0usize;
        let mut stack: Vec<(u32, u32)> = self
            .proc
            .children(pid)
            .into_iter()
            .map(|c| (c, pid))
            .collect();
        let root_prefix = format!("{}/", self.root);
        while let Some((c, parent)) = stack.pop() {
            seen += 1;
            if seen > 100_000 {
                break;
            }
            // Not our descendant any more (it exited and the PID went to a stranger): skip.
            let Ok(child) = self.proc.pin(c) else {
                continue;
            };
            if child.stat.ppid != parent {
                continue;
            }
            stack.extend(self.proc.children(c).into_iter().map(|g| (g, c)));
            // Leave alone a child that is already here, or wholly in another cgroup under the
            // root (a governed job, an `ffrtmp run` job). A child caught half-way through
            // this process's own move (v1 moves hierarchy by hierarchy) is moved.
            let leave = self.proc.cgroups(c).map_or(true, |l| {
                let elsewhere = l
                    .iter()
                    .map(|x| x.path.as_str())
                    .find(|p| p.starts_with(&root_prefix));
                self.backend.is_member(cgroup, &l)
                    || elsewhere.is_some_and(|p| p != cgroup && self.backend.is_member(p, &l))
            });
            if !leave && self.backend.move_process(cgroup, c).is_ok() {
                if child.pidfd.is_alive() {
                    moved += 1;
                } else {
                    tracing::debug!("child PID {c} of {pid} exited while it was moved");
                }
            }
        }
        moved
    }

    /// Made less than `LEFTOVER_MIN_AGE` ago (by the ctime of its directory): possibly a
    /// job cgroup the placement thread has just created and not yet moved its process into
    /// (on cgroup v2 that move waits for an RCU grace period), so not a leftover yet.
    pub fn is_fresh(&self, cgroup: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = self
            .backend
            .procs_files(cgroup)
            .into_iter()
            .next()
            .and_then(|f| f.parent().map(Path::to_path_buf))
        else {
            return false;
        };
        let Ok(m) = std::fs::metadata(&dir) else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        now.saturating_sub(m.ctime()) < LEFTOVER_MIN_AGE.as_secs() as i64
    }

    /// Remove a job cgroup if it is empty. `Ok(false)` while processes remain.
    pub fn remove_if_empty(&self, cgroup: &str) -> std::io::Result<bool> {
        // No read of cgroup.procs first: the kernel refuses to remove a cgroup that has
        // processes (EBUSY), and the v1 backend stops at the first hierarchy that does.
        match self.backend.remove(cgroup) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
