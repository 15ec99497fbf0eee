//! The placer: puts one pinned process into its own job cgroup with its limits, in the
//! order create → write and read back limits → move → verify `/proc/PID/cgroup`.

pub mod backend;
pub mod cgroupfs;
pub mod delegation;
mod detect;
pub mod error;
pub mod limits;
mod pools;
pub mod registry;
pub mod spares;
pub mod unit;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use backend::{CgroupBackend, CgroupMode, RootReport, Usage};
pub use detect::detect;
pub use error::{backoff, Class, PlaceError, Step};
pub use spares::Naming;

use std::sync::atomic::AtomicU64;

use std::sync::Arc;

use crate::config::{Limits, Pool};
use crate::job::JobId;
use crate::process::{is_gone, monotonic_ns, Pinned, ProcFs};
pub use spares::{Spare, Spares, SPARES_PER_LIMITS};
pub use unit::UnitLimits;

/// A job cgroup younger than this is never taken for a leftover (`Placer::is_fresh`).
pub const LEFTOVER_MIN_AGE: Duration = Duration::from_secs(10);

/// What to place a process as.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: JobId,
    pub command: String,
    pub limits: Limits,
    /// The pool its cgroup goes into (`<root>/<pool>/<job id>`), if any.
    pub pool: Option<Arc<Pool>>,
}

/// Limit files written: `file=value` and how it went, one per file.
pub type LimitWrites = Vec<(String, Result<(), PlaceError>)>;

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
    /// The cgroup root was gone (removed by another tool) and was made again first.
    pub root_recreated: bool,
    /// How a spare got the job's name (said by the record loop, not before the answer).
    pub naming: Naming,
}

pub struct Placer {
    backend: Box<dyn CgroupBackend>,
    /// systemd, for targets left in their service (`services: limit_unit`).
    pub(super) units: Box<dyn unit::UnitBus>,
    root: String,
    proc: ProcFs,
    /// Numbers the spare cgroups' names (an atomic: the placer holds no lock).
    spare_seq: AtomicU64,
}

impl Placer {
    pub fn new(backend: Box<dyn CgroupBackend>, root: String, proc: ProcFs) -> Self {
        Placer {
            backend,
            units: Box::new(unit::SystemdBus::default()),
            root,
            proc,
            spare_seq: AtomicU64::new(0),
        }
    }

    /// The hierarchy, for the start-up log: where it is mounted and which mode.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.backend.describe(), self.backend.mode())
    }

    pub fn mode(&self) -> CgroupMode {
        self.backend.mode()
    }

    /// What a move costs on this mount (cgroup v2: an RCU grace period or not).
    pub fn move_cost(&self) -> Option<String> {
        self.backend.move_cost()
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn proc(&self) -> &ProcFs {
        &self.proc
    }

    /// The cgroup path of a job outside any pool.
    pub fn cgroup_of(&self, job_id: &str) -> String {
        format!("{}/{}", self.root, job_id)
    }

    /// The cgroup path of a job: in its pool, if it has one.
    pub fn cgroup_for(&self, spec: &JobSpec, job_id: &str) -> String {
        match &spec.pool {
            Some(p) => format!("{}/{}/{job_id}", self.root, p.name),
            None => self.cgroup_of(job_id),
        }
    }

    /// The job's cgroup, its name made free. A cgroup of that name left behind (an earlier
    /// process with this PID, or a placement a killed daemon cut short) is removed if
    /// empty, so the job starts from the kernel's defaults and not from limits the new job
    /// does not set (`true`: one was removed). One still in use (its children run there)
    /// keeps its limits to itself: the job gets a name of its own, its start time added.
    fn free_cgroup(&self, spec: &JobSpec, start_time: u64) -> (String, bool) {
        let cgroup = self.cgroup_for(spec, spec.job_id.as_str());
        match self.backend.remove(&cgroup) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => (
                self.cgroup_for(spec, &spec.job_id.with_start_time(start_time)),
                false,
            ),
            // Removed, or there was none (rmdir's ENOENT counts as done).
            r => (cgroup, r.is_ok()),
        }
    }

    /// Bring a running job's or pool's limit files to `limits` (see
    /// `CgroupBackend::enforce_limits`).
    pub fn enforce_limits(&self, cgroup: &str, limits: &Limits) -> LimitWrites {
        self.backend.enforce_limits(cgroup, limits)
    }

    /// Prepare the root: made if missing, with its controllers enabled (the daemon removes
    /// spares a previous run left with `remove_stray_spares`).
    pub fn prepare_root(&self) -> RootReport {
        self.backend.prepare_root(&self.root)
    }

    /// Create a job cgroup. If its parent is gone (a cleanup tool removed the root while
    /// the daemon ran, or its pool is new since a reload and not made yet), the parent is
    /// made again (controllers enabled as at start, a pool's limits written) and the job
    /// cgroup then: `Ok(true)`.
    fn create(&self, cgroup: &str, pool: Option<&Pool>) -> Result<bool, PlaceError> {
        match self.backend.create(cgroup) {
            Ok(()) => Ok(false),
            Err(e) if e.errno == Some(libc::ENOENT) => {
                // Controllers it lacks show as limits not applied, each said. The root was
                // gone only if it had to be made again (not a pool new since a reload).
                let root_made = !self.prepare_root().created.is_empty();
                if let Some(pool) = pool {
                    for (label, r) in self.prepare_pool(pool)? {
                        if let Err(e) = r {
                            tracing::error!("Pool {}: cannot apply {label}: {e}", pool.name);
                        }
                    }
                }
                self.backend.create(cgroup)?;
                Ok(root_made)
            }
            Err(e) => Err(e),
        }
    }

    /// Place a pinned process, into `spare` if one is given (a spare made with the job's
    /// limits: the fast path). On error nothing is left behind: a cgroup created for the
    /// attempt, or the spare, is removed again.
    pub fn place(
        &self,
        p: &Pinned,
        spec: &JobSpec,
        spare: Option<Spare>,
    ) -> Result<Placement, PlaceError> {
        let started = Instant::now();
        let pid = p.id.pid;
        if !p.is_alive(&self.proc) {
            if let Some(s) = spare {
                let _ = self.backend.remove(&s.cgroup);
            }
            return Err(PlaceError::vanished(Step::Pin, format!("PID {pid} exited")));
        }
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
        let (cgroup, _) = self.free_cgroup(spec, p.id.start_time);
        let root_recreated = self.create(&cgroup, spec.pool.as_deref())?;
        let result = self.fill_and_move(p, spec, &cgroup);
        match result {
            Ok((applied, failed)) => Ok(Placement {
                job_id: spec.job_id.to_string(),
                cgroup,
                applied,
                failed,
                verified_mono_ns: monotonic_ns(),
                took: started.elapsed(),
                root_recreated,
                naming: Naming::AsJob,
            }),
            Err(e) => {
                let _ = self.backend.remove(&cgroup);
                Err(e)
            }
        }
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
            if e.class == Class::Vanished || !p.is_alive(&self.proc) {
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
        if !p.is_alive(&self.proc) {
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
            if exiting || !p.is_alive(&self.proc) {
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
                if child.is_alive(&self.proc) {
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

    /// Whether these `/proc/PID/cgroup` lines put a process in `cgroup` in every hierarchy
    /// the placer uses.
    pub fn holds(&self, cgroup: &str, lines: &[crate::process::CgroupLine]) -> bool {
        self.backend.is_member(cgroup, lines)
    }

    /// Where a governed process is: `Ok(None)` in its job cgroup, `Ok(Some(where))` moved
    /// elsewhere (by another writer), `Err` when `/proc/PID/cgroup` cannot be read.
    pub fn whereabouts(&self, pid: u32, cgroup: &str) -> std::io::Result<Option<String>> {
        let lines = self.proc.cgroups(pid)?;
        Ok((!self.backend.is_member(cgroup, &lines)).then(|| self.backend.location(&lines)))
    }

    /// Put a governed process back into its job cgroup (drift).
    pub fn move_back(&self, cgroup: &str, pid: u32) -> Result<(), PlaceError> {
        self.backend.move_process(cgroup, pid)
    }

    /// Put a process back where it was before its move (`home`: its `/proc/PID/cgroup`
    /// then): a held exec that failed after it was placed. The place, for messages.
    pub fn move_home(
        &self,
        pid: u32,
        home: &[crate::process::CgroupLine],
    ) -> Result<String, PlaceError> {
        self.backend.move_home(home, pid)
    }

    /// Write limits into an existing cgroup, reading each back (one result per limit).
    pub fn apply_limits(
        &self,
        cgroup: &str,
        limits: &Limits,
    ) -> Vec<(String, Result<(), PlaceError>)> {
        self.backend.apply_limits(cgroup, limits)
    }

    /// The limits a cgroup's files say.
    pub fn read_limits(&self, cgroup: &str) -> Limits {
        self.backend.read_limits(cgroup)
    }

    /// A job cgroup's live numbers.
    pub fn usage(&self, cgroup: &str) -> Usage {
        self.backend.usage(cgroup)
    }

    /// An ended job's last numbers (CPU time, OOM kills).
    pub fn final_usage(&self, cgroup: &str) -> Usage {
        self.backend.final_usage(cgroup)
    }

    /// Every job cgroup under the root and in its pools (by name: `JobId`), spares
    /// excluded.
    pub fn job_cgroups(&self) -> std::io::Result<Vec<String>> {
        let mut jobs = Vec::new();
        for n in self.backend.children(&self.root)? {
            if JobId::names_a_job(&n) {
                jobs.push(self.cgroup_of(&n));
            } else if !n.starts_with(spares::SPARE_PREFIX) {
                let pool = self.pool_cgroup(&n);
                let inside = self.backend.children(&pool).unwrap_or_default();
                jobs.extend(
                    inside
                        .into_iter()
                        .filter(|j| JobId::names_a_job(j))
                        .map(|j| format!("{pool}/{j}")),
                );
            }
        }
        Ok(jobs)
    }

    /// A job cgroup whose named process (`auto-<command>-<pid>`) is inside it: the job to
    /// take back, as (pid, job id, command).
    pub fn job_in(&self, cgroup: &str) -> Option<(u32, JobId, String)> {
        let (id, command, pid) = JobId::parse(cgroup)?;
        let command = command.to_string();
        self.backend
            .procs(cgroup)
            .ok()?
            .contains(&pid)
            .then_some((pid, id, command))
    }

    /// A cgroup for a process that will enter it itself (`ffrtmp run`): created with its
    /// limits (removed again if one cannot be applied); the `cgroup.procs` files to write.
    pub fn prepare_job(&self, cgroup: &str, limits: &Limits) -> Result<Vec<PathBuf>, String> {
        self.backend
            .create(cgroup)
            .map_err(|e| format!("cannot create {cgroup}: {e}"))?;
        for (label, r) in self.backend.apply_limits(cgroup, limits) {
            if let Err(e) = r {
                let _ = self.backend.remove(cgroup);
                return Err(format!("cannot apply {label} to {cgroup}: {e}"));
            }
        }
        Ok(self.backend.procs_files(cgroup))
    }
}
